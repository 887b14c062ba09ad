"""Infrastructure every row shares: the emulators (started by tests/servers.py, stopped by
PID), signals, warehouse copies, child processes, their peak RSS and their closing log
line. Standard library only; heavy imports happen inside the functions."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .config import ROOT


class BenchError(RuntimeError):
    """Something the benchmark relies on did not hold (a count, an exit code, a server)."""


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = func()
    return time.perf_counter() - started, value


# --- emulators ----------------------------------------------------------------------------


def load_servers():
    """tests/servers.py (standard library only), loaded by path: tests/ is not a package."""
    name = "_bench_servers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "servers.py")
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {ROOT / 'tests' / 'servers.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def emulator(name: str, workdir: Path, **kwargs: Any) -> Iterator[Any]:
    """One emulator of our own on 127.0.0.1 ("pubsub" or "bigquery"), stopped by its PID
    (its own process group) when the block ends, also on an error or a signal."""
    servers = load_servers()
    start = {
        "pubsub": servers.start_pubsub_emulator,
        "bigquery": servers.start_bigquery_emulator,
    }[name]
    progress(f"starting the {name} emulator ...")
    server = start(workdir / f"{name}-emulator", timeout=60, **kwargs)
    progress(f"{name} emulator pid {server.pid} on {server.host}")
    try:
        yield server
    finally:
        server.stop()
        progress(f"{name} emulator pid {server.pid} stopped")


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM / SIGHUP unwind like Ctrl-C, so the finally blocks stop what we started."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread / not supported
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def quiet_stderr(log_path: Path) -> Iterator[None]:
    """The dispatcher logs one JSON line per event to stderr: send them to a file."""
    with log_path.open("a") as sink, contextlib.redirect_stderr(sink):
        yield


# --- warehouses on disk -------------------------------------------------------------------


@contextlib.contextmanager
def warehouse_copy(template: Path, workdir: Path, name: str) -> Iterator[Path]:
    """A fresh copy of a built DuckDB warehouse (so every run starts with everyone pending).

    The copy keeps the template's file name, in its own directory: DuckDB names the
    database after the file stem, and dbt's views refer to it by that name.
    """
    directory = workdir / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    path = directory / template.name
    shutil.copyfile(template, path)
    try:
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- child processes ----------------------------------------------------------------------


def dispatcher_command() -> list[str]:
    script = Path(sys.executable).parent / "dispatcher"
    if not script.exists():
        found = shutil.which("dispatcher")
        if found is None:
            raise BenchError(f"no `dispatcher` console script beside {sys.executable}")
        script = Path(found)
    return [str(script)]


def run_process(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300.0,
) -> tuple[float, subprocess.CompletedProcess]:
    """Run a child to the end; (wall seconds, the completed process with its output)."""
    started = time.perf_counter()
    done = subprocess.run(
        list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    return time.perf_counter() - started, done


def checked(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        raise BenchError(
            f"{what} exited {done.returncode}: {done.stdout[-500:]} {done.stderr[-1500:]}"
        )
    return done


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON object a `--json` command printed last."""
    return json.loads(stdout.strip().splitlines()[-1])


def closing_log(stderr: str) -> dict[str, Any]:
    """The dispatcher's closing log line of a run (the last JSON line carrying
    ``stages_ms`` and ``round_trips``). A progress bar may share the line: the JSON
    object is read from its first brace."""
    for line in reversed(stderr.splitlines()):
        start = line.find('{"')
        if start < 0 or "stages_ms" not in line:
            continue
        try:
            entry = json.loads(line[start:])
        except ValueError:
            continue
        if "stages_ms" in entry:
            return entry
    raise BenchError(f"no closing log line with stages_ms in: {stderr[-1000:]}")


#: A small launcher between the bench and a child whose peak RSS is measured. A forked
#: (or vforked) child is charged the RSS of the process it was forked from until it execs,
#: so ru_maxrss of a direct child would be at least the bench's own peak. Forked from a
#: ~10 MB interpreter, the child's own ru_maxrss (from wait4) is its real peak.
#: argv: result file, command...
_RSS_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def peak_rss_run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300.0,
) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a child through _RSS_LAUNCHER; return (wall seconds, the child's peak RSS in MB
    (2^20 bytes), the completed process). The wall time includes the launcher's start."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory(prefix="rss-") as tmp,
    ):
        result = Path(tmp) / "maxrss"
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", _RSS_LAUNCHER, str(result), *argv],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group: a timeout kills both
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise BenchError(f"{' '.join(argv)} ran over {timeout:.0f} s: killed") from None
        except BaseException:  # Ctrl-C, SIGTERM: the child's session does not get them
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(
            list(argv),
            process.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )
        if not result.exists():
            raise BenchError(f"no peak RSS for {' '.join(argv)}: {done.stderr[-1000:]}")
        maxrss = int(result.read_text())
    # ru_maxrss: kilobytes on Linux, bytes on macOS.
    scale = 2**20 if sys.platform == "darwin" else 2**10
    return wall, maxrss / scale, done

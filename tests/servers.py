"""Start and stop the two emulators the suite runs against, on 127.0.0.1 only.

No pytest here: the fixtures in conftest.py wrap these functions, and anyone can
call them from a REPL. The facts behind the choices are in docs/DEVELOPING.md.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
HTTP_TIMEOUT = 1.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 40
START_ATTEMPTS = 3
# What each server logs when its port was taken between free_port() and its bind: uvicorn,
# gRPC and the Pub/Sub JVM (which, unlike the others, keeps running afterwards).
PORT_CONFLICT_MARKERS = (
    "BindException",
    "address already in use",
    "Address already in use",
    "Failed to bind to address",
)

SDK_ROOT_CANDIDATES = (
    "/usr/lib/google-cloud-sdk",
    "/usr/share/google-cloud-sdk",
    "/opt/google-cloud-sdk",
    "/google-cloud-sdk",
    "~/google-cloud-sdk",
)


class ServerStartError(RuntimeError):
    """A server did not become ready; the message carries the tail of its log."""

    def __init__(self, message: str, *, port_conflict: bool = False) -> None:
        super().__init__(message)
        self.port_conflict = port_conflict


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """True when a server could listen on the port now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def pid_is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


@dataclass
class Server:
    """One emulator process, started in its own session (so its PGID is its PID)."""

    name: str
    pid: int
    port: int
    url: str
    host: str
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)
    _stopped: bool = field(default=False, repr=False, compare=False)

    def stop(self) -> None:
        """SIGTERM this server's own process group, wait, then SIGKILL. Safe to call twice."""
        if self._stopped:
            return
        self._signal(signal.SIGTERM)
        if not self._wait(STOP_TIMEOUT):
            self._signal(signal.SIGKILL)
            self._wait(STOP_TIMEOUT)
        self._stopped = True

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)

    def _signal(self, sig: signal.Signals) -> None:
        # The group was created by start_new_session=True, so its id is our PID: it holds
        # only this server and its children, never the test runner.
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def _wait(self, timeout: float) -> bool:
        """Reap our child, then wait until nothing is left in its process group."""
        deadline = time.monotonic() + timeout
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
        while not self._group_gone():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _group_gone(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return not pid_is_running(self.pid)
        # An init that reaps orphans late leaves zombies in the group; they hold nothing.
        return not _live_group_members(self.pid)


def _live_group_members(pgid: int) -> list[int]:
    """PIDs in process group pgid that are not zombies (Linux /proc; elsewhere: unknown)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return [pgid]
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After "(comm)": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _die_with_parent():
    """On Linux, a preexec_fn that has the kernel SIGTERM the server if the test runner dies
    without tearing down (kill -9, a second Ctrl-C): its own session shields it from both.
    The kernel's "parent" is the calling thread, so start servers from one that outlives them."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return set_pdeathsig


def _launch(argv: list[str], env: dict[str, str], cwd: Path, log_path: Path):
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )


def _wait_ready(server: Server, ready_url: str, timeout: float, ready_marker: str) -> None:
    """Ready means: ready_url answers 200, the process is alive, and its log says it is
    listening (so a stranger that grabbed the port cannot pass for our server).
    Otherwise stop the server and raise with the tail of its log."""
    assert server.process is not None
    try:
        _poll_ready(server, ready_url, timeout, ready_marker)
    except BaseException:
        server.stop()  # a Ctrl-C here would otherwise orphan it: its own session ignores ^C
        raise


def _poll_ready(server: Server, ready_url: str, timeout: float, ready_marker: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        log = _read_log(server.log_path)
        conflict = next((m for m in PORT_CONFLICT_MARKERS if m in log), None)
        code = server.process.poll()
        if code is None and conflict is None and ready_marker in log and http_ok(ready_url):
            return
        if conflict is not None:
            reason = f"could not bind its port ({conflict!r} in its log)"
        elif code is not None:
            reason = f"exited with code {code}"
        elif time.monotonic() > deadline:
            reason = f"not ready at {ready_url} after {timeout:.0f} s"
        else:
            time.sleep(0.1)
            continue
        raise ServerStartError(
            f"{server.name} (pid {server.pid}) {reason}; log {server.log_path}:\n"
            f"{server.log_tail()}",
            port_conflict=conflict is not None,
        )


def _read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _start_with_retries(start_once, attempts: int = START_ATTEMPTS) -> Server:
    """free_port() can race with another process; only a lost port is worth a retry."""
    errors: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            return start_once()
        except ServerStartError as exc:
            errors.append(f"attempt {attempt}: {exc}")
            if not exc.port_conflict:
                break
    if len(errors) == 1:
        raise ServerStartError(errors[0].split(": ", 1)[1])
    raise ServerStartError("\n".join(errors))


# --- BigQuery API emulator (bqemulator) -------------------------------------------------


def bqemulator_executable() -> str:
    beside = Path(sys.executable).parent / "bqemulator"
    if beside.exists():
        return str(beside)
    found = shutil.which("bqemulator")
    if found is None:
        raise ServerStartError(
            f"bqemulator is not installed next to {sys.executable} nor on PATH "
            "(pip install -e '.[test]')"
        )
    return found


def _duckdb_extension_dir(home: Path) -> Path:
    import duckdb

    try:
        platform = duckdb.sql("pragma platform").fetchone()[0]
    except Exception:  # an odd duckdb build falls back to the platform we measured on
        platform = "linux_amd64"
    return home / ".duckdb" / "extensions" / f"v{duckdb.__version__}" / platform


def install_spatial_extension(home: Path) -> Path:
    """Copy the packaged DuckDB spatial extension where `INSTALL spatial` finds it offline."""
    import duckdb

    spec = importlib.util.find_spec("duckdb_extension_spatial")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError(
            "duckdb-extension-spatial is not installed (pip install -e '.[test]')"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    source = package_dir / "extensions" / f"v{duckdb.__version__}" / "spatial.duckdb_extension"
    if not source.exists():
        found = sorted(package_dir.glob("extensions/*/spatial.duckdb_extension"))
        if not found:
            raise ServerStartError(f"no spatial.duckdb_extension under {package_dir}")
        source = found[-1]
    target_dir = _duckdb_extension_dir(home)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / "spatial.duckdb_extension"
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)  # 78 MB: a hard link when on the same filesystem
        except OSError:
            shutil.copyfile(source, target)
    return target


def start_bigquery_emulator(
    workdir: Path, timeout: float = 60, project: str = "nba-test"
) -> Server:
    """bqemulator in ephemeral (in-memory) mode; its HOME and log live under workdir."""
    workdir = Path(workdir)
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    install_spatial_extension(home)
    executable = bqemulator_executable()
    # Inherited BQEMU_* settings (a data dir, a GCS root) must not leak into the suite.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BQEMU_")}
    env.update(HOME=str(home), BQEMU_ENABLE_FORMAT_EXTENSIONS="false")

    def start_once() -> Server:
        rest_port, grpc_port = free_port(), free_port()
        while grpc_port == rest_port:
            grpc_port = free_port()
        argv = [
            executable,
            "start",
            "--rest-host", HOST,
            "--rest-port", str(rest_port),
            "--grpc-host", HOST,
            "--grpc-port", str(grpc_port),
            "--ephemeral",
            "--project", project,
            "--no-admin",
            "--log-format", "json",
        ]  # fmt: skip
        log_path = workdir / f"bqemulator-{rest_port}.log"
        process = _launch(argv, env, workdir, log_path)
        url = f"http://{HOST}:{rest_port}"
        server = Server(
            name="bigquery",
            pid=process.pid,
            port=rest_port,
            url=url,
            host=f"{HOST}:{rest_port}",
            log_path=log_path,
            ports={"rest": rest_port, "grpc": grpc_port},
            process=process,
        )
        # grpc.listen is logged last, after the REST socket is bound.
        _wait_ready(server, f"{url}/healthz", timeout, ready_marker="grpc.listen")
        return server

    return _start_with_retries(start_once)


# --- Pub/Sub emulator (Cloud SDK component) ---------------------------------------------

PUBSUB_LAUNCHER = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")


def cloud_sdk_root() -> Path:
    candidates = [os.environ.get("CLOUDSDK_ROOT_DIR", ""), *SDK_ROOT_CANDIDATES]
    for candidate in filter(None, candidates):
        root = Path(candidate).expanduser()
        if (root / PUBSUB_LAUNCHER).exists():
            return root
    gcloud = shutil.which("gcloud")
    if gcloud is not None:
        try:
            out = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
        except (subprocess.SubprocessError, OSError):
            out = ""
        if out and (Path(out) / PUBSUB_LAUNCHER).exists():
            return Path(out)
    raise ServerStartError(
        "Pub/Sub emulator not found: install the Cloud SDK component "
        "(gcloud components install pubsub-emulator, or apt google-cloud-cli-pubsub-emulator) "
        "or set CLOUDSDK_ROOT_DIR"
    )


def start_pubsub_emulator(workdir: Path, timeout: float = 60) -> Server:
    """The emulator's own launcher, not gcloud: it execs java, so the PID is the JVM's and
    stopping the group leaves nothing behind. server.host is the PUBSUB_EMULATOR_HOST value."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    launcher = str(cloud_sdk_root() / PUBSUB_LAUNCHER)

    def start_once() -> Server:
        port = free_port()
        log_path = workdir / f"pubsub-emulator-{port}.log"
        argv = [launcher, f"--host={HOST}", f"--port={port}"]
        process = _launch(argv, dict(os.environ), workdir, log_path)
        url = f"http://{HOST}:{port}"
        server = Server(
            name="pubsub",
            pid=process.pid,
            port=port,
            url=url,
            host=f"{HOST}:{port}",
            log_path=log_path,
            ports={"http": port},
            process=process,
        )
        _wait_ready(server, f"{url}/", timeout, ready_marker=f"Server started, listening on {port}")
        return server

    return _start_with_retries(start_once)

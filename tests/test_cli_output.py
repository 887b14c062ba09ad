"""What an operator sees, at the process edge: JSON log lines on a pipe, a quiet human
format on a terminal (a pseudo-terminal here), `--log-format`, `-q`, progress, and the
worker stopping cleanly on SIGTERM / Ctrl-C. The installed `dispatcher`, as run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import io
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from warehouses import build_template, copy_of

from dispatcher import logs
from dispatcher.dispatch import Dispatcher
from dispatcher.sandbox.slate import SlateSpec
from dispatcher.warehouse import connect

DISPATCHER = Path(sys.executable).with_name("dispatcher")
GAME_DATE = dt.date(2026, 11, 28)
DATE = ["--game-date", GAME_DATE.isoformat()]
SPEC = SlateSpec(game_date=GAME_DATE, seed=5)
OUTBOX = "nba_orchestration.request_outbox"


def _environ(settings=None, tmp_path: Path | None = None) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    environ.pop("PUBSUB_EMULATOR_HOST", None)
    if settings is not None:
        environ["DISPATCHER_DUCKDB_PATH"] = str(settings.duckdb_path)
        environ["DISPATCHER_DBT_TARGET_PATH"] = str(settings.dbt_target_path)
    elif tmp_path is not None:
        environ["DISPATCHER_DBT_TARGET_PATH"] = str(tmp_path / "target")
    return environ


def _run(cwd: Path, args: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DISPATCHER), *args], cwd=cwd, env=environ, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip


def _on_a_terminal(cwd: Path, args: list[str], environ: dict[str, str]) -> tuple[int, str]:
    """Run with stdin, stdout and stderr on one pseudo-terminal; its exit code and all it
    wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [str(DISPATCHER), *args], cwd=cwd, env=environ, stdin=slave, stdout=slave,
        stderr=slave, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not data:
                break
            chunks.append(data)
        code = process.wait(timeout=180)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return code, b"".join(chunks).decode(errors="replace")


def _lines(text: str) -> list[str]:
    """Lines as a person sees them: progress rewrites (\\r, clear-line) split lines too."""
    text = text.replace("\x1b[K", "")
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()]


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("cli-output"), [SPEC])


@pytest.fixture
def settings(template, tmp_path):
    return copy_of(template, tmp_path)


# -- log formats -------------------------------------------------------------------------


@pytest.mark.parametrize("options", [[], ["--log-format", "json"]], ids=["auto", "json"])
def test_logs_on_a_pipe_are_json_lines_only(settings, tmp_path, options):
    out = _run(tmp_path, [*options, "backfill", "--start", "2026-11-27", "--end", "2026-11-28"],
               _environ(settings))  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stderr.splitlines()
    assert lines and all(_is_json(line) for line in lines), out.stderr[-2000:]
    messages = [json.loads(line)["message"] for line in lines]
    assert "backfill started" in messages and "backfill finished: dispatched" in messages
    assert out.stdout.startswith("backfill 2026-11-27")


def test_text_format_is_one_short_line_per_warning_or_error(settings, tmp_path):
    # Nothing predicted yet: the status check alerts (critical) and exits 4.
    out = _run(tmp_path, ["--log-format", "text", "status", *DATE], _environ(settings))
    assert out.returncode == 4, out.stderr[-2000:]
    lines = out.stderr.splitlines()
    assert lines and not any(_is_json(line) for line in lines), out.stderr
    assert any(line.startswith("error: ") and "2026-11-28" in line for line in lines), lines
    assert not any(line.startswith("info: ") for line in lines), lines  # INFO needs -v
    assert all(len(line) <= logs.TEXT_WIDTH for line in lines)

    verbose = _run(tmp_path, ["-v", "--log-format", "text", "status", *DATE],
                   _environ(settings))  # fmt: skip
    assert any(line.startswith("info: status started") for line in verbose.stderr.splitlines())


def test_log_format_from_the_environment(settings, tmp_path):
    environ = {**_environ(settings), "DISPATCHER_LOG_FORMAT": "text"}
    out = _run(tmp_path, ["status", *DATE], environ)
    assert out.returncode == 4
    assert out.stderr and not any(_is_json(line) for line in out.stderr.splitlines())


def test_quiet_prints_no_log_lines_on_success(tmp_path):
    # Phase 4 finished just now, so the retry is on time: no latency alert to print.
    on_time = dataclasses.replace(
        SPEC, phase4_completed_at=dt.datetime.now(dt.UTC), phase4_in_one_write=True
    )
    (tmp_path / "on-time").mkdir()
    settings = copy_of(build_template(tmp_path / "on-time", [on_time]), tmp_path)
    out = _run(tmp_path, ["-q", "retry", *DATE], _environ(settings))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr == ""
    assert out.stdout.startswith("retry 2026-11-28: dispatched")
    backfill = _run(tmp_path, ["-q", "backfill", "--start", "2026-11-27", "--end", "2026-11-28"],
                    _environ(settings))  # fmt: skip
    assert backfill.returncode == 0 and backfill.stderr == ""


def test_a_terminal_gets_the_quiet_human_format(settings, tmp_path):
    code, text = _on_a_terminal(tmp_path, ["status", *DATE], _environ(settings))
    assert code == 4, text
    lines = _lines(text)
    assert not any(_is_json(line) or line.lstrip().startswith("{") for line in lines), text
    assert any(line.startswith("error: ") for line in lines), text  # the critical alert
    assert not any("status started" in line for line in lines), text  # INFO: only with -v
    assert any(line.startswith("status 2026-11-28: sla_breach") for line in lines), text


def test_a_terminal_sees_the_backfill_bar_and_the_worker_count(settings, tmp_path):
    code, text = _on_a_terminal(
        tmp_path, ["backfill", "--start", "2026-11-27", "--end", "2026-11-28"], _environ(settings)
    )
    assert code == 0, text
    assert not any(_is_json(line) for line in _lines(text)), text
    assert re.search(r"backfill .*2/2", text), text  # the bar, at its end

    code, text = _on_a_terminal(tmp_path, ["worker", "--idle-exit-seconds", "1"],
                                _environ(settings))  # fmt: skip
    assert code == 0, text
    lines = _lines(text)
    assert not any(_is_json(line) for line in lines), text
    assert any(re.fullmatch(r"worker: \d+ requests so far \(Ctrl-C stops\)", line)
               for line in lines), text  # fmt: skip
    assert lines[-1].startswith(f"worker: {SPEC.counts().pending} requests,"), text


def test_a_terminal_sees_the_demo_progress_without_json(tmp_path):
    code, text = _on_a_terminal(tmp_path, ["demo", *DATE], _environ(tmp_path=tmp_path))
    assert code == 0, text[-3000:]
    lines = _lines(text)
    assert not any(_is_json(line) for line in lines), text[-3000:]
    building = [line for line in lines if re.match(r"\s*building \d+/\d+ \w+", line)]
    assert len(building) > 20, text[:3000]
    assert "fct_prediction_coverage" in text
    assert any(re.match(r"\s*reference worker: 321 of 321 requests", line) for line in lines)
    assert "[7/7] 07:00 status check: ok, 378 of 378 predicted" in text
    assert "its SLA deadline, 2026-11-28 15:00:00 UTC (07:00 PST), has passed" in text


def test_quiet_demo_prints_the_outcome_only(tmp_path):
    code, text = _on_a_terminal(tmp_path, ["-q", "demo", *DATE], _environ(tmp_path=tmp_path))
    assert code == 0, text[-3000:]
    assert "building" not in text and "[1/7]" not in text and "reference worker:" not in text
    assert "[7/7] 07:00 status check: ok, 378 of 378 predicted" in text
    # A date whose deadline had passed: the SLA is missed, and the outcome says why.
    assert "SLA met: no, the demo started after the deadline, 2026-11-28 15:00:00 UTC" in text


def test_log_module_configuration():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    previous = logs.configure(logs.LogConfig(format="auto"))
    try:
        pipe, terminal = io.StringIO(), Terminal()
        for stream in (pipe, terminal):
            logs.log("INFO", "hello", stream=stream, n=1)
            logs.log("WARNING", "careful\nnow", stream=stream, n=2, skipped=None)
        assert [json.loads(line)["message"] for line in pipe.getvalue().splitlines()] == [
            "hello", "careful\nnow",
        ]  # fmt: skip
        assert terminal.getvalue() == "warning: careful now (n=2)\n"
        logs.configure(logs.LogConfig(format="json", quiet=True))
        quiet = io.StringIO()
        logs.log("WARNING", "not shown", stream=quiet)
        logs.log("ERROR", "shown", stream=quiet)
        assert [json.loads(line)["message"] for line in quiet.getvalue().splitlines()] == ["shown"]
        with pytest.raises(ValueError):
            logs.LogConfig(format="yaml")
    finally:
        logs.configure(previous)


def test_help_lists_the_log_options():
    out = subprocess.run([str(DISPATCHER), "--help"], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    assert "--log-format [auto|json|text]" in out.stdout and "--quiet" in out.stdout


# -- the worker stops cleanly --------------------------------------------------------------


def _acked(settings) -> int:
    warehouse = connect(settings)
    try:
        rows = warehouse.query(f"select count(*) as n from {OUTBOX} where acked_at is not null")
    finally:
        warehouse.close()
    return rows[0]["n"]


def _worker_until(process: subprocess.Popen, message: str, timeout: float = 60) -> None:
    """Read the worker's JSON log lines (stderr) until one has this message."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        if _is_json(line) and json.loads(line)["message"] == message:
            return
    raise AssertionError(f"the worker never logged {message!r}")


@pytest.mark.parametrize(
    "sig, code, as_json",
    [(signal.SIGTERM, 0, False), (signal.SIGTERM, 0, True), (signal.SIGINT, 130, False)],
    ids=["sigterm", "sigterm-json", "sigint"],
)
def test_the_worker_stops_cleanly_on_a_signal(settings, tmp_path, sig, code, as_json):
    published = Dispatcher(settings).trigger(GAME_DATE).requests_published
    assert published > 100
    args = ["worker", "--batch-size", "5", *(["--json"] if as_json else [])]
    process = subprocess.Popen(
        [str(DISPATCHER), *args], cwd=tmp_path, env=_environ(settings),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _worker_until(process, "worker started")
        time.sleep(0.5)
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    finished = [json.loads(line) for line in stderr.splitlines() if _is_json(line)]
    assert finished[-1]["message"] == "worker finished" and finished[-1]["stopped"] is True
    if as_json:
        payload = json.loads(stdout.strip().splitlines()[-1])
        received = payload["received"]
        assert payload["stopped_by"] == "SIGTERM"
    else:
        line = stdout.strip().splitlines()[-1]
        match = re.fullmatch(
            rf"worker: (\d+) requests, .* failed \(\d+ ms\); stopped by {sig.name}", line
        )
        assert match, stdout
        received = int(match.group(1))
    # What it took it wrote and acknowledged; nothing half-done.
    assert received == _acked(settings) == finished[-1]["received"]


def test_an_idle_worker_stops_cleanly_on_sigterm(settings, tmp_path):
    process = subprocess.Popen(
        [str(DISPATCHER), "worker"], cwd=tmp_path, env=_environ(settings),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _worker_until(process, "worker started")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-2000:]
    assert stdout.startswith("worker: 0 requests") and "stopped by SIGTERM" in stdout

"""Start and stop a real `dispatcher serve` (gunicorn) on 127.0.0.1 for tests, and talk
to it. Stopped by PID (its own process group), with bounded waits, as tests/servers.py
stops the emulators."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from servers import HOST, Server, ServerStartError, _launch, _wait_ready, free_port

DISPATCHER = Path(sys.executable).with_name("dispatcher")
START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0
#: What gunicorn logs when the port was taken between free_port() and its bind.
PORT_TAKEN = "Connection in use"


def serve_env(settings, **extra: str) -> dict[str, str]:
    """The environment of a server on a DuckDB copy: no other DISPATCHER_* leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.pop("PORT", None)
    env.update({
        "DISPATCHER_WAREHOUSE": "duckdb",
        "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path),
        "DISPATCHER_DBT_TARGET_PATH": str(settings.dbt_target_path),
        "DISPATCHER_TRANSPORT": "local",
        "DISPATCHER_LOG_FORMAT": "json",
    })  # fmt: skip
    env.update(extra)
    return env


def start_serve(workdir: Path, env: dict[str, str], *, args: tuple[str, ...] = (),
                port_from_env: bool = False, attempts: int = 3) -> Server:  # fmt: skip
    """`dispatcher serve --port P` (or PORT=P with port_from_env), ready when /health
    answers 200 and gunicorn logged that it listens there."""
    last: Exception | None = None
    for attempt in range(attempts):
        port = free_port()
        argv = [str(DISPATCHER), "serve", *args]
        run_env = dict(env)
        if port_from_env:
            run_env["PORT"] = str(port)
        else:
            argv += ["--port", str(port)]
        log_path = workdir / f"serve-{port}-{attempt}.log"
        process = _launch(argv, run_env, workdir, log_path)
        url = f"http://{HOST}:{port}"
        server = Server("dispatcher serve", process.pid, port, url, f"{HOST}:{port}", log_path,
                        process=process)  # fmt: skip
        try:
            _wait_ready(server, f"{url}/health", START_TIMEOUT, f"Listening at: {url}")
            return server
        except ServerStartError as exc:
            last = exc
            if PORT_TAKEN not in server.log_tail(200):
                raise
    raise ServerStartError(f"dispatcher serve could not bind a port: {last}")


def call(url: str, method: str = "GET", body: bytes | dict | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict, dict[str, str]]:  # fmt: skip
    """(status, JSON body, headers) of one request; never raises for an HTTP status."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


def log_lines(server: Server) -> list[str]:
    return server.log_path.read_text(errors="replace").splitlines()

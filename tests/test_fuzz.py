"""Malformed input to `serve` and `trigger --event`: refused with a reason, never a fault.

The inputs the generated fuzz found faulting are kept here as plain cases."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json

from click.testing import CliRunner

from dispatcher.cli import cli
from dispatcher.config import Settings
from dispatcher.serve import MAX_BODY_BYTES, SCHEDULE_TIME_HEADER, ServeSettings, create_app

NOW = dt.datetime(2026, 11, 28, 14, 10, tzinfo=dt.UTC)
SCHEDULER_ROUTES = ("/start", "/retry", "/status")


def _client(tmp_path):
    """An app on a warehouse file that does not exist: a refusal must not need one."""
    settings = Settings(duckdb_path=tmp_path / "absent.duckdb", dbt_target_path=tmp_path / "t")
    return create_app(settings, push=ServeSettings(), now=lambda: NOW).test_client()


def _data(raw: bytes) -> dict:
    return {"message": {"data": base64.b64encode(raw).decode(), "messageId": "m-1"}}


def test_deeply_nested_json_is_400_not_a_fault(tmp_path):
    """json.loads raises RecursionError (not ValueError) past about 1,000 levels."""
    client = _client(tmp_path)
    for route in ("/trigger", *SCHEDULER_ROUTES):
        for body in (b"[" * 50_000, b'{"game_date": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"):
            response = client.post(route, data=body, content_type="application/json")
            assert (response.status_code, response.json["field"]) == (400, "body"), route
    event = b'{"game_date": "2026-11-28", "run_id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    response = client.post("/trigger", json=_data(event))
    assert response.status_code == 400, response.json
    assert response.json["field"] == "message.data"
    assert "not valid JSON" in response.json["error"]
    assert not (tmp_path / "absent.duckdb").exists()


def test_deeply_nested_event_on_the_cli_is_exit_2(tmp_path):
    env = {"DISPATCHER_DUCKDB_PATH": str(tmp_path / "absent.duckdb")}
    runner = CliRunner()
    for args, stdin in ((["trigger", "--event", "[" * 5_000], None),
                        (["trigger", "--event-file", "-"], b'{"a":' * 5_000)):  # fmt: skip
        result = runner.invoke(cli, args, input=stdin, env=env)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 2, result.output
        assert len(errors) == 1 and "not valid JSON" in errors[0], result.output
    assert not (tmp_path / "absent.duckdb").exists()


def test_a_body_over_the_limit_is_413_naming_the_body(tmp_path):
    client = _client(tmp_path)
    for route in ("/trigger", *SCHEDULER_ROUTES):
        response = client.post(route, data=b"{" + b" " * MAX_BODY_BYTES + b"}")
        assert response.status_code == 413
        assert response.json["field"] == "body" and "larger than" in response.json["error"]


def test_a_schedule_time_out_of_range_in_utc_is_400(tmp_path):
    """0001-01-01T00:00+01:00 parses, but is before year 1 in UTC (OverflowError)."""
    client = _client(tmp_path)
    for value in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        response = client.post("/start", data=json.dumps({"game_date": "2026-11-28"}),
                               headers={SCHEDULE_TIME_HEADER: value})  # fmt: skip
        assert response.status_code == 400, response.json
        assert response.json["field"] == SCHEDULE_TIME_HEADER
    assert not (tmp_path / "absent.duckdb").exists()


def test_an_unknown_key_with_a_line_break_is_refused_on_one_line(tmp_path):
    client = _client(tmp_path)
    for route in SCHEDULER_ROUTES:
        response = client.post(route, data=json.dumps({"game_date": "2026-11-28", "a\nb": 1}))
        assert response.status_code == 400
        assert response.json["field"] == "a\nb"
        assert response.json["error"] == "unknown field 'a\\nb': only game_date is read"


def test_a_chunked_body_over_the_limit_is_413_not_cut_at_the_limit(tmp_path):
    """Without a Content-Length (chunked), werkzeug's stream stops at the limit: what it
    read was a valid body followed by padding, and was dispatched."""
    client = _client(tmp_path)
    padded = b'{"game_date": "2026-11-28"}' + b" " * (2 * MAX_BODY_BYTES)
    for route in ("/trigger", *SCHEDULER_ROUTES):
        # gunicorn reads chunked bodies itself and says so (wsgi.input_terminated).
        response = client.post(route, input_stream=io.BytesIO(padded),
                               headers={"Transfer-Encoding": "chunked"},
                               environ_overrides={"wsgi.input_terminated": True})  # fmt: skip
        assert response.status_code == 413, response.json
        assert response.json["field"] == "body"
    small = client.post("/retry", input_stream=io.BytesIO(b'{"game_date": "2026-13-01"}'),
                        headers={"Transfer-Encoding": "chunked"},
                        environ_overrides={"wsgi.input_terminated": True})  # fmt: skip
    assert (small.status_code, small.json["field"]) == (400, "game_date")
    assert not (tmp_path / "absent.duckdb").exists()

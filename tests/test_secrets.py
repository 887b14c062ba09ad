"""Sentinel secrets never leave: the Slack channel's failure reasons."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from alert_slate import GAME_DATE

#: Shaped as Slack's: /services/T<team>/B<bot>/<24-character token>.
WEBHOOK_PATH = "T0SWEEP00/B0SWEEP00/sentinelsweepwebhook5e1b"


@contextlib.contextmanager
def echoing_webhook() -> Iterator[str]:
    """A webhook server answering 404 with the request's path in a one-line body (as
    some proxies and frameworks do); yields its base URL."""

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = f"404 page not found: no route matches POST {self.path}".encode()
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_webhook_answer_quoting_the_url_is_scrubbed_before_it_is_cut():
    """A body that echoes the path is cut to 80 characters for the reason; cut first, a
    path across the cut would no longer match the scrub and its first part would stay."""
    from alerts import Alert
    from alerts.channels import ChannelError
    from alerts.slack import SlackChannel

    alert = Alert(game_date=GAME_DATE, rule="phase4_critical", level="critical",
                  message="Phase 4 insufficient", kind="new")  # fmt: skip
    with echoing_webhook() as echo:
        channel = SlackChannel(f"{echo}/services/{WEBHOOK_PATH}", timeout=5, attempts=1)
        with pytest.raises(ChannelError) as caught:
            channel(alert)
    assert str(caught.value) == (
        "slack: HTTP 404 404 page not found: no route matches POST *** (not retried)"
    )

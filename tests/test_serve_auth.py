"""`serve` with DISPATCHER_PUSH_AUDIENCE: Google-signed OIDC tokens, verified by the real
google-auth code against certificates served from 127.0.0.1. The tests sign their own
tokens with their own RSA keys; every refusal dispatches and writes nothing, and no
token appears in a log line or a response."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from serving import call, log_lines, serve_env, start_serve
from test_serve import NOW, READY, SPECS, envelope, footprint
from warehouses import build_template, copy_of

from dispatcher.serve import ServeSettings, create_app

AUDIENCE = "https://dispatcher-abc123-uw.a.run.app"
PUSH_ACCOUNT = "pubsub-push@nba-props.iam.gserviceaccount.com"
SCHEDULER_ACCOUNT = "scheduler@nba-props.iam.gserviceaccount.com"
KID = "test-key-1"


def _key_and_cert(common_name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def keys():
    """Google's key (served as the certificates) and a stranger's."""
    return {"google": _key_and_cert("google"), "stranger": _key_and_cert("stranger")}


@pytest.fixture(scope="module")
def certs_server(keys):
    """Google's certificate endpoint on 127.0.0.1: {kid: PEM certificate}; counts GETs."""
    body = json.dumps({KID: keys["google"][1]}).encode()
    hits = []

    class Certs(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=19000")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Certs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.hits = hits  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def token(keys, *, key="google", kid=KID, **overrides) -> str:
    from google.auth import crypt, jwt

    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com", "aud": AUDIENCE, "sub": "1234567890",
        "email": PUSH_ACCOUNT, "email_verified": True, "iat": now, "exp": now + 3600,
    }  # fmt: skip
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    signer = crypt.RSASigner.from_string(keys[key][0], key_id=kid)
    return jwt.encode(signer, claims).decode()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("serve-auth"), [SPECS[READY]])


@pytest.fixture
def settings(template, tmp_path):
    return copy_of(template, tmp_path)


def push_settings(certs_url: str) -> ServeSettings:
    return ServeSettings(audience=AUDIENCE, service_accounts=(PUSH_ACCOUNT, SCHEDULER_ACCOUNT),
                         certs_url=certs_url)  # fmt: skip


@pytest.fixture
def client(settings, certs_server):
    return create_app(settings, push=push_settings(certs_server.url), now=lambda: NOW).test_client()


def _bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_a_valid_token_dispatches(client, settings, keys, certs_server, capsys):
    good = token(keys)
    response = client.post("/trigger", json=envelope({"game_date": str(READY)}),
                           headers=_bearer(good))  # fmt: skip
    assert response.status_code == 200, response.json
    assert response.json["requests_published"] == SPECS[READY].counts().pending
    scheduler = client.post("/retry", data=b'{"game_date": "2026-11-28"}',
                            content_type="application/octet-stream",
                            headers=_bearer(token(keys, email=SCHEDULER_ACCOUNT)))  # fmt: skip
    assert (scheduler.status_code, scheduler.json["outcome"]) == (200, "nothing_pending")
    hits = len(certs_server.hits)
    client.post("/status", json={}, headers=_bearer(good))
    assert len(certs_server.hits) == hits  # the certificates are cached
    logged = capsys.readouterr().err
    assert good not in logged and good.split(".")[2] not in logged
    assert f'"caller": "{PUSH_ACCOUNT}"' in logged


REFUSALS = [
    ("no token", lambda keys: {}, 401, "no Authorization header"),
    ("not bearer", lambda keys: {"Authorization": f"Basic {token(keys)}"}, 401, "Bearer"),
    ("empty bearer", lambda keys: {"Authorization": "Bearer "}, 401, "Bearer"),
    ("malformed", lambda keys: _bearer("not.a-jwt"), 401, "malformed"),
    ("garbage segments", lambda keys: _bearer("aaaa.bbbb.cccc"), 401, "malformed"),
    ("wrong audience", lambda keys: _bearer(token(keys, aud="https://elsewhere.run.app")), 401,
     "audience"),
    ("expired", lambda keys: _bearer(token(keys, iat=int(time.time()) - 7200,
                                           exp=int(time.time()) - 3600)), 401, "expired"),
    ("wrong signer, known kid", lambda keys: _bearer(token(keys, key="stranger")), 401,
     "signature"),
    ("wrong signer, unknown kid", lambda keys: _bearer(token(keys, key="stranger",
                                                             kid="other")), 401, "unknown key"),
    ("unsigned", lambda keys: _bearer(token(keys).rsplit(".", 1)[0] + "."), 401, ""),
    ("wrong issuer", lambda keys: _bearer(token(keys, iss="https://evil.example")), 401,
     "issuer"),
    ("wrong email", lambda keys: _bearer(token(keys, email="intruder@gmail.com")), 403,
     "intruder@gmail.com is not in DISPATCHER_PUSH_SERVICE_ACCOUNTS"),
    ("email not verified", lambda keys: _bearer(token(keys, email_verified=False)), 403,
     "not verified"),
    ("no email", lambda keys: _bearer(token(keys, email=None)), 403, "no email"),
]  # fmt: skip


@pytest.mark.parametrize("name", [case[0] for case in REFUSALS])
@pytest.mark.parametrize("route", ["/trigger", "/start", "/retry", "/status"])
def test_refused_tokens_dispatch_and_write_nothing(client, settings, keys, capsys, name, route):
    _, headers_of, status, says = next(case for case in REFUSALS if case[0] == name)
    headers = headers_of(keys)
    before = footprint(settings)
    body = envelope({"game_date": str(READY)}) if route == "/trigger" else {"game_date": str(READY)}
    response = client.post(route, json=body, headers=headers)
    assert response.status_code == status, response.json
    assert response.content_type == "application/json"
    assert says in response.json["error"]
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert footprint(settings) == before  # no claim, no outbox row, no run-log row
    secret = headers.get("Authorization", "").partition(" ")[2]
    logged = capsys.readouterr().err
    if secret:
        assert secret not in logged and secret not in response.get_data(as_text=True)


def test_health_needs_no_token(client):
    assert client.get("/health").status_code == 200


def test_certificates_out_of_reach_is_a_fault_not_a_pass(settings, keys):
    from servers import free_port

    dead = f"http://127.0.0.1:{free_port()}/certs"
    app = create_app(settings, push=push_settings(dead), now=lambda: NOW)
    before = footprint(settings)
    response = app.test_client().post("/trigger", json=envelope({"game_date": str(READY)}),
                                      headers=_bearer(token(keys)))  # fmt: skip
    assert response.status_code == 500
    assert "certificates" in response.json["error"]
    assert footprint(settings) == before


def test_gunicorn_checks_tokens(settings, keys, certs_server, tmp_path):
    env = serve_env(settings, DISPATCHER_PUSH_AUDIENCE=AUDIENCE,
                    DISPATCHER_PUSH_SERVICE_ACCOUNTS=f"{PUSH_ACCOUNT},{SCHEDULER_ACCOUNT}",
                    DISPATCHER_PUSH_CERTS_URL=certs_server.url)  # fmt: skip
    server = start_serve(tmp_path, env)
    good = token(keys)
    try:
        event = envelope({"game_date": str(READY)})
        status, body, headers = call(f"{server.url}/trigger", "POST", event,
                                     {"Content-Type": "application/json"})  # fmt: skip
        assert (status, headers["WWW-Authenticate"]) == (401, "Bearer")
        bad = token(keys, email="intruder@gmail.com")
        status, body, _ = call(f"{server.url}/trigger", "POST", event,
                               {"Content-Type": "application/json", **_bearer(bad)})  # fmt: skip
        assert status == 403
        assert footprint(settings)[1] == 0
        status, body, _ = call(f"{server.url}/trigger", "POST", event,
                               {"Content-Type": "application/json", **_bearer(good)})  # fmt: skip
        assert status == 200, body
        assert body["requests_published"] == SPECS[READY].counts().pending
    finally:
        server.stop()
    text = "\n".join(log_lines(server))
    assert good not in text and bad not in text
    assert "refused: no Authorization header" in text

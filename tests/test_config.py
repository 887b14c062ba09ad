"""Settings: the keyfile the dispatcher shares with dbt, and `dispatcher config`.

The service-account key is made here (an RSA key of our own): building a client with it
needs no network, so the tests inspect the credentials each client was built with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dispatcher.cli import cli
from dispatcher.config import (
    KEYFILE,
    KNOWN_SETTINGS,
    MASK,
    ConfigError,
    Settings,
    describe,
    is_secret,
)

DISPATCHER = Path(sys.executable).with_name("dispatcher")
EMAIL = "nba-dispatcher@nba-test.iam.gserviceaccount.com"
SENTINELS = {
    "DISPATCHER_SMTP_PASSWORD": "sentinel-smtp-password-7f3a",
    "DISPATCHER_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/sentinel-webhook-9c1d",
}


def _private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def pem() -> str:
    return _private_key_pem()


def _key_info(pem: str) -> dict[str, str]:
    return {
        "type": "service_account",
        "project_id": "nba-test",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@pytest.fixture
def keyfile(tmp_path, pem) -> Path:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(_key_info(pem)))
    return path


def _clean_env(**env: str) -> dict[str, str]:
    environ = {
        k: v for k, v in os.environ.items()
        if not k.startswith("DISPATCHER_") and k != "PUBSUB_EMULATOR_HOST"
    }  # fmt: skip
    environ.update(env)
    return environ


def _email(credentials) -> str:
    from google.oauth2 import service_account

    assert isinstance(credentials, service_account.Credentials)
    return credentials.service_account_email


# -- the keyfile ------------------------------------------------------------------------


def test_settings_read_the_keyfile_and_pass_it_to_dbt(keyfile):
    settings = Settings.from_env({KEYFILE: str(keyfile)})
    assert settings.bigquery_keyfile == keyfile
    assert settings.dbt_env()[KEYFILE] == str(keyfile)
    settings.check_combination()
    assert _email(settings.credentials()) == EMAIL


@pytest.mark.parametrize("env", [{}, {KEYFILE: ""}])
def test_without_a_keyfile_the_clients_find_adc(env):
    settings = Settings.from_env(env)
    assert settings.bigquery_keyfile is None
    assert KEYFILE not in settings.dbt_env()
    assert settings.credentials() is None


def test_bigquery_warehouse_is_built_with_the_keyfile(keyfile):
    from dispatcher.warehouse import connect

    settings = Settings(warehouse="bigquery", gcp_project="nba-test", bigquery_keyfile=keyfile)
    wh = connect(settings)
    try:
        assert _email(wh.client._credentials) == EMAIL
        assert wh.client.project == "nba-test"
    finally:
        wh.close()


def test_bigquery_emulator_endpoint_stays_anonymous(keyfile):
    from google.auth.credentials import AnonymousCredentials

    from dispatcher.warehouse import connect

    settings = Settings(
        warehouse="bigquery", gcp_project="nba-test", bigquery_keyfile=keyfile,
        bigquery_api_endpoint="http://127.0.0.1:9",
    )  # fmt: skip
    assert settings.bigquery_credentials() is None
    wh = connect(settings)
    try:
        assert isinstance(wh.client._credentials, AnonymousCredentials)
    finally:
        wh.close()


def _pubsub_settings(keyfile: Path) -> Settings:
    return Settings(transport="pubsub", gcp_project="nba-test", bigquery_keyfile=keyfile)


def test_pubsub_transport_is_built_with_the_keyfile(keyfile, monkeypatch):
    from dispatcher.dispatch import Dispatcher

    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    transport = Dispatcher(_pubsub_settings(keyfile))._default_transport(None)  # type: ignore[arg-type]
    try:
        assert _email(transport._publisher._transport._credentials) == EMAIL
    finally:
        transport.close()


def test_pubsub_emulator_keeps_no_credentials(keyfile, monkeypatch):
    from dispatcher.dispatch import Dispatcher

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")
    settings = _pubsub_settings(keyfile)
    assert settings.pubsub_credentials() is None
    transport = Dispatcher(settings)._default_transport(None)  # type: ignore[arg-type]
    try:
        from google.oauth2 import service_account

        assert not isinstance(
            transport._publisher._transport._credentials, service_account.Credentials
        )
    finally:
        transport.close()


class _StoppedPull:
    """A streaming-pull future that has already failed: the worker stops at once."""

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def exception(self, timeout=None):
        return RuntimeError("stopped by the test")

    def cancel(self) -> None:
        pass

    def result(self, timeout=None):
        raise RuntimeError("stopped by the test")


def test_worker_subscriber_is_built_with_the_keyfile(keyfile, monkeypatch):
    from google.cloud import pubsub_v1

    from dispatcher.sandbox.worker import WorkerError, run_worker

    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    built = []

    def subscribe(self, subscription, callback, **kwargs):  # no streaming pull, no network
        built.append(self)
        return _StoppedPull()

    monkeypatch.setattr(pubsub_v1.SubscriberClient, "subscribe", subscribe)
    with pytest.raises(WorkerError, match="stopped by the test"):
        run_worker(_pubsub_settings(keyfile), source="pubsub", idle_exit_seconds=1)
    assert [_email(client._transport._credentials) for client in built] == [EMAIL]


def _bad_keyfiles(tmp_path: Path, pem: str) -> dict[str, tuple[Path, str]]:
    directory = tmp_path / "keys"
    directory.mkdir()
    not_json = tmp_path / "not-json.json"
    not_json.write_text("SENTINEL-NOT-JSON {")
    user = tmp_path / "user.json"  # what gcloud writes for a person: not a key file
    user.write_text(json.dumps({"type": "authorized_user", "refresh_token": "SENTINEL-RT"}))
    no_email = tmp_path / "no-email.json"
    info = _key_info(pem)
    del info["client_email"]
    no_email.write_text(json.dumps(info))
    broken = tmp_path / "broken.json"
    lines = pem.splitlines()
    broken.write_text(json.dumps({
        **_key_info(pem),
        "private_key": "\n".join([lines[0], "SENTINELKEYMATERIAL" + lines[1][19:], *lines[2:]]),
    }))  # fmt: skip
    return {
        "missing": (tmp_path / "missing.json", "no such file"),
        "directory": (directory, "is a directory"),
        "not json": (not_json, "not a service-account key file"),
        "authorized user": (user, "not a service-account key file"),
        "no client_email": (no_email, "lacks client_email"),
        "broken private key": (broken, "private key cannot be loaded"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "directory", "not json", "authorized user", "no client_email",
     "broken private key"],
)  # fmt: skip
def test_a_bad_keyfile_is_one_line_naming_the_variable_and_the_path(tmp_path, pem, case):
    path, what = _bad_keyfiles(tmp_path, pem)[case]
    settings = Settings(bigquery_keyfile=path)
    with pytest.raises(ConfigError) as caught:
        settings.check_combination()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{KEYFILE}: ") and str(path) in message and what in message
    assert "SENTINEL" not in message and "PRIVATE KEY" not in message


def test_an_unreadable_keyfile_is_refused(keyfile, monkeypatch):
    read_text = Path.read_text

    def unreadable(self, *args, **kwargs):  # chmod 0 does not stop root
        if self == keyfile:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", unreadable)
    with pytest.raises(ConfigError) as caught:
        Settings(bigquery_keyfile=keyfile).check_combination()
    assert str(caught.value) == f"{KEYFILE}: cannot read {keyfile}: permission denied"


def test_the_key_is_never_printed(tmp_path, pem):
    """A broken key file's text (its private key included) never reaches the output,
    with or without -v."""
    path, _ = _bad_keyfiles(tmp_path, pem)["broken private key"]
    for args in (["retry", "--game-date", "2026-11-28"], ["-v", "config"], ["config", "--json"]):
        out = subprocess.run(
            [str(DISPATCHER), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env=_clean_env(DISPATCHER_BIGQUERY_KEYFILE=str(path)),
        )  # fmt: skip
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr
        for text in ("SENTINEL", "PRIVATE KEY", pem.splitlines()[1]):
            assert text not in out.stdout + out.stderr


# -- `dispatcher config` ----------------------------------------------------------------


def test_one_table_of_known_settings_agrees_with_the_defaults():
    names = [setting.name for setting in KNOWN_SETTINGS]
    assert len(names) == len(set(names))
    assert Settings.from_env({}) == Settings()
    for name in ("DISPATCHER_SMTP_PASSWORD", "DISPATCHER_SLACK_WEBHOOK_URL", "X_API_TOKEN",
                 "DISPATCHER_CLIENT_SECRET"):  # fmt: skip
        assert is_secret(name)
    assert not is_secret(KEYFILE)


def test_config_lists_every_setting_with_its_source(monkeypatch, keyfile):
    env = _clean_env(
        DISPATCHER_WAREHOUSE="duckdb", DISPATCHER_PUBLISH_TIMEOUT="5",
        DISPATCHER_BIGQUERY_KEYFILE=str(keyfile), PUBSUB_EMULATOR_HOST="127.0.0.1:8085",
        DISPATCHER_WAREHOSE="bigquery", DISPATCHER_START_WAIT_MINUTES="5",
    )  # fmt: skip
    result = CliRunner().invoke(cli, ["config", "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = {row["name"]: row for row in report["settings"]}
    assert report["ok"] and report["problems"] == [] and report["dbt_target"] == "local"
    assert set(rows) >= {setting.name for setting in KNOWN_SETTINGS}
    assert rows["DISPATCHER_WAREHOUSE"]["source"] == "environment"
    assert rows["DISPATCHER_TRANSPORT"] == {**rows["DISPATCHER_TRANSPORT"],
                                            "value": "local", "source": "default"}  # fmt: skip
    assert rows["DISPATCHER_PUBLISH_TIMEOUT"]["value"] == "5"
    assert rows[KEYFILE]["value"] == str(keyfile)  # the path; never what is inside
    assert rows["PUBSUB_EMULATOR_HOST"]["value"] == "127.0.0.1:8085"
    assert rows["DISPATCHER_SMTP_PORT"] == {**rows["DISPATCHER_SMTP_PORT"], "value": "587",
                                            "planned": False}  # fmt: skip
    assert "--wait-minutes" in rows["DISPATCHER_START_WAIT_MINUTES"]["meaning"]
    assert rows["DISPATCHER_WAREHOSE"]["known"] is False
    assert rows["DISPATCHER_WAREHOSE"]["value"] is None
    assert EMAIL not in result.output

    plain = CliRunner().invoke(cli, ["config"], env=env, catch_exceptions=False)
    assert plain.exit_code == 0
    assert "DISPATCHER_PUBLISH_TIMEOUT" in plain.output and "settings OK" in plain.output


@pytest.mark.parametrize("as_json", [False, True])
def test_config_masks_secrets(as_json):
    args = ["config", "--json"] if as_json else ["config"]
    result = CliRunner().invoke(cli, args, env=_clean_env(**SENTINELS), catch_exceptions=False)
    assert result.exit_code == 0
    for value in SENTINELS.values():
        assert value not in result.output
    assert result.output.count(MASK) == len(SENTINELS)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DISPATCHER_WAREHOUSE": "bigquery", "DISPATCHER_GCP_PROJECT": "p"},
         "DISPATCHER_TRANSPORT=pubsub"),
        ({"DISPATCHER_TRANSPORT": "pubsub"}, "DISPATCHER_GCP_PROJECT is required"),
        ({"DISPATCHER_WAREHOUSE": "bigquery"}, "DISPATCHER_GCP_PROJECT is required"),
        ({"DISPATCHER_WAREHOUSE": "oracle"}, "warehouse must be one of"),
        ({"DISPATCHER_PUBLISH_TIMEOUT": "soon"}, "DISPATCHER_PUBLISH_TIMEOUT"),
        ({"DISPATCHER_TRANSPORT": "pubsub", KEYFILE: "/no/such/key.json"},
         "no such file: /no/such/key.json"),
    ],
)  # fmt: skip
def test_config_says_what_is_wrong_with_exit_2(env, says):
    for args in (["config"], ["config", "--json"]):
        result = CliRunner().invoke(cli, args, env=_clean_env(**env, **SENTINELS))
        assert result.exit_code == 2, result.output
        assert says in result.output
        for value in SENTINELS.values():
            assert value not in result.output
        if args[-1] == "--json":
            report = json.loads(result.stdout)
            assert report["ok"] is False and any(says in p for p in report["problems"])


def test_describe_lists_every_problem_at_once():
    report = describe({"DISPATCHER_WAREHOUSE": "bigquery", KEYFILE: "/no/such/key.json"})
    assert not report.ok and report.dbt_target is None
    assert len(report.problems) == 2 and "DISPATCHER_GCP_PROJECT" in report.problems[0]


def test_config_process_masks_secrets_and_imports_no_cloud_client(tmp_path):
    out = subprocess.run(
        [str(DISPATCHER), "config", "--json"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env=_clean_env(**SENTINELS, DISPATCHER_TRANSPORT="pubsub",
                                    DISPATCHER_GCP_PROJECT="nba-test"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["dbt_target"] == "local"
    for value in SENTINELS.values():
        assert value not in out.stdout + out.stderr

    code = (
        "import sys\nfrom dispatcher.cli import cli\n"
        "try:\n    cli(['config'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in sys.modules if m.startswith(('google.cloud.', 'google.oauth2',"
        " 'duckdb', 'dbt'))]\n"
        "print('HEAVY:' + ','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env=_clean_env(DISPATCHER_TRANSPORT="pubsub", DISPATCHER_GCP_PROJECT="nba-test"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:"

"""`dispatcher infra` and deploy/: the declaration offline, the rendered Scheduler and
Cloud Run requests built into the real proto classes, the schedules across the DST
transitions, the image, and the Pub/Sub part applied idempotently on the emulator."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from click.testing import CliRunner

from dispatcher import infra
from dispatcher.cli import INFRA_PARAMETERS, _option_variables, cli
from dispatcher.config import KNOWN_SETTINGS, is_secret

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PACIFIC = ZoneInfo("America/Los_Angeles")
UTC = dt.UTC

PARAMS = {
    "project": "nba-deploy-test",
    "region": "us-west2",
    "service_url": "https://nba-phase5-dispatcher-abc123-uw.a.run.app",
    "image": "us-west2-docker.pkg.dev/nba-deploy-test/nba/dispatcher:2026-12-01",
}
SCHEDULES = {
    "nba-phase5-start": ("0 6 * * *", "/start"),
    "nba-phase5-retry-0615": ("15 6 * * *", "/retry"),
    "nba-phase5-retry-0630": ("30 6 * * *", "/retry"),
    "nba-phase5-status": ("0 7 * * *", "/status"),
}


@pytest.fixture(scope="module")
def doc():
    return infra.load()


@pytest.fixture(scope="module")
def rendered(doc):
    return infra.render(doc, infra.resolve(doc, PARAMS))


# -- the declaration, offline ------------------------------------------------------------


def test_the_declaration_parses_and_every_reference_exists_once(doc):
    assert infra.problems(doc) == []
    raw = yaml.safe_load((DEPLOY / "resources.yaml").read_text())
    assert raw == doc
    topics = [t["name"] for t in doc["pubsub"]["topics"]]
    assert topics == ["nba-phase4-precompute-complete", "prediction-request",
                      "nba-phase5-trigger-dlq"]  # fmt: skip
    assert len(set(topics)) == len(topics)
    subs = {s["name"]: s for s in doc["pubsub"]["subscriptions"]}
    push = subs["nba-phase5-trigger-sub"]
    assert push["topic"] == "nba-phase4-precompute-complete"
    assert push["dead_letter_policy"]["dead_letter_topic"] in topics
    assert sorted(j["name"] for j in doc["scheduler"]["jobs"]) == sorted(SCHEDULES)
    assert doc["run"]["service"]["name"] == "nba-phase5-dispatcher"


@pytest.mark.parametrize(
    "mutate, says",
    [
        (lambda d: d["pubsub"]["topics"].append({"name": "prediction-request"}),
         "topic 'prediction-request' declared twice"),
        (lambda d: d["pubsub"]["subscriptions"][0]["dead_letter_policy"].update(
            dead_letter_topic="nope-dlq"), "dead-letter topic 'nope-dlq' is not declared"),
        (lambda d: d["pubsub"]["subscriptions"][0].update(topic="missing-topic"),
         "topic 'missing-topic' is not declared"),
        (lambda d: d["secrets"].pop(0), "secret 'nba-dispatcher-slack-webhook' is not declared"),
        (lambda d: d["scheduler"]["jobs"].append(dict(d["scheduler"]["jobs"][0])),
         "scheduler job 'nba-phase5-start' declared twice"),
        (lambda d: d["parameters"].pop("image"), "parameter ${image} is used but not declared"),
        (lambda d: d.pop("scheduler"), "no `scheduler` section"),
    ],
)  # fmt: skip
def test_a_broken_declaration_is_refused_offline(doc, tmp_path, mutate, says):
    broken = copy.deepcopy(doc)
    mutate(broken)
    assert any(says in problem for problem in infra.problems(broken)), infra.problems(broken)
    path = tmp_path / "resources.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(infra.InfraError, match=re.escape(says)):
        infra.load(path)


def test_every_parameter_is_an_option_of_infra_read_from_its_variable(doc):
    assert set(INFRA_PARAMETERS) == set(doc["parameters"])
    variables = _option_variables()
    for name, spec in doc["parameters"].items():
        assert spec["env"] in variables, name
        if name != "project":
            option = infra.option_name(name)
            assert variables[spec["env"]] == f"option {option} of `dispatcher infra`"


def test_nothing_project_specific_is_hard_coded(doc):
    text = json.dumps({k: v for k, v in doc.items() if k != "parameters"})
    assert "run.app" not in text and "docker.pkg.dev" not in text
    assert not re.search(r"projects/[a-z]", text)


def test_a_missing_parameter_names_its_option_and_variable(doc):
    params = infra.resolve(doc, {"project": "p-one", "region": "us-west2"})
    with pytest.raises(infra.InfraError, match=r"--service-url \(DISPATCHER_INFRA_SERVICE_URL\)"):
        infra.render(doc, params, ["scheduler"])
    result = CliRunner().invoke(cli, ["infra", "plan", "--only", "run"],
                                env={"DISPATCHER_GCP_PROJECT": "p-one"})  # fmt: skip
    assert result.exit_code == 2
    assert "--region (DISPATCHER_INFRA_REGION)" in result.output


def test_defaults_follow_the_project_and_the_service_url(doc):
    params = infra.resolve(doc, PARAMS)
    assert params["push_audience"] == PARAMS["service_url"]
    assert params["runtime_service_account"] == (
        "nba-dispatcher-run@nba-deploy-test.iam.gserviceaccount.com"
    )
    assert infra.resolve(doc, {**PARAMS, "push_audience": "aud-x"})["push_audience"] == "aud-x"


# -- Pub/Sub requests --------------------------------------------------------------------


def test_the_push_subscription_is_rendered_with_oidc_retry_and_dead_letter(rendered):
    from google.cloud import pubsub_v1

    subs = {s["name"].rsplit("/", 1)[1]: s for s in rendered["pubsub"]["subscriptions"]}
    push = subs["nba-phase5-trigger-sub"]
    assert push["topic"] == "projects/nba-deploy-test/topics/nba-phase4-precompute-complete"
    assert push["push_config"] == {
        "push_endpoint": PARAMS["service_url"] + "/trigger",
        "oidc_token": {
            "service_account_email": "nba-dispatcher-push@nba-deploy-test.iam.gserviceaccount.com",
            "audience": PARAMS["service_url"],
        },
    }
    assert push["retry_policy"] == {"minimum_backoff": {"seconds": 30},
                                    "maximum_backoff": {"seconds": 600}}  # fmt: skip
    assert push["dead_letter_policy"] == {
        "dead_letter_topic": "projects/nba-deploy-test/topics/nba-phase5-trigger-dlq",
        "max_delivery_attempts": 10,
    }
    for request in rendered["pubsub"]["subscriptions"]:
        pubsub_v1.types.Subscription(**request)
    for request in rendered["pubsub"]["topics"]:
        pubsub_v1.types.Topic(**request)


# -- Cloud Scheduler ---------------------------------------------------------------------


def test_the_four_jobs_are_rendered_as_declared(rendered):
    jobs = {r["job"]["name"].rsplit("/", 1)[1]: r for r in rendered["scheduler"]}
    assert set(jobs) == set(SCHEDULES)
    for name, (schedule, path) in SCHEDULES.items():
        request = jobs[name]
        job = request["job"]
        assert request["parent"] == "projects/nba-deploy-test/locations/us-west2"
        assert job["name"] == f"projects/nba-deploy-test/locations/us-west2/jobs/{name}"
        assert job["schedule"] == schedule
        assert job["time_zone"] == "America/Los_Angeles"
        target = job["http_target"]
        assert target["uri"] == PARAMS["service_url"] + path
        assert target["http_method"] == "POST"
        assert target["headers"] == {"Content-Type": "application/json"}
        assert json.loads(base64.b64decode(target["body"])) == {}
        assert target["oidc_token"] == {
            "service_account_email":
                "nba-dispatcher-scheduler@nba-deploy-test.iam.gserviceaccount.com",
            "audience": PARAMS["service_url"],
        }  # fmt: skip
        assert job["attempt_deadline"]["seconds"] <= 1800
        assert job["retry_config"]["retry_count"] >= 1
    start = jobs["nba-phase5-start"]["job"]["retry_config"]
    # The 503 retries are the 30-minute wait: every 5 minutes, for 30 minutes.
    assert start == {
        "retry_count": 6,
        "min_backoff_duration": {"seconds": 300},
        "max_backoff_duration": {"seconds": 300},
        "max_doublings": 0,
        "max_retry_duration": {"seconds": 1800},
    }
    assert start["retry_count"] * start["min_backoff_duration"]["seconds"] == 30 * 60


def test_the_rendered_jobs_build_into_the_real_scheduler_protos(rendered):
    from google.cloud import scheduler_v1

    for request in rendered["scheduler"]:
        job = scheduler_v1.Job(**request["job"])
        assert job.http_target.http_method == scheduler_v1.HttpMethod.POST
        assert job.http_target.body == b"{}"
        assert job.http_target.oidc_token.service_account_email.startswith("nba-dispatcher-")
        assert job.retry_config.max_retry_duration.total_seconds() > 0
        create = scheduler_v1.CreateJobRequest(**request)
        assert create.job.schedule == request["job"]["schedule"]
        # The JSON the API receives carries every declared field.
        api = json.loads(scheduler_v1.Job.to_json(job))
        assert api["timeZone"] == "America/Los_Angeles"
        assert api["httpTarget"]["body"] == "e30="
        assert api["httpTarget"]["oidcToken"]["audience"] == PARAMS["service_url"]


def _fires_utc(schedule: str, start_local: dt.datetime, count: int) -> list[dt.datetime]:
    """Next fire times of a daily cron (`M H * * *`) in the zone of ``start_local``,
    computed from the fields: Scheduler fires at that wall-clock time every day."""
    minute, hour, dom, month, dow = schedule.split()
    assert (dom, month, dow) == ("*", "*", "*")
    zone = start_local.tzinfo
    day = start_local.date()
    fires: list[dt.datetime] = []
    while len(fires) < count:
        local = dt.datetime.combine(day, dt.time(int(hour), int(minute)), tzinfo=zone)
        if local > start_local:
            fires.append(local.astimezone(UTC))
        day += dt.timedelta(days=1)
    return fires


@pytest.mark.parametrize(
    "transition, before, after",
    [(dt.date(2027, 3, 14), 14, 13), (dt.date(2027, 11, 7), 13, 14)],
    ids=["spring-forward", "fall-back"],
)
def test_the_jobs_keep_pacific_wall_clock_time_across_dst(rendered, transition, before, after):
    croniter = pytest.importorskip("croniter").croniter
    start_local = dt.datetime.combine(transition - dt.timedelta(days=3), dt.time(12),
                                      tzinfo=PACIFIC)  # fmt: skip
    for request in rendered["scheduler"]:
        job = request["job"]
        zone = ZoneInfo(job["time_zone"])
        fires = _fires_utc(job["schedule"], start_local.astimezone(zone), 6)
        itr = croniter(job["schedule"], start_local.astimezone(zone))
        assert [itr.get_next(dt.datetime).astimezone(UTC) for _ in fires] == fires
        minute, hour = (int(f) for f in job["schedule"].split()[:2])
        for fire in fires:
            local = fire.astimezone(PACIFIC)
            assert (local.hour, local.minute) == (hour, minute)  # wall clock kept
            expected_utc_hour = hour + (before if local.date() < transition else after) - 6
            assert fire.hour == expected_utc_hour, (job["name"], fire)
    # 06:00 PT: 14:00 UTC in PST, 13:00 UTC in PDT.
    start = next(r for r in rendered["scheduler"] if r["job"]["name"].endswith("/nba-phase5-start"))
    fires = _fires_utc(start["job"]["schedule"], start_local, 6)
    by_date = {f.astimezone(PACIFIC).date(): f.hour for f in fires}
    assert by_date[transition - dt.timedelta(days=1)] == before
    assert by_date[transition] == after


# -- Cloud Run ---------------------------------------------------------------------------


def test_the_service_is_rendered_and_builds_into_the_run_protos(rendered):
    from google.cloud import run_v2

    request = rendered["run"]
    assert request["parent"] == "projects/nba-deploy-test/locations/us-west2"
    assert request["service_id"] == "nba-phase5-dispatcher"
    service = run_v2.Service(**request["service"])
    run_v2.CreateServiceRequest(**request)
    template = service.template
    assert template.service_account == "nba-dispatcher-run@nba-deploy-test.iam.gserviceaccount.com"
    container = template.containers[0]
    assert container.image == PARAMS["image"]
    assert container.ports[0].container_port == 8080
    env = {e.name: e for e in container.env}
    assert env["DISPATCHER_WAREHOUSE"].value == "bigquery"
    assert env["DISPATCHER_TRANSPORT"].value == "pubsub"
    assert env["DISPATCHER_GCP_PROJECT"].value == "nba-deploy-test"
    assert env["DISPATCHER_PUSH_AUDIENCE"].value == PARAMS["service_url"]
    assert env["DISPATCHER_PUSH_SERVICE_ACCOUNTS"].value.split(",") == [
        "nba-dispatcher-push@nba-deploy-test.iam.gserviceaccount.com",
        "nba-dispatcher-scheduler@nba-deploy-test.iam.gserviceaccount.com",
    ]
    slack = env["DISPATCHER_SLACK_WEBHOOK_URL"]
    assert slack.value == ""
    assert slack.value_source.secret_key_ref.secret == "nba-dispatcher-slack-webhook"
    assert service.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL
    assert template.timeout.total_seconds() >= 300  # longer than every caller's deadline


def test_the_service_env_holds_known_settings_and_no_plain_secret(rendered):
    known = {s.name for s in KNOWN_SETTINGS}
    env = rendered["run"]["service"]["template"]["containers"][0]["env"]
    for variable in env:
        assert variable["name"] in known, variable["name"]
        if is_secret(variable["name"]):
            assert "value" not in variable, variable["name"]
            assert variable["value_source"]["secret_key_ref"]["version"]


def test_gcloud_commands_match_the_rendered_requests(rendered):
    commands = infra.gcloud_commands(rendered)
    joined = "\n".join(commands)
    assert joined.count("gcloud scheduler jobs create http") == 4
    assert "'--schedule=15 6 * * *'" in joined
    assert "--max-retry-duration=1800s" in joined
    assert "--dead-letter-topic=projects/nba-deploy-test/topics/nba-phase5-trigger-dlq" in joined
    assert "--push-auth-service-account=nba-dispatcher-push@" in joined
    run = commands[-1]
    assert run.startswith("gcloud run deploy nba-phase5-dispatcher ")
    assert "--no-allow-unauthenticated" in run
    assert "DISPATCHER_SLACK_WEBHOOK_URL=nba-dispatcher-slack-webhook:latest" in run
    assert "DISPATCHER_SLACK_WEBHOOK_URL=" not in run.split("--set-secrets")[0]


def test_without_the_libraries_or_credentials_it_only_renders(monkeypatch):
    import builtins

    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)

    def no_credentials(*_a, **_k):
        raise DefaultCredentialsError("none")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    assert "no Google credentials" in (infra.cloud_unavailable("scheduler") or "")
    real_import = builtins.__import__

    def without_run(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "google.cloud" and fromlist and "run_v2" in fromlist:
            raise ImportError("No module named google.cloud.run_v2")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", without_run)
    assert infra.cloud_unavailable("run") == (
        "google-cloud-run is not installed (pip install '.[deploy]')"
    )


def test_plan_of_scheduler_and_run_says_it_only_rendered(monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")  # nothing is sent anywhere
    args = ["infra", "plan", "--only", "scheduler", "--only", "run",
            *(f"{infra.option_name(k)}={v}" for k, v in PARAMS.items())]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "scheduler_job nba-phase5-start: render" in result.output
    assert "rendered only, nothing sent: PUBSUB_EMULATOR_HOST is set" in result.output
    assert "gcloud run deploy nba-phase5-dispatcher" in result.output
    as_json = CliRunner().invoke(cli, [*args, "--json"])
    report = json.loads(as_json.output)
    assert set(report["rendered_only"]) == {"scheduler", "run"}
    assert len(report["requests"]["scheduler"]) == 4


# -- the image ---------------------------------------------------------------------------


def _dockerfile() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    return [line.strip() for line in text.replace("\\\n", " ").splitlines()
            if line.strip() and not line.strip().startswith("#")]  # fmt: skip


def test_the_dockerfile_runs_dispatcher_serve_as_a_non_root_user():
    # docker is not installed here: the image is checked by reading its Dockerfile.
    lines = _dockerfile()
    assert lines[0] == "FROM python:3.11-slim"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entry = next(line for line in lines if line.startswith("ENTRYPOINT"))
    command = next(line for line in lines if line.startswith("CMD"))
    assert lines.index(entry) > max(i for i, line in enumerate(lines) if line.startswith("USER "))
    argv = json.loads(entry.split(None, 1)[1]) + json.loads(command.split(None, 1)[1])
    assert argv[:2] == ["dispatcher", "serve"] and argv[2:] == ["--host", "0.0.0.0"]
    # No --port: serve takes $PORT, which Cloud Run sets (8080 by default here).
    assert any(" PORT=8080" in line for line in lines if line.startswith("ENV "))
    serve_help = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert "$PORT" in serve_help
    assert any(line.startswith("RUN pip install") and line.endswith(" .") for line in lines)


def test_the_dockerignore_keeps_the_build_context_small_and_secret_free():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "*.duckdb", "tests", "*.pem"} <= ignored
    for line in _dockerfile():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
                assert source not in ignored


def test_pip_installs_the_package_with_nothing_outside_pyproject(tmp_path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [
        *project["build-system"]["requires"],
        *project["project"]["dependencies"],
        *(r for extra in project["project"]["optional-dependencies"].values() for r in extra),
    ]
    for requirement in requirements:  # only names from the package index
        assert " @ " not in requirement and "://" not in requirement, requirement
    # Build the wheel from exactly what the Dockerfile copies before its pip install,
    # offline (no index, no build isolation): the package needs nothing else.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("dispatcher", "alerts"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(tmp_path / "dist"), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dispatcher/infra.py" in names and "dispatcher/cli.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dispatcher = dispatcher.cli:cli" in zipfile.ZipFile(wheel).read(entry_points).decode()


# -- Pub/Sub on the emulator -------------------------------------------------------------


@pytest.fixture
def emulator_project(pubsub_emulator, monkeypatch, request):
    """A project of its own on the shared emulator (state outlives a test)."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    return "infra-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")


def _params(project: str) -> dict[str, str]:
    # A push endpoint nobody listens on: no message is published in these tests.
    return {**PARAMS, "project": project, "service_url": "http://127.0.0.1:9"}


def _actions(report: infra.Report) -> dict[tuple[str, str], str]:
    return {(c.kind, c.name): c.action for c in report.changes}


def _subscriber():
    from google.cloud import pubsub_v1

    return pubsub_v1.SubscriberClient()


@pytest.mark.pubsub
def test_apply_creates_everything_then_plan_finds_nothing_to_do(emulator_project):
    params = _params(emulator_project)
    first = infra.run("plan", params, sections=["pubsub"])
    assert set(_actions(first).values()) == {"create"}
    assert len(first.changes) == 5

    applied = infra.run("apply", params, sections=["pubsub"])
    assert set(_actions(applied).values()) == {"create"}
    assert all(c.applied for c in applied.changes)

    again = infra.run("apply", params, sections=["pubsub"])
    assert set(_actions(again).values()) == {"unchanged"}
    assert not any(c.applied for c in again.changes)
    assert set(_actions(infra.run("plan", params, sections=["pubsub"])).values()) == {"unchanged"}


@pytest.mark.pubsub
def test_the_push_subscription_reads_back_as_declared(emulator_project):
    params = _params(emulator_project)
    infra.run("apply", params, sections=["pubsub"])
    subscriber = _subscriber()
    try:
        sub = subscriber.get_subscription(
            request={"subscription": f"projects/{emulator_project}/subscriptions/"
                                     "nba-phase5-trigger-sub"}, timeout=10,
        )  # fmt: skip
        dlq = subscriber.get_subscription(
            request={"subscription": f"projects/{emulator_project}/subscriptions/"
                                     "nba-phase5-trigger-dlq-sub"}, timeout=10,
        )  # fmt: skip
    finally:
        subscriber.close()
    assert sub.topic == f"projects/{emulator_project}/topics/nba-phase4-precompute-complete"
    assert sub.ack_deadline_seconds == 120
    assert sub.push_config.push_endpoint == "http://127.0.0.1:9/trigger"
    # The emulator keeps the OIDC token fields (it never sends the token itself).
    assert sub.push_config.oidc_token.service_account_email == (
        f"nba-dispatcher-push@{emulator_project}.iam.gserviceaccount.com"
    )
    assert sub.push_config.oidc_token.audience == "http://127.0.0.1:9"
    assert sub.retry_policy.minimum_backoff.total_seconds() == 30
    assert sub.retry_policy.maximum_backoff.total_seconds() == 600
    assert sub.dead_letter_policy.dead_letter_topic == (
        f"projects/{emulator_project}/topics/nba-phase5-trigger-dlq"
    )
    assert sub.dead_letter_policy.max_delivery_attempts == 10
    assert sub.message_retention_duration.total_seconds() == 86400
    assert dlq.topic.endswith("/topics/nba-phase5-trigger-dlq")
    assert not dlq.push_config.push_endpoint


@pytest.mark.pubsub
def test_drift_is_planned_field_by_field_and_apply_fixes_it(emulator_project):
    params = _params(emulator_project)
    infra.run("apply", params, sections=["pubsub"])
    name = f"projects/{emulator_project}/subscriptions/nba-phase5-trigger-sub"
    subscriber = _subscriber()
    try:
        subscriber.update_subscription(
            request={"subscription": {"name": name, "ack_deadline_seconds": 30,
                                      "dead_letter_policy": {
                                          "dead_letter_topic": f"projects/{emulator_project}"
                                                               "/topics/nba-phase5-trigger-dlq",
                                          "max_delivery_attempts": 5}},
                     "update_mask": {"paths": ["ack_deadline_seconds", "dead_letter_policy"]}},
            timeout=10,
        )  # fmt: skip
    finally:
        subscriber.close()

    plan = infra.run("plan", params, sections=["pubsub"])
    change = next(c for c in plan.changes if c.name == "nba-phase5-trigger-sub")
    assert change.action == "update"
    assert change.fields == ("ack_deadline_seconds", "dead_letter_policy.max_delivery_attempts")
    assert "ack_deadline_seconds: 30 -> 120" in change.detail
    assert "max_delivery_attempts: 5 -> 10" in change.detail
    others = [c.action for c in plan.changes if c.name != "nba-phase5-trigger-sub"]
    assert set(others) == {"unchanged"}

    fixed = infra.run("apply", params, sections=["pubsub"])
    assert next(c for c in fixed.changes if c.name == "nba-phase5-trigger-sub").applied
    assert set(_actions(infra.run("plan", params, sections=["pubsub"])).values()) == {"unchanged"}


@pytest.mark.pubsub
def test_a_changed_declaration_is_planned_then_applied(emulator_project, doc, tmp_path):
    params = _params(emulator_project)
    infra.run("apply", params, sections=["pubsub"])
    changed = copy.deepcopy(doc)
    push = changed["pubsub"]["subscriptions"][0]
    push["ack_deadline_seconds"] = 90
    push["retry_policy"]["minimum_backoff"] = {"seconds": 20}
    path = tmp_path / "resources.yaml"
    path.write_text(yaml.safe_dump(changed))

    plan = infra.run("plan", params, sections=["pubsub"], resources=path)
    change = next(c for c in plan.changes if c.name == "nba-phase5-trigger-sub")
    assert (change.action, change.fields) == (
        "update",
        ("ack_deadline_seconds", "retry_policy.minimum_backoff"),
    )
    infra.run("apply", params, sections=["pubsub"], resources=path)
    assert set(_actions(infra.run("plan", params, sections=["pubsub"], resources=path))
               .values()) == {"unchanged"}  # fmt: skip
    # The repository's declaration now sees the drift the other way round.
    back = infra.run("plan", params, sections=["pubsub"])
    assert "ack_deadline_seconds: 90 -> 120" in next(
        c.detail for c in back.changes if c.name == "nba-phase5-trigger-sub"
    )


@pytest.mark.pubsub
def test_a_changed_topic_cannot_be_updated_in_place(emulator_project, doc, tmp_path):
    params = _params(emulator_project)
    infra.run("apply", params, sections=["pubsub"])
    changed = copy.deepcopy(doc)
    changed["pubsub"]["subscriptions"][1]["topic"] = "prediction-request"
    path = tmp_path / "resources.yaml"
    path.write_text(yaml.safe_dump(changed))
    report = infra.run("apply", params, sections=["pubsub"], resources=path)
    change = next(c for c in report.changes if c.name == "nba-phase5-trigger-dlq-sub")
    assert change.action == "replace" and not change.applied
    assert "delete the subscription" in change.detail
    assert not report.ok


@pytest.mark.pubsub
def test_the_cli_applies_pubsub_and_renders_the_rest(emulator_project):
    params = [f"{infra.option_name(k)}={v}" for k, v in _params(emulator_project).items()]
    runner = CliRunner()
    applied = runner.invoke(cli, ["infra", "apply", "--json", *params])
    assert applied.exit_code == 0, applied.output
    report = json.loads(applied.output)
    by_kind = {(c["kind"], c["action"]) for c in report["changes"]}
    assert by_kind == {("topic", "create"), ("subscription", "create"),
                       ("scheduler_job", "render"), ("run_service", "render")}  # fmt: skip
    assert any(c.startswith("gcloud scheduler jobs create http") for c in report["gcloud"])
    assert not any(c.startswith("gcloud pubsub") for c in report["gcloud"])

    plan = runner.invoke(cli, ["infra", "plan", "--only", "pubsub", *params])
    assert plan.exit_code == 0, plan.output
    lines = plan.output.strip().splitlines()
    assert len(lines) == 5 and all(line.endswith(": unchanged") for line in lines)
    assert "subscription nba-phase5-trigger-sub: unchanged" in lines


# -- docs/DEPLOY.md ----------------------------------------------------------------------


def test_the_deploy_guide_stands_alone_and_names_every_resource(doc):
    text = (ROOT / "docs" / "DEPLOY.md").read_text()
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert "://" not in target, target  # no document outside the repository
        assert ((ROOT / "docs" / target).resolve()).exists(), target
    names = [
        *(t["name"] for t in doc["pubsub"]["topics"]),
        *(s["name"] for s in doc["pubsub"]["subscriptions"]),
        *(j["name"] for j in doc["scheduler"]["jobs"]),
        *(s["name"] for s in doc["secrets"]),
        doc["run"]["service"]["name"],
    ]
    for name in names:
        assert name in text, name
    for spec in doc["parameters"].values():
        assert spec["env"] in text, spec["env"]
    for needed in [
        "gcloud services enable", "roles/bigquery.dataEditor", "roles/bigquery.dataViewer",
        "roles/bigquery.jobUser", "roles/pubsub.publisher", "roles/pubsub.subscriber",
        "roles/run.invoker", "roles/iam.serviceAccountTokenCreator",
        "roles/secretmanager.secretAccessor", "dbt build", "dispatcher infra plan",
        "dispatcher infra apply", "dispatcher status", "gcloud run services update-traffic",
        "gcloud pubsub subscriptions delete nba-phase5-trigger-sub",
        "docker build -f deploy/Dockerfile",
    ]:  # fmt: skip
        assert needed in text, needed


def test_cloud_build_builds_the_dockerfile():
    build = yaml.safe_load((DEPLOY / "cloudbuild.yaml").read_text())
    args = build["steps"][0]["args"]
    assert args[:3] == ["build", "-f", "deploy/Dockerfile"] and args[-1] == "."
    assert build["images"] == ["${_IMAGE}"]


# -- Scheduler and Cloud Run apply, against in-process fakes of the clients ----------------
# No emulator exists for either: these fakes keep what was created, add output fields and
# defaults as the services do, and check every call is bounded (timeout and retry).


class _Transport:
    def close(self) -> None:
        pass


def _bounded(kwargs) -> None:
    assert kwargs["timeout"] > 0 and kwargs["retry"] is not None


class FakeScheduler:
    jobs: dict = {}

    def __init__(self, **_kwargs) -> None:
        self.transport = _Transport()

    def get_job(self, name, **kwargs):
        from google.api_core import exceptions

        _bounded(kwargs)
        if name not in self.jobs:
            raise exceptions.NotFound(name)
        return type(self.jobs[name]).deserialize(type(self.jobs[name]).serialize(self.jobs[name]))

    def create_job(self, parent, job, **kwargs):
        from google.cloud import scheduler_v1

        _bounded(kwargs)
        assert job.name.startswith(parent + "/jobs/")
        stored = scheduler_v1.Job.deserialize(scheduler_v1.Job.serialize(job))
        stored.state = scheduler_v1.Job.State.ENABLED
        stored.http_target.headers["User-Agent"] = "Google-Cloud-Scheduler"
        self.jobs[job.name] = stored
        return stored

    def update_job(self, job, update_mask, **kwargs):
        _bounded(kwargs)
        stored = self.jobs[job.name]
        for path in update_mask["paths"]:
            setattr(stored, path, getattr(job, path))
        return stored


class _Operation:
    def __init__(self, result) -> None:
        self._result = result

    def result(self, timeout):
        assert timeout > 0
        return self._result


class FakeRun:
    services: dict = {}

    def __init__(self, **_kwargs) -> None:
        self.transport = _Transport()

    def get_service(self, name, **kwargs):
        from google.api_core import exceptions

        _bounded(kwargs)
        if name not in self.services:
            raise exceptions.NotFound(name)
        return self.services[name]

    def create_service(self, parent, service, service_id, **kwargs):
        _bounded(kwargs)
        name = f"{parent}/services/{service_id}"
        service.name = name
        service.uri = "https://nba-phase5-dispatcher-123.us-west2.run.app"
        service.template.containers[0].resources.cpu_idle = True  # a server default
        self.services[name] = service
        return _Operation(service)

    def update_service(self, service, **kwargs):
        _bounded(kwargs)
        service.template.containers[0].resources.cpu_idle = True
        self.services[service.name] = service
        return _Operation(service)


@pytest.fixture
def fake_clouds(monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import run_v2, scheduler_v1

    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(FakeScheduler, "jobs", {})
    monkeypatch.setattr(FakeRun, "services", {})
    monkeypatch.setattr(scheduler_v1, "CloudSchedulerClient", FakeScheduler)
    monkeypatch.setattr(run_v2, "ServicesClient", FakeRun)
    return AnonymousCredentials()


def test_scheduler_jobs_are_applied_once_and_drift_is_fixed(fake_clouds):
    def run(action):
        return infra.run(action, PARAMS, sections=["scheduler"], credentials=fake_clouds)

    assert set(_actions(run("plan")).values()) == {"create"} and not FakeScheduler.jobs
    assert set(_actions(run("apply")).values()) == {"create"}
    assert len(FakeScheduler.jobs) == 4
    assert set(_actions(run("apply")).values()) == {"unchanged"}

    name = "projects/nba-deploy-test/locations/us-west2/jobs/nba-phase5-start"
    FakeScheduler.jobs[name].schedule = "0 5 * * *"
    FakeScheduler.jobs[name].retry_config.retry_count = 1
    change = next(c for c in run("plan").changes if c.name == "nba-phase5-start")
    assert change.action == "update"
    assert change.fields == ("schedule", "retry_config.retry_count")
    assert "schedule: '0 5 * * *' -> '0 6 * * *'" in change.detail
    run("apply")
    assert FakeScheduler.jobs[name].schedule == "0 6 * * *"
    assert set(_actions(run("plan")).values()) == {"unchanged"}


def test_the_cloud_run_service_is_applied_once_and_a_new_image_is_an_update(fake_clouds):
    def run(action, **changes):
        return infra.run(action, {**PARAMS, **changes}, sections=["run"],
                         credentials=fake_clouds)  # fmt: skip

    assert _actions(run("apply")) == {("run_service", "nba-phase5-dispatcher"): "create"}
    assert _actions(run("apply")) == {("run_service", "nba-phase5-dispatcher"): "unchanged"}
    plan = run("plan", image="us-west2-docker.pkg.dev/nba-deploy-test/nba/dispatcher:next")
    (change,) = plan.changes
    assert (change.action, change.fields) == ("update", ("template.containers[0].image",))
    run("apply", image="us-west2-docker.pkg.dev/nba-deploy-test/nba/dispatcher:next")
    (service,) = FakeRun.services.values()
    assert service.template.containers[0].image.endswith(":next")


def test_help_imports_neither_yaml_nor_the_deploy_clients():
    code = (
        "import sys; from dispatcher.cli import cli\n"
        "heavy = ('yaml', 'dispatcher.infra', 'google.cloud.scheduler_v1',"
        " 'google.cloud.run_v2', 'google.cloud.pubsub_v1')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == ""


def test_pubsub_unreachable_is_one_line_within_the_timeout(monkeypatch):
    import socket
    import time

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{port}", "DISPATCHER_GCP_PROJECT": "p-dead"}
    args = ["infra", "plan", "--only", "pubsub", "--timeout", "2",
            "--service-url", "http://127.0.0.1:9"]  # fmt: skip
    started = time.monotonic()
    result = CliRunner().invoke(cli, args, env=env)
    assert time.monotonic() - started < 20
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert "Timeout of 2.0s exceeded" in result.output


def test_every_caller_gives_up_before_the_service_does(rendered):
    timeout = rendered["run"]["service"]["template"]["timeout"]["seconds"]
    push = next(s for s in rendered["pubsub"]["subscriptions"] if "push_config" in s)
    assert push["ack_deadline_seconds"] <= min(timeout, 600)
    for request in rendered["scheduler"]:
        assert 15 <= request["job"]["attempt_deadline"]["seconds"] <= timeout

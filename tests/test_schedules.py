"""Randomized schedules (the model, harness and steps: tests/schedules.py), on DuckDB with
the local outbox, with the Pub/Sub emulator as transport, on the BigQuery emulator, and a
few with real dispatcher processes: killed with SIGKILL after their claim, and running
side by side on one DuckDB file.

Sizes come from the environment (the defaults are the CI sizes):
DISPATCHER_SCHEDULES (DuckDB, in DISPATCHER_SCHEDULE_PROCESSES processes, 2),
DISPATCHER_PUBSUB_SCHEDULES, DISPATCHER_BIGQUERY_SCHEDULES (0: that test is not defined);
DISPATCHER_SCHEDULE_SEED fixes the seed (default: a new one each run, printed), and
DISPATCHER_SCHEDULE_ONLY=N replays schedule N (with the ones before it on its copy).
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import random
import select
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import schedules as sched
from reliability import record

from dispatcher.logs import LogConfig, configure
from dispatcher.transport import REQUEST_TOPIC

SCHEDULES = int(os.environ.get("DISPATCHER_SCHEDULES", "350"))
PUBSUB_SCHEDULES = int(os.environ.get("DISPATCHER_PUBSUB_SCHEDULES", "50"))
BIGQUERY_SCHEDULES = int(os.environ.get("DISPATCHER_BIGQUERY_SCHEDULES", "1"))
SEED = os.environ.get("DISPATCHER_SCHEDULE_SEED") or uuid.uuid4().hex[:8]
ONLY = (
    int(os.environ["DISPATCHER_SCHEDULE_ONLY"])
    if os.environ.get("DISPATCHER_SCHEDULE_ONLY")
    else None
)
#: The DuckDB schedules run in this many processes, each on its own template (the default
#: thresholds, then every threshold moved, alternately).
PROCESSES = int(os.environ.get("DISPATCHER_SCHEDULE_PROCESSES", "2"))
PUBSUB_PROJECT = "schedules"
OUTCOMES = ("dispatched", "partial", "nothing_pending", "critical", "waiting", "in_progress",
            "publish_failed", "no_games", "ok", "sla_breach")  # fmt: skip
DISPATCHER = Path(sys.executable).with_name("dispatcher")
SUBPROCESS_TIMEOUT = 120


def _failures(failures: list[str]) -> str:
    shown = "\n\n".join(failures[:3])
    return (
        f"{len(failures)} schedules broke the contract (seed {SEED}; replay one with"
        f" DISPATCHER_SCHEDULE_SEED={SEED} DISPATCHER_SCHEDULE_ONLY=<index>):\n\n{shown}"
    )


@pytest.fixture
def quiet_logs():
    previous = configure(LogConfig(format="json", quiet=True))
    yield
    configure(previous)


# --- DuckDB, the local outbox: the bulk ------------------------------------------------


def test_schedules_on_duckdb(tmp_path):
    """The bulk: SCHEDULES schedules in PROCESSES processes, each on its own template (the
    default thresholds; every threshold and both leases moved)."""
    started = time.perf_counter()
    parts = [
        sched.Part(
            seed=SEED,
            first=first,
            count=count,
            workdir=str(tmp_path / f"part-{n}"),
            overrides=sched.VARS_MOVED if n % 2 else sched.VARS_DEFAULT,
            only=ONLY,
        )
        for n, (first, count) in enumerate(sched.split(SCHEDULES, PROCESSES))
    ]
    with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(sched.run_part, parts))
    seconds = time.perf_counter() - started
    figures = sched.figures_of(results)
    print(f"seed {SEED}: {figures.schedules} schedules, {figures.steps} steps in {seconds:.1f} s"
          f" (builds {', '.join(f'{r.build_seconds:.1f}' for r in results)} s; schedules"
          f" {', '.join(f'{r.seconds:.1f}' for r in results)} s)")  # fmt: skip
    print(json.dumps(figures.as_dict(), sort_keys=True))
    failures = [f for result in results for f in result.failures]
    assert not failures, _failures(failures)
    if ONLY is None:
        assert figures.schedules == SCHEDULES
    if SCHEDULES >= 200 and ONLY is None:
        # Every kind of step ran, and the outcomes that need a fault or a race came up.
        assert set(figures.kinds) == set(sched.STEPS), figures.kinds
        assert set(figures.outcomes) >= set(OUTCOMES), figures.outcomes
    record(
        "schedules", backend="duckdb", transport="local", schedules=figures.schedules,
        steps=figures.steps, seed=SEED, dispatches=figures.dispatches,
        requests_published=figures.requests_published,
        messages_resent=figures.messages_resent, alerts_checked=figures.alerts_checked,
        concurrent_groups=figures.concurrent_groups, serve_calls=figures.serve_calls,
        outcomes=dict(figures.outcomes), duplicates=0, lost=0, violations=0,
        processes=PROCESSES, seconds=round(seconds, 1),
    )  # fmt: skip


# --- the module's own template: the Pub/Sub and process schedules ------------------------

KILLED_SCHEDULES = 3


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> sched.Template:
    return sched.build_template(
        tmp_path_factory.mktemp("schedules"), PUBSUB_SCHEDULES + KILLED_SCHEDULES,
        sched.VARS_DEFAULT,
    )  # fmt: skip


# --- the Pub/Sub emulator as transport ------------------------------------------------------


@pytest.mark.pubsub
def test_schedules_with_the_pubsub_emulator(
    pubsub_emulator, template, tmp_path, monkeypatch, quiet_logs
):
    """Requests go to a topic of the emulator; what it delivers is the model's messages,
    once each. At the end the reference worker streams every message of the run again
    (a redelivery of everything): nothing changes, no prediction is written twice."""
    from dispatcher.sandbox.worker import run_worker
    from dispatcher.transport_pubsub import ensure_subscription, ensure_topics

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    ensure_topics(PUBSUB_PROJECT, [REQUEST_TOPIC], timeout=10)
    run = uuid.uuid4().hex[:8]
    ensure_subscription(PUBSUB_PROJECT, REQUEST_TOPIC, f"harness-{run}", timeout=10)
    ensure_subscription(PUBSUB_PROJECT, REQUEST_TOPIC, f"worker-{run}", timeout=10)
    store = sched.TopicStore(PUBSUB_PROJECT, f"harness-{run}")
    harness = sched.Harness(
        template, tmp_path / "copy", store=store, transport="pubsub",
        gcp_project=PUBSUB_PROJECT, publish_timeout_seconds=5,
    )  # fmt: skip
    started = time.perf_counter()
    failures = []
    try:
        for index in range(PUBSUB_SCHEDULES):
            if ONLY is not None and index > ONLY:
                break
            try:
                sched.run_schedule(harness, SEED, index, template.days[index],
                                   template.days[:index])  # fmt: skip
            except sched.ScheduleFailed as exc:
                failures.append(str(exc))
                break
        assert not failures, _failures(failures)
        # Nothing more arrives than the model's messages.
        total = sum(len(m.messages) for m in harness.models.values())
        store.collect(harness.wh, total, within=1.0, linger=1.0)
        assert len(store.received) == total, (len(store.received), total)
        worker = run_worker(
            harness.settings, source="pubsub", subscription=f"worker-{run}",
            max_messages=total, idle_exit_seconds=10,
        )  # fmt: skip
        assert worker.received == total, worker
        for model in harness.models.values():
            for message in model.messages:
                model.process(message)
            harness.check(model)
    finally:
        harness.close()
        store.close()
    seconds = time.perf_counter() - started
    figures = harness.figures
    print(
        f"seed {SEED}: {figures.schedules} schedules on Pub/Sub in {seconds:.1f} s"
        f" (template {template.build_seconds:.1f} s); the worker streamed {total} again"
    )
    print(json.dumps(figures.as_dict(), sort_keys=True))
    record(
        "schedules", backend="duckdb", transport="pubsub", schedules=figures.schedules,
        steps=figures.steps, seed=SEED, dispatches=figures.dispatches,
        requests_published=figures.requests_published,
        messages_delivered=total, messages_resent=figures.messages_resent,
        alerts_checked=figures.alerts_checked, duplicates=0, lost=0, violations=0,
        seconds=round(seconds, 1),
    )  # fmt: skip


# --- real processes: SIGKILL after the claim, and two processes at once ----------------------


def _cli_env(harness: sched.Harness, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update({
        "DISPATCHER_DUCKDB_PATH": str(harness.settings.duckdb_path),
        "DISPATCHER_DBT_TARGET_PATH": str(harness.settings.dbt_target_path),
        "DISPATCHER_TRANSPORT": "local", "DISPATCHER_LOG_FORMAT": "json", **extra,
    })  # fmt: skip
    return env


def _kill_after_claim(harness: sched.Harness, model: sched.DayModel, workdir: Path) -> float:
    """`dispatcher trigger` publishing to a Pub/Sub host that takes the connection and
    never answers, SIGKILLed once it connects (its claim is committed by then); the
    model time of the claim."""
    from alert_servers import black_hole

    harness.release()
    hole = black_hole()
    env = _cli_env(harness, DISPATCHER_TRANSPORT="pubsub", DISPATCHER_GCP_PROJECT="killed",
                   PUBSUB_EMULATOR_HOST=f"127.0.0.1:{hole.getsockname()[1]}")  # fmt: skip
    with (workdir / f"killed-{model.game_date}.log").open("w") as log:
        claimed_before = model.now()
        process = subprocess.Popen(
            [str(DISPATCHER), "trigger", "--game-date", model.game_date.isoformat(),
             "--trigger-source", "pubsub"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            readable, _, _ = select.select([hole], [], [], SUBPROCESS_TIMEOUT)
            assert readable, "the dispatcher never tried to publish"
            claimed = model.now()
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            hole.close()
    assert process.returncode == -signal.SIGKILL
    return (claimed_before + claimed) / 2


def _processes(
    harness: sched.Harness, model: sched.DayModel, commands: list[str]
) -> list[dict[str, Any]]:
    """Run `dispatcher <command> --json` processes side by side on the DuckDB file; check
    each against the model, as one concurrent group (one may claim; the others find the
    claim in flight, or in progress while it is not confirmed)."""
    harness.release()
    t0 = model.now()
    claim = model.expect_dispatch(refuse_critical=False, t=t0)
    claimers = [c for c in commands if model.expect_dispatch(refuse_critical=c != "retry", t=t0)]
    running = [
        subprocess.Popen(
            [
                str(DISPATCHER),
                command,
                "--game-date",
                model.game_date.isoformat(),
                "--json",
                "--trigger-source",
                "scheduler",
            ],
            env=_cli_env(harness),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for command in commands
    ]
    outputs = []
    for process in running:
        stdout, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert stdout.strip(), stderr[-2000:]
        payload = json.loads(stdout)
        payload["exit_code"] = process.returncode
        outputs.append(payload)
    t = model.now()
    winners = [p for p in outputs if p["batch_id"]]
    assert len(winners) == (1 if claim and claimers else 0), outputs
    if winners:
        batch = winners[0]["batch_id"]
        rows = harness.wh.query(
            "select request_id, player_lookup, message_id from nba_orchestration.request_ledger"
            " where game_date = @game_date and batch_id = @batch_id",
            {"game_date": model.game_date, "batch_id": batch},
        )
        assert sorted((r["player_lookup"], r["request_id"]) for r in rows) == claim, rows
        model.claim([p for p, _ in claim], batch, t0)
        model.settle(batch, [sched.Published(r["request_id"], r["player_lookup"],
                                              r["message_id"], True) for r in rows], t)  # fmt: skip
    observations = []
    for command, payload in zip(commands, outputs, strict=True):
        outcome, code, rules = model.outcome(
            claimed=bool(payload["batch_id"]), failed=0, refuse_critical=command != "retry",
            force=False, t=t,
        )  # fmt: skip
        allowed = {(outcome, code)}
        if not payload["batch_id"] and outcome in ("nothing_pending", "in_progress"):
            allowed |= {("nothing_pending", 0), ("in_progress", 5)}
        assert (payload["outcome"], payload["exit_code"]) in allowed, (command, payload, allowed)
        observations += model.observe(rules, t)
        model.runs.append((payload["outcome"], payload["exit_code"],
                           payload["requests_published"], payload["batch_id"]))  # fmt: skip
    # The CLI alerts on its configured channels: the log channel only here.
    before = len(model.alerts.get("log", []))
    model.deliver(observations, t, 24 * 3600, {}, channels=("log",))
    sent = sorted(
        (a["rule"], a["level"], a["kind"]) for p in outputs for a in p["alerts"]
        if a["channels"].get("log") == "sent"
    )  # fmt: skip
    assert sent == sorted(model.alerts.get("log", [])[before:]), (sent, model.alerts)
    return outputs


def test_killed_dispatchers_and_dispatcher_processes(template, tmp_path, quiet_logs):
    """Schedules with real processes: a `dispatcher trigger` SIGKILLed after its claim
    (its players in progress for the claim lease: the push answered 503, two retry
    processes exit 5), then two retry processes at once once the claim lease is over
    (one publishes everything, once), then the usual ending."""
    harness = sched.Harness(template, tmp_path / "copy")
    killed = in_progress = 0
    try:
        for index in range(PUBSUB_SCHEDULES, PUBSUB_SCHEDULES + KILLED_SCHEDULES):
            day = template.days[index]
            model = harness.model(day)
            rng = random.Random(f"{SEED}/killed/{index}")
            harness.begin(24.0, 30.0)
            steps: list[str] = []
            try:
                harness.write_phase4(model, day.players, ready=True)
                steps.append("Phase 4: every player ready")
                claimed_at = _kill_after_claim(harness, model, tmp_path)
                batch = harness.adopt_crash(model, claimed_at)
                assert batch is not None
                killed += 1
                steps.append(f"dispatcher trigger SIGKILLed after claiming batch {batch}")
                harness.check(model)
                outcomes = harness.call(model, "trigger", via="serve")
                steps.append(f"push to serve /trigger: {outcomes}")
                assert outcomes == ["in_progress"], outcomes
                outputs = _processes(harness, model, ["retry", "retry"])
                steps.append(f"two retry processes: {[p['outcome'] for p in outputs]}")
                in_progress += sum(p["outcome"] == "in_progress" for p in outputs)
                harness.check(model)
                harness.age(model, harness.rules.claim_lease)
                outputs = _processes(harness, model, ["retry", "trigger"])
                steps.append(f"claim lease over; retry and trigger processes:"
                             f" {[p['outcome'] for p in outputs]}")  # fmt: skip
                assert sorted(p["requests_published"] for p in outputs) == [0, len(day.expected)]
                harness.check(model)
                sched.finish(harness, model, rng, steps)
            except Exception as exc:
                steps_text = "\n".join(f"  {n + 1}. {s}" for n, s in enumerate(steps))
                raise AssertionError(f"seed {SEED}, {day.game_date}:\n{steps_text}") from exc
    finally:
        harness.close()
    record(
        "schedules", backend="duckdb", transport="local", kind="processes",
        schedules=KILLED_SCHEDULES, killed=killed, in_progress_answers=in_progress,
        duplicates=0, lost=0, violations=0,
    )  # fmt: skip


# --- the BigQuery emulator ----------------------------------------------------------------

BIGQUERY_PROJECT = "nba-schedules"
#: Short schedules: a dispatch is about eight statements at 1-10 s each on the emulator.
BIGQUERY_MAX_STEPS = 4

if BIGQUERY_SCHEDULES:
    # Not in the default run: on the emulator `dbt run` alone takes one to two minutes and a
    # dispatch 14-20 s (about eight statements at 1-10 s each), so one schedule costs
    # minutes. DISPATCHER_BIGQUERY_SCHEDULES=N runs N (the reliability command: 50).

    @pytest.mark.bigquery
    @pytest.mark.pubsub
    def test_schedules_on_the_bigquery_emulator(
        bigquery_emulator, pubsub_emulator, tmp_path, monkeypatch, quiet_logs
    ):
        """The same schedules with BigQuery as the warehouse (its own project on the
        session's emulator: the scenario marts of project nba-test are left alone) and
        the Pub/Sub emulator as transport."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        from dispatcher.config import Settings
        from dispatcher.transport_pubsub import ensure_subscription, ensure_topics

        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
        settings = Settings(
            warehouse="bigquery", gcp_project=BIGQUERY_PROJECT, transport="pubsub",
            bigquery_api_endpoint=bigquery_emulator.url, dbt_target_path=tmp_path / "target",
            publish_timeout_seconds=5,
        )  # fmt: skip
        client = bigquery.Client(
            project=BIGQUERY_PROJECT, credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=bigquery_emulator.url),
        )  # fmt: skip
        try:
            template = sched.build_bigquery_template(
                settings, client, BIGQUERY_SCHEDULES, sched.VARS_BIGQUERY
            )
        finally:
            client.close()
        ensure_topics(BIGQUERY_PROJECT, [REQUEST_TOPIC], timeout=10)
        run = uuid.uuid4().hex[:8]
        ensure_subscription(BIGQUERY_PROJECT, REQUEST_TOPIC, f"harness-{run}", timeout=10)
        store = sched.TopicStore(BIGQUERY_PROJECT, f"harness-{run}")
        harness = sched.Harness(template, tmp_path, store=store, warehouse=settings)
        harness.ages = sched.BIGQUERY_AGES
        started = time.perf_counter()
        try:
            for index in range(BIGQUERY_SCHEDULES):
                try:
                    sched.run_schedule(
                        harness, SEED, index, template.days[index], template.days[:index],
                        max_steps=BIGQUERY_MAX_STEPS,
                    )  # fmt: skip
                except sched.ScheduleFailed as exc:
                    pytest.fail(_failures([str(exc)]), pytrace=False)
        finally:
            harness.close()
            store.close()
        seconds = time.perf_counter() - started
        figures = harness.figures
        print(f"seed {SEED}: {figures.schedules} schedules on the BigQuery emulator in"
              f" {seconds:.1f} s ({seconds / max(figures.schedules, 1):.1f} s each; dbt run"
              f" and load {template.build_seconds:.1f} s)")  # fmt: skip
        record(
            "schedules", backend="bigquery", transport="pubsub", schedules=figures.schedules,
            steps=figures.steps, seed=SEED, dispatches=figures.dispatches,
            requests_published=figures.requests_published,
            alerts_checked=figures.alerts_checked, duplicates=0, lost=0, violations=0,
            seconds=round(seconds, 1),
            seconds_per_schedule=round(seconds / max(figures.schedules, 1), 1),
        )  # fmt: skip


# --- the checks themselves ------------------------------------------------------------------


def _row(
    request_id: str,
    player: str,
    attempt: int,
    batch: str,
    claimed: dt.datetime,
    published: dt.datetime | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    return {"request_id": request_id, "player_lookup": player, "attempt": attempt,
            "batch_id": batch, "claimed_at": claimed, "published_at": published,
            "message_id": message}  # fmt: skip


def test_the_invariants_fail_on_what_they_guard():
    """check_invariants reads the warehouse alone; each thing it guards, broken, fails it."""
    rules = sched.Rules.of(sched.template_vars(sched.VARS_DEFAULT))
    day, t = dt.date(2000, 1, 3), dt.datetime(2026, 1, 1, 9, 0)
    minute = dt.timedelta(minutes=1)

    def stored(message: str, request: str, batch: str) -> sched.Stored:
        return sched.Stored(message, request, "p", day, batch, b"{}", True)

    good_rows = [
        _row("d/p/1", "p", 1, "b1", t, t, "m1"),
        _row("d/p/2", "p", 2, "b2", t + 11 * minute, t + 11 * minute, "m2"),
        _row("d/p/3", "p", 3, "killed", t + 22 * minute),  # a claim nobody confirmed
        _row("d/p/4", "p", 4, "b3", t + 23 * minute, t + 23 * minute, "m3"),
    ]
    messages = [stored("m1", "d/p/1", "b1"), stored("m2", "d/p/2", "b2"),
                stored("m3", "d/p/4", "b3")]  # fmt: skip
    runs = [{"batch_id": b, "requests_published": 1} for b in ("b1", "b2", "b3")]
    runs.append({"batch_id": None, "requests_published": 0})
    predictions = [{"player_lookup": "p", "system_id": "s", "n": 1, "active": 1}]
    sched.check_invariants(day, good_rows, messages, runs, predictions, rules)

    inside = [*good_rows[:1], _row("d/p/2", "p", 2, "b2", t + 9 * minute, t + 9 * minute, "m2")]
    broken = {
        "requested twice inside a lease": (inside, messages[:2], runs[:2], predictions),
        "has no matching message": (good_rows, messages[1:], runs, predictions),
        "published 1; the ledger confirms 0": (
            good_rows, messages, [*runs, {"batch_id": "b9", "requests_published": 1}],
            predictions,
        ),
        "have no run-log row": (good_rows, messages, runs[1:], predictions),
        "written twice": (good_rows, messages, runs, [{**predictions[0], "n": 2}]),
    }  # fmt: skip
    for says, (rows, stored_, runs_, predictions_) in broken.items():
        with pytest.raises(sched.Violation, match=says):
            sched.check_invariants(day, rows, stored_, runs_, predictions_, rules)


@pytest.mark.parametrize(
    ("levels", "hours_between", "received"),
    [
        (["warning", "warning"], 1, [("warning", "new")]),
        (["warning", "critical", "critical"], 1, [("warning", "new"), ("critical", "worsened")]),
        (["critical", "warning"], 1, [("critical", "new")]),  # better, still a breach
        (["warning", "warning"], 24, [("warning", "new"), ("warning", "repeat")]),
        (["warning", "ok", "ok"], 1, [("warning", "new"), ("warning", "resolved")]),
        (
            ["critical", "ok", "warning"],
            1,
            [("critical", "new"), ("critical", "resolved"), ("warning", "new")],
        ),
        (["ok", "ok"], 1, []),
    ],
)
def test_the_model_of_the_dedup_rules(levels, hours_between, received):
    """The model's dedup rules are the README's, case by case (written apart from
    alerts/, which test_alert_dedup holds to the same table)."""
    model = sched.DayModel(sched.Day(dt.date(2000, 1, 3), sched.GAME, ("p",), ("p",)),
                           sched.Rules.of(sched.template_vars(sched.VARS_DEFAULT)))  # fmt: skip
    for n, level in enumerate(levels):
        model.deliver([("coverage", level)], n * hours_between * 3600.0, 24 * 3600.0, {})
    assert [(level, kind) for _, level, kind in model.alerts["rec"]] == received

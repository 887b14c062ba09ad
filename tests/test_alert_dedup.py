"""Once, and only once: the dedup rules of alerts.deliver, from the pure decision to the
exact sequence of messages a channel receives while the dispatch commands and the status
check run again and again over a changing slate."""

from __future__ import annotations

import datetime as dt

import pytest
from alert_slate import GAME_DATE, SPEC, drain, execute, make_ready, query, unpredict
from warehouses import build_template, copy_of

import alerts
from alerts import rules as alert_rules
from dispatcher.dispatch import Dispatcher
from dispatcher.warehouse import connect

NOW = dt.datetime(2026, 11, 28, 9, 0)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(hours=24)


def _sent(level: str, kind: str = "new", ago: dt.timedelta = HOUR) -> alerts._Sent:
    return alerts._Sent(level, kind, NOW - ago)


@pytest.mark.parametrize(
    ("level", "last", "expected"),
    [
        ("ok", None, None),  # no breach, nothing to resolve: no row at all
        ("warning", None, ("new", "send")),
        ("critical", None, ("new", "send")),
        ("warning", _sent("warning"), ("repeat", "suppressed")),
        ("critical", _sent("warning"), ("worsened", "send")),
        ("warning", _sent("critical"), ("repeat", "suppressed")),  # better, still a breach
        ("critical", _sent("critical", "worsened"), ("repeat", "suppressed")),
        ("warning", _sent("warning", ago=DAY - dt.timedelta(seconds=1)), ("repeat", "suppressed")),
        ("warning", _sent("warning", ago=DAY), ("repeat", "send")),
        ("critical", _sent("critical", "repeat", ago=DAY * 3), ("repeat", "send")),
        ("ok", _sent("warning"), ("resolved", "send")),
        ("ok", _sent("critical", "worsened", ago=DAY * 9), ("resolved", "send")),
        ("ok", _sent("warning", "resolved"), None),  # resolved once only
        ("warning", _sent("warning", "resolved"), ("new", "send")),  # a new breach
    ],
)
def test_decide(level, last, expected):
    assert alerts.decide(level, last, NOW, DAY) == expected


# -- the sequence over a changing slate (DuckDB, local outbox) ----------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("alert-dedup"), [SPEC])


class Pager:
    """A channel that records what it was given, and can be told to fail."""

    def __init__(self) -> None:
        self.received: list[alerts.Alert] = []
        self.failing = False

    def __call__(self, alert: alerts.Alert) -> None:
        if self.failing:
            raise RuntimeError("https://hooks.example.invalid/T000/SECRET refused")
        self.received.append(alert)

    def take(self) -> list[tuple[str, str, str]]:
        out = [(a.rule, a.level, a.kind) for a in self.received]
        self.received.clear()
        return out


def test_the_sequence_of_messages_over_a_changing_slate(template, tmp_path):
    settings = copy_of(template, tmp_path)
    pager = Pager()

    def run(command: str) -> list[tuple[str, str, str]]:
        dispatcher = Dispatcher(settings, channels={"pager": pager})
        getattr(dispatcher, command)(GAME_DATE)
        return pager.take()

    # 00:40 Phase 4 wrote its rows, none ready: the event is refused, on-call told once.
    assert run("trigger") == [("phase4_critical", "critical", "new")]
    assert run("trigger") == []
    # A retry publishes whatever is ready: Phase 4 is still critical (held back), and
    # the dispatch is partial.
    assert run("retry") == [("partial_dispatch", "warning", "new")]
    # 07:00 nothing predicted: the coverage check is critical.
    assert run("status") == [("coverage", "critical", "new")]
    assert run("status") == []
    # Phase 4 catches up to 85 %: the dispatch resolves Phase 4, partial stays (15 % not ready).
    make_ready(settings, 0.85)
    assert run("trigger") == [("phase4_critical", "critical", "resolved")]
    drain(settings)
    assert run("status") == []  # 85 % predicted: better (warning), still a breach
    # The rest arrives: the retry publishes it and the partial warning clears.
    make_ready(settings, 1.0)
    assert run("retry") == [("partial_dispatch", "warning", "resolved")]
    drain(settings)
    assert run("status") == [("coverage", "critical", "resolved")]
    assert run("status") == []
    assert run("trigger") == []
    # Predictions withdrawn: a new coverage breach, and a new partial one on dispatch.
    unpredict(settings)
    assert run("status") == [("coverage", "critical", "new")]
    # The alert log holds every decision, suppressed ones included.
    statuses = query(
        settings,
        "select status, count(*) as n from nba_orchestration.alert_log"
        " where game_date = @game_date group by status order by status",
    )
    assert {row["status"]: row["n"] for row in statuses} == {"sent": 7, "suppressed": 5}


def test_worsened_and_repeated_after_the_interval(template, tmp_path):
    settings = copy_of(template, tmp_path)
    pager = Pager()

    def status() -> list[tuple[str, str, str]]:
        Dispatcher(settings, channels={"pager": pager}).status(GAME_DATE)
        return pager.take()

    make_ready(settings, 1.0)
    Dispatcher(settings, channels={"pager": pager}).retry(GAME_DATE)
    pager.take()
    drain(settings)
    execute(  # 80 % predicted: a warning
        settings,
        "update nba_predictions.player_prop_predictions set is_active = false"
        " where game_date = @game_date and player_lookup in ("
        "  select player_lookup from nba_orchestration.fct_player_dispatch_state"
        "  where game_date = @game_date order by player_lookup limit 70)",
    )
    assert status() == [("coverage", "warning", "new")]
    unpredict(settings)  # nothing predicted any more: worse
    assert status() == [("coverage", "critical", "worsened")]
    assert status() == []
    # A day later the breach persists: sent once more, then quiet again.
    execute(
        settings,
        "update nba_orchestration.alert_log set created_at = created_at - interval 25 hour"
        " where game_date = @game_date",
    )
    assert status() == [("coverage", "critical", "repeat")]
    assert status() == []


def test_a_failed_channel_is_retried_at_the_next_run_and_never_fails_dispatch(
    template, tmp_path, capsys
):
    settings = copy_of(template, tmp_path)
    pager, log = Pager(), Pager()
    pager.failing = True
    channels = {"log": log, "pager": pager}
    refused = Dispatcher(settings, channels=channels).trigger(GAME_DATE)
    assert (refused.outcome, refused.exit_code) == ("critical", 3)  # unchanged by the failure
    [alert] = refused.alerts
    assert (alert["status"], alert["channels"]) == ("failed", {"log": "sent", "pager": "failed"})
    assert log.take() == [("phase4_critical", "critical", "new")]
    failed = query(
        settings,
        "select error_message from nba_orchestration.alert_log where status = 'failed'",
    )
    assert failed == [{"error_message": "RuntimeError"}]  # the text may hold a secret
    assert "SECRET" not in capsys.readouterr().err
    pager.failing = False
    Dispatcher(settings, channels=channels).trigger(GAME_DATE)
    assert pager.take() == [("phase4_critical", "critical", "new")]  # the retry
    assert log.take() == []  # the log had it already


def test_levels_route_alerts_per_channel(template, tmp_path):
    settings = copy_of(template, tmp_path)
    wh = connect(settings)
    pager, mail = Pager(), Pager()
    routes = [
        alerts.channels.Route("pager", pager, frozenset({"critical"})),
        alerts.channels.Route("mail", mail, frozenset({"warning", "critical"})),
    ]
    try:
        observations = alert_rules.observe(wh, GAME_DATE, ["partial_dispatch", "coverage"])
        assert [(o.rule, o.level) for o in observations] == [
            ("partial_dispatch", "warning"), ("coverage", "critical"),
        ]  # fmt: skip
        alerts.deliver(wh, observations, run_id="r1", routes=routes)
    finally:
        wh.close()
    assert pager.take() == [("coverage", "critical", "new")]
    assert mail.take() == [("partial_dispatch", "warning", "new"), ("coverage", "critical", "new")]


def test_messages_carry_the_date_the_numbers_and_the_next_command(template, tmp_path):
    settings = copy_of(template, tmp_path)
    pager = Pager()
    Dispatcher(settings, channels={"pager": pager}).trigger(GAME_DATE)
    [alert] = pager.received
    expected = SPEC.counts().expected
    assert alert.title == f"Phase 4 insufficient for {GAME_DATE}"
    assert alert.message == (
        f"Phase 4 insufficient for {GAME_DATE}: 0 players ready (< 50) of {expected} expected"
    )
    assert alert.next_command == f"dispatcher plan --game-date {GAME_DATE}"
    assert alert.numbers["players_expected"] == expected
    assert alert.heading == f"[critical] Phase 4 insufficient for {GAME_DATE}"


def test_publish_failed_is_critical_with_the_count_and_no_partial_warning(template, tmp_path):
    from dispatcher.transport import PublishResult

    class Refusing:
        def publish(self, topic, messages, *, timeout):
            return [PublishResult(m.request_id, None, "unavailable") for m in messages]

        def close(self):
            pass

    settings = copy_of(template, tmp_path)
    make_ready(settings, 1.0)
    pager = Pager()
    result = Dispatcher(
        settings, channels={"pager": pager}, transport_factory=lambda wh: Refusing()
    ).trigger(GAME_DATE)
    assert (result.outcome, result.exit_code) == ("publish_failed", 1)
    [alert] = pager.received
    failed = result.requests_failed
    assert failed > 300  # every player with features: all of them failed
    assert (alert.rule, alert.level) == ("publish_failed", "critical")
    assert f"{failed} of {failed} prediction requests were not acknowledged" in alert.message
    pager.take()
    Dispatcher(settings, channels={"pager": pager}).retry(GAME_DATE)
    assert pager.take() == [("publish_failed", "critical", "resolved")]


def test_a_channel_that_failed_is_not_called_again_in_the_same_run(template, tmp_path):
    """A channel that is down costs a run one alert's timeouts, not one per rule; the
    alerts it missed are recorded failed, and the next run sends them."""
    settings = copy_of(template, tmp_path)
    wh = connect(settings)
    calls: list[str] = []

    def down(alert: alerts.Alert) -> None:
        calls.append(alert.rule)
        raise alerts.channels.ChannelError("connection refused")

    mail = Pager()
    try:
        observations = alert_rules.observe(wh, GAME_DATE, ["partial_dispatch", "coverage"])
        assert len(observations) == 2
        routes = [
            alerts.channels.Route("slack", down, frozenset({"warning", "critical"})),
            alerts.channels.Route("mail", mail, frozenset({"warning", "critical"})),
        ]
        first = alerts.deliver(wh, observations, run_id="r1", routes=routes)
        rows = wh.query(
            "select rule, channel, status, error_message from nba_orchestration.alert_log"
            " where game_date = @game_date and run_id = 'r1' order by rule, channel",
            {"game_date": GAME_DATE},
        )
        routes[0] = alerts.channels.Route("slack", mail, frozenset({"warning", "critical"}))
        alerts.deliver(wh, observations, run_id="r2", routes=routes)
    finally:
        wh.close()
    assert calls == ["partial_dispatch"]
    assert [d.statuses for d in first] == [
        {"slack": "failed", "mail": "sent"}, {"slack": "failed", "mail": "sent"},
    ]  # fmt: skip
    assert [(r["rule"], r["channel"], r["status"], r["error_message"]) for r in rows] == [
        ("coverage", "mail", "sent", None),
        ("coverage", "slack", "failed",
         "not tried: failed earlier in this run (connection refused)"),
        ("partial_dispatch", "mail", "sent", None),
        ("partial_dispatch", "slack", "failed", "connection refused"),
    ]  # fmt: skip
    # The next run sends both to the channel that is back, and nothing twice to mail.
    assert mail.take() == [
        ("partial_dispatch", "warning", "new"), ("coverage", "critical", "new"),
        ("partial_dispatch", "warning", "new"), ("coverage", "critical", "new"),
    ]  # fmt: skip

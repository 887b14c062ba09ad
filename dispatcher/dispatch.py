"""The dispatcher: read the marts, claim what is pending, publish it, confirm it.

Each public function is one command (trigger, start, retry, status, plan) and
returns a RunResult; none of them knows about click. Every invocation writes one
row to the run log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any

import alerts as alerting
from alerts import channels as alert_channels
from alerts import rules as alert_rules

from . import ledger, marts
from .config import Settings
from .logs import log
from .stages import Stages
from .transport import REQUEST_TOPIC, OutgoingMessage, PublishResult, Transport
from .warehouse import Warehouse, connect

RUN_LOG = "nba_orchestration.dispatch_runs"

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CRITICAL, EXIT_SLA_BREACH = 0, 1, 2, 3, 4
#: Nothing pending, but another dispatch's claims are not confirmed yet: try again later.
EXIT_IN_PROGRESS = 5


@dataclass
class RunResult:
    game_date: dt.date
    command: str
    trigger_source: str
    outcome: str = "ok"
    exit_code: int = EXIT_OK
    players_expected: int = 0
    players_ready: int = 0
    players_predicted: int = 0
    players_in_flight: int = 0
    requests_published: int = 0
    requests_failed: int = 0
    batch_id: str | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    duration_ms: int = 0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    error: str | None = None
    plan: list[dict[str, Any]] | None = None
    #: Phase 3 players not expected to play (plan only).
    players_filtered: int | None = None
    #: Per-date results (backfill only).
    dates: list[dict[str, Any]] | None = None
    #: Where the time went and how many warehouse statements the run sent.
    stages: Stages = field(default_factory=Stages, repr=False)
    #: Outcome `waiting` (start_check) or `in_progress`: seconds until a new call is
    #: worth it.
    retry_after_seconds: int | None = None
    #: Outcome `in_progress`: players held by other dispatches' unconfirmed claims.
    players_claimed: int = 0

    def as_json(self) -> dict[str, Any]:
        out = {
            "game_date": self.game_date.isoformat(),
            "trigger_source": self.trigger_source,
            "outcome": self.outcome,
            "players_expected": self.players_expected,
            "players_ready": self.players_ready,
            "players_predicted": self.players_predicted,
            "players_in_flight": self.players_in_flight,
            "requests_published": self.requests_published,
            "batch_id": self.batch_id,
            "alerts": self.alerts,
            "duration_ms": self.duration_ms,
        }
        if self.requests_failed:
            out["requests_failed"] = self.requests_failed
        if self.error:
            out["error"] = self.error
        if self.dates is not None:
            out["dates"] = self.dates
        if self.plan is not None:
            out["plan"] = self.plan
            out["players_filtered"] = self.players_filtered
        if self.retry_after_seconds is not None:
            out["retry_after_seconds"] = self.retry_after_seconds
        if self.players_claimed:
            out["players_claimed"] = self.players_claimed
        return out


class Dispatcher:
    """One configured dispatcher: settings, and how to reach the warehouse and transport."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport_factory: Callable[[Warehouse], Transport] | None = None,
        channels: dict[str, alerting.Channel] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._transport_factory = transport_factory or self._default_transport
        self.channels = channels
        self.sleep = sleep
        self.clock = clock

    # -- plumbing ----------------------------------------------------------------------

    @contextlib.contextmanager
    def warehouse(self) -> Iterator[Warehouse]:
        wh = connect(self.settings)
        try:
            yield wh
        finally:
            wh.close()

    def _default_transport(self, warehouse: Warehouse) -> Transport:
        if self.settings.transport == "local":
            from .transport_local import LocalOutboxTransport

            return LocalOutboxTransport(warehouse.outbox())
        from .transport_pubsub import PubSubTransport

        return PubSubTransport(
            self.settings.gcp_project or "",
            publish_timeout=self.settings.publish_timeout_seconds,
            credentials=self.settings.pubsub_credentials(),
        )

    @contextlib.contextmanager
    def _run(
        self,
        command: str,
        game_date: dt.date,
        trigger_source: str,
        warehouse: Warehouse | None = None,
    ) -> Iterator[RunResult]:
        result = RunResult(game_date=game_date, command=command, trigger_source=trigger_source)
        result.stages.attach(warehouse)
        started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        t0 = time.perf_counter()
        log("INFO", f"{command} started", game_date=game_date.isoformat(),
            run_id=result.run_id, trigger_source=trigger_source)  # fmt: skip
        try:
            yield result
        except Exception as exc:
            result.outcome, result.exit_code = "error", EXIT_ERROR
            result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            log("ERROR", result.error, game_date=game_date.isoformat(), run_id=result.run_id)
            if warehouse is not None and not result.players_expected:
                # The counts say where the date stands, even when the run failed.
                with contextlib.suppress(Exception):
                    self._counts(result, marts.coverage(warehouse, game_date))
        finally:
            result.duration_ms = int((time.perf_counter() - t0) * 1000)
            with result.stages.stage("run_log"):
                self._record(result, started, warehouse)
            log("INFO", f"{command} finished: {result.outcome}",
                game_date=game_date.isoformat(), run_id=result.run_id,
                outcome=result.outcome, requests_published=result.requests_published,
                duration_ms=result.duration_ms, stages_ms=result.stages.rounded(),
                round_trips=result.stages.round_trips())  # fmt: skip

    def _record(
        self, result: RunResult, started: dt.datetime, warehouse: Warehouse | None
    ) -> None:
        row = {
            "run_id": result.run_id, "game_date": result.game_date, "command": result.command,
            "trigger_source": result.trigger_source, "batch_id": result.batch_id,
            "outcome": result.outcome, "exit_code": result.exit_code,
            "error_message": result.error, "players_expected": result.players_expected,
            "players_ready": result.players_ready,
            "players_predicted": result.players_predicted,
            "players_in_flight": result.players_in_flight,
            "requests_published": result.requests_published, "started_at": started,
            "finished_at": started + dt.timedelta(milliseconds=result.duration_ms),
            "duration_ms": result.duration_ms,
        }  # fmt: skip
        columns = ", ".join(row)
        values = ", ".join(f"@{key}" for key in row)
        sql = f"insert into {RUN_LOG} ({columns}) values ({values})"
        try:
            if warehouse is not None:
                warehouse.execute(sql, row)
            else:
                with self.warehouse() as wh:
                    wh.execute(sql, row)
        except Exception as exc:  # the run log must never turn a good run into a failure
            log("ERROR", f"run log write failed: {type(exc).__name__}: {exc}",
                game_date=result.game_date.isoformat(), run_id=result.run_id)  # fmt: skip

    def _alert(
        self,
        wh: Warehouse,
        result: RunResult,
        rules: tuple[str, ...],
        *,
        publish: tuple[int, int] | None = None,
    ) -> None:
        """Ask alerts/ for ``rules`` on the run's date; what it sent goes in the result."""
        try:
            with result.stages.stage("alerts"):
                observations = alert_rules.observe(wh, result.game_date, rules, publish=publish)
                deliveries = alerting.deliver(
                    wh, observations, run_id=result.run_id, routes=self._routes(),
                    repeat=dt.timedelta(hours=self.settings.alert_repeat_hours),
                )  # fmt: skip
        except Exception as exc:  # alerting failures are logged, never fatal
            log("ERROR", f"alerting failed: {type(exc).__name__}: {exc}",
                game_date=result.game_date.isoformat(), run_id=result.run_id)  # fmt: skip
            deliveries = []
        result.alerts = [delivery.as_dict() for delivery in deliveries]

    def _routes(self) -> list[alert_channels.Route] | None:
        """The channels given to the Dispatcher (every level), else the configured ones."""
        if self.channels is None:
            return None
        return [
            alert_channels.Route(name, channel, frozenset({"warning", "critical"}))
            for name, channel in self.channels.items()
        ]

    @staticmethod
    def _no_games(result: RunResult) -> RunResult:
        """A date without a game on the NBA schedule: a quiet no-op, never an alert."""
        result.outcome, result.exit_code = "no_games", EXIT_OK
        log("INFO", f"no game on the NBA schedule for {result.game_date}: nothing to do",
            game_date=result.game_date.isoformat(), run_id=result.run_id)  # fmt: skip
        return result

    @staticmethod
    def _counts(result: RunResult, coverage: dict[str, Any] | None) -> None:
        if coverage:
            result.players_expected = coverage["players_expected"]
            result.players_ready = coverage["players_ready"]
            result.players_predicted = coverage["players_predicted"]
            result.players_in_flight = coverage["players_in_flight"]

    # -- dispatch ------------------------------------------------------------------------

    def _dispatch(
        self,
        wh: Warehouse,
        result: RunResult,
        *,
        refuse_critical: bool,
        force: bool = False,
    ) -> RunResult:
        game_date, stages = result.game_date, result.stages
        batch_id = result.batch_id = uuid.uuid4().hex
        # Built before anything is claimed: a transport that cannot be built claims nothing.
        with self._transport(wh) as transport:
            with stages.stage("claim"):
                # The claim itself refuses a critical date: no readiness read before it.
                claimed = ledger.claim(
                    wh, game_date, batch_id=batch_id, trigger_source=result.trigger_source,
                    force=force, unless_critical=refuse_critical and not force,
                )  # fmt: skip
            if claimed:
                with self._released_on_failure(wh, result, batch_id, game_date, game_date):
                    outcomes = self._publish(result, claimed, transport)
                self._settle(wh, result, outcomes, batch_id, game_date, game_date)
            else:
                result.batch_id = None
        with stages.stage("coverage"):
            coverage = marts.coverage(wh, game_date)
        self._counts(result, coverage)
        if not claimed and not is_game_day(coverage):
            return self._no_games(result)
        assert coverage is not None  # a game day has a coverage row
        if not claimed and refuse_critical and coverage["is_phase4_critical"] and not force:
            result.outcome, result.exit_code = "critical", EXIT_CRITICAL
            self._alert(wh, result, ("phase4_critical", "latency"))
            return result
        if result.requests_failed:
            result.outcome, result.exit_code = "publish_failed", EXIT_ERROR
            result.error = (
                f"{result.requests_failed} of {len(claimed)} publishes failed; "
                "their claims were released"
            )
        elif not claimed and coverage["players_claimed"]:
            self._in_progress(result, coverage)
        elif not claimed:
            result.outcome = "nothing_pending"
        else:
            ready = coverage is not None and coverage["is_phase4_ready"]
            result.outcome = "dispatched" if ready else "partial"
        # A failed publish or a refused date says more than "partial": no partial then.
        rules = tuple(
            rule for rule in alert_rules.DISPATCH_RULES
            if not (rule == "partial_dispatch" and result.requests_failed)
        )  # fmt: skip
        publish = (result.requests_failed, len(claimed)) if claimed else None
        self._alert(wh, result, rules, publish=publish)
        return result

    @staticmethod
    def _in_progress(result: RunResult, coverage: dict[str, Any]) -> None:
        """Nothing to claim because another dispatch holds unconfirmed claims: it is
        publishing them, or it died and they end with the claim lease. Not "nothing
        pending": the caller should come back (serve answers 503, so Pub/Sub redelivers)
        once the claims are confirmed or have ended."""
        result.outcome, result.exit_code = "in_progress", EXIT_IN_PROGRESS
        result.players_claimed = coverage["players_claimed"]
        ends = coverage["claims_expire_at"]
        left = (ends - ledger.utc_now()).total_seconds() if ends is not None else 0.0
        result.retry_after_seconds = max(1, int(left + 0.999))
        log("WARNING", f"{result.players_claimed} players are claimed by another dispatch that"
            f" has not confirmed its publish; they are pending again in"
            f" {result.retry_after_seconds} s unless it confirms",
            game_date=result.game_date.isoformat(), run_id=result.run_id,
            players_claimed=result.players_claimed)  # fmt: skip

    def _publish(
        self, result: RunResult, claimed: list[dict[str, Any]], transport: Transport
    ) -> list[PublishResult]:
        with result.stages.stage("messages"):
            messages = self._messages(result, claimed, result.batch_id or "")
        with result.stages.stage("publish"):
            return transport.publish(
                REQUEST_TOPIC, messages, timeout=self.settings.publish_timeout_seconds
            )

    @contextlib.contextmanager
    def _released_on_failure(
        self, wh: Warehouse, result: RunResult, batch_id: str, first: dt.date, last: dt.date
    ) -> Iterator[None]:
        """Between a claim and the transport's answer, any failure releases the batch's
        unconfirmed claims at once: nothing was acknowledged, so the players are pending
        again now rather than when their lease expires. (After the answer, claims stay:
        a message may have gone out.)"""
        try:
            yield
        except BaseException:
            try:
                ledger.release(wh, first, batch_id, through=last)
            except Exception as exc:  # the lease still expires: log, keep the first error
                log("ERROR", f"release after a failure failed: {type(exc).__name__}: {exc}",
                    game_date=result.game_date.isoformat(), run_id=result.run_id)  # fmt: skip
            raise

    @contextlib.contextmanager
    def _transport(self, wh: Warehouse) -> Iterator[Transport]:
        transport = self._transport_factory(wh)
        try:
            yield transport
        finally:
            with contextlib.suppress(Exception):
                transport.close()

    @staticmethod
    def _messages(
        result: RunResult, claimed: list[dict[str, Any]], batch_id: str
    ) -> list[OutgoingMessage]:
        requested_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return request_messages(claimed, batch_id, result.trigger_source, requested_at)

    def _settle(
        self,
        wh: Warehouse,
        result: RunResult,
        outcomes: list[PublishResult],
        batch_id: str,
        first: dt.date,
        last: dt.date,
    ) -> None:
        """Confirm what the transport acknowledged, release the rest of the batch's claims."""
        acknowledged = [(o.request_id, o.message_id or "") for o in outcomes if o.ok]
        for attempt in range(3):
            try:
                with result.stages.stage("confirm"):
                    ledger.confirm(wh, first, acknowledged, batch_id=batch_id, through=last)
                break
            except Exception:
                if attempt == 2:
                    # The claims stay (as leases): nothing is re-sent inside the lease.
                    log("ERROR", "confirm failed for acknowledged requests",
                        game_date=result.game_date.isoformat(), run_id=result.run_id,
                        acknowledged=acknowledged)  # fmt: skip
                    raise
                self.sleep(0.5 * (attempt + 1))
        result.requests_published += len(acknowledged)
        result.requests_failed += len(outcomes) - len(acknowledged)
        for failure in [o for o in outcomes if not o.ok][:5]:
            log("ERROR", f"publish failed: {failure.error}", request_id=failure.request_id,
                game_date=result.game_date.isoformat(), run_id=result.run_id)  # fmt: skip

    # -- commands ------------------------------------------------------------------------

    def trigger(self, game_date: dt.date, *, trigger_source: str = "manual") -> RunResult:
        """Primary path: dispatch what is pending now; never waits; refuses when critical."""
        with self.warehouse() as wh, self._run("trigger", game_date, trigger_source, wh) as result:
            self._dispatch(wh, result, refuse_critical=True)
        return result

    def retry(self, game_date: dt.date, *, trigger_source: str = "manual") -> RunResult:
        """Publish what is pending now, whatever the readiness."""
        with self.warehouse() as wh, self._run("retry", game_date, trigger_source, wh) as result:
            self._dispatch(wh, result, refuse_critical=False)
        return result

    def start(
        self,
        game_date: dt.date,
        *,
        wait_minutes: float = 30,
        poll_seconds: float = 60,
        force: bool = False,
        trigger_source: str = "manual",
    ) -> RunResult:
        """Scheduler backup: wait for readiness up to wait_minutes, then dispatch
        (partially unless Phase 4 is critical); --force skips the wait and
        re-requests predicted players."""
        with self._run("start", game_date, trigger_source) as result:
            deadline = self.clock() + wait_minutes * 60
            while not force:
                with self.warehouse() as wh:
                    readiness = marts.readiness(wh, game_date)
                # No game: nothing to wait for (the dispatch below says no_games).
                if not is_game_day(readiness) or (readiness or {}).get("is_ready"):
                    break
                remaining = deadline - self.clock()
                if remaining <= 0:
                    log("WARNING", f"Phase 4 not ready after {wait_minutes} min",
                        game_date=game_date.isoformat(), run_id=result.run_id)  # fmt: skip
                    break
                log("INFO", "waiting for Phase 4", game_date=game_date.isoformat(),
                    run_id=result.run_id,
                    players_ready=readiness and readiness["players_ready"])  # fmt: skip
                self.sleep(min(poll_seconds, remaining))
            with self.warehouse() as wh:
                result.stages.attach(wh)
                self._dispatch(wh, result, refuse_critical=True, force=force)
        return result

    def start_check(
        self,
        game_date: dt.date,
        *,
        scheduled_at: dt.datetime | None,
        wait_minutes: float = 30,
        now: dt.datetime | None = None,
        retry_seconds: float = 60,
        trigger_source: str = "scheduler",
    ) -> RunResult:
        """`start` without holding anything open: check readiness once. Ready (or no
        game): dispatch now. Not ready while the wait, measured from ``scheduled_at``
        (the scheduler's planned run time, aware UTC), is not over: outcome `waiting`
        (exit 3, recorded in the run log), nothing claimed, and ``retry_after_seconds``
        says when to call again. Not ready once the wait is over, or with no
        ``scheduled_at`` (a manual call: nobody will call again): dispatch as `start`
        does after its wait, partially when not critical, else `critical`."""
        now = now or dt.datetime.now(dt.UTC)
        with self.warehouse() as wh, self._run("start", game_date, trigger_source, wh) as result:
            readiness = marts.readiness(wh, game_date)
            if is_game_day(readiness) and not (readiness or {}).get("is_ready"):
                waited = (now - scheduled_at).total_seconds() if scheduled_at else None
                remaining = wait_minutes * 60 - waited if waited is not None else 0.0
                if remaining > 0:
                    self._counts(result, marts.coverage(wh, game_date))
                    result.outcome, result.exit_code = "waiting", EXIT_CRITICAL
                    result.retry_after_seconds = max(1, int(min(remaining, retry_seconds) + 0.999))
                    log("INFO", "waiting for Phase 4", game_date=game_date.isoformat(),
                        run_id=result.run_id, players_ready=result.players_ready,
                        wait_remaining_seconds=int(remaining))  # fmt: skip
                    return result
                log("WARNING", f"Phase 4 not ready after {wait_minutes:g} min"
                    if scheduled_at else "Phase 4 not ready; no schedule time: not waiting",
                    game_date=game_date.isoformat(), run_id=result.run_id)  # fmt: skip
            self._dispatch(wh, result, refuse_critical=True)
        return result

    def status(self, game_date: dt.date, *, trigger_source: str = "manual") -> RunResult:
        """Coverage check (07:00 PT): alert at fct_prediction_coverage's alert_level."""
        with self.warehouse() as wh, self._run("status", game_date, trigger_source, wh) as result:
            coverage = marts.coverage(wh, game_date)
            self._counts(result, coverage)
            if not is_game_day(coverage):
                return self._no_games(result)
            assert coverage is not None  # a game day has a coverage row
            level = coverage["alert_level"]
            result.outcome = "ok" if level == "ok" else "sla_breach"
            result.exit_code = EXIT_OK if level == "ok" else EXIT_SLA_BREACH
            self._alert(wh, result, alert_rules.STATUS_RULES)
        return result

    def backfill(
        self,
        start: dt.date,
        end: dt.date,
        *,
        chunk_days: int = 10,
        progress: Callable[[int], None] | None = None,
        trigger_source: str = "backfill",
    ) -> RunResult:
        """Publish what is pending on every date from start through end, chunk_days
        dates per claim and publish (memory stays bounded by one chunk). Dates with
        nothing pending are skipped, so a re-run resumes where a failed one stopped.

        The ledger work runs one chunk ahead on a second connection and thread: the
        warehouse releases the GIL while it claims chunk n+1 and confirms chunk n-1,
        so this thread only turns claimed rows into messages and hands them over."""
        if end < start:
            raise ValueError(f"backfill end {end} is before start {start}")
        chunks: list[tuple[dt.date, dt.date, str]] = []
        first = start
        while first <= end:
            last = min(first + dt.timedelta(days=chunk_days - 1), end)
            chunks.append((first, last, uuid.uuid4().hex))
            first = last + dt.timedelta(days=1)
        with (
            self.warehouse() as wh,
            self._run("backfill", start, trigger_source, wh) as result,
            self._transport(wh) as transport,
            self.warehouse() as ledger_wh,
            ThreadPoolExecutor(1, thread_name_prefix="backfill-ledger") as ledger_work,
        ):
            result.stages.attach(ledger_wh)
            published: dict[dt.date, int] = {}

            def claim(first: dt.date, last: dt.date, batch_id: str) -> list[dict[str, Any]]:
                with result.stages.stage("claim"):
                    return ledger.claim(
                        ledger_wh, first, batch_id=batch_id, trigger_source=trigger_source,
                        through=last,
                    )  # fmt: skip

            settling = []
            # The chunk claimed ahead on the ledger thread, until this thread takes it.
            ahead: tuple[dt.date, dt.date, str] | None = chunks[0]
            next_claim = ledger_work.submit(claim, *chunks[0])
            try:
                for n, (first, last, batch_id) in enumerate(chunks):
                    claimed, ahead = next_claim.result(), None
                    if n + 1 < len(chunks):
                        ahead = chunks[n + 1]
                        next_claim = ledger_work.submit(claim, *ahead)
                    if claimed:
                        result.batch_id = batch_id
                        with self._released_on_failure(ledger_wh, result, batch_id, first, last):
                            with result.stages.stage("messages"):
                                messages = self._messages(result, claimed, batch_id)
                            with result.stages.stage("publish"):
                                waiting = _submit(
                                    transport, messages, self.settings.publish_timeout_seconds
                                )
                        chunk = (
                            waiting,
                            {row["request_id"]: row["game_date"] for row in claimed},
                            batch_id, first, last,
                        )  # fmt: skip
                        settling.append(ledger_work.submit(
                            self._settle_chunk, ledger_wh, result, chunk, published
                        ))  # fmt: skip
                    if progress is not None:
                        progress((last - first).days + 1)
            except BaseException:
                # Claims made ahead and never handed over are released, not left leased.
                ledger_work.shutdown(cancel_futures=True)
                claimed_ahead = (
                    ahead is not None and next_claim.done() and not next_claim.cancelled()
                    and next_claim.exception() is None
                )  # fmt: skip
                if ahead is not None and claimed_ahead:
                    with contextlib.suppress(Exception):
                        ledger.release(ledger_wh, ahead[0], ahead[2], through=ahead[1])
                raise
            for settled in settling:
                settled.result()
            result.dates = []
            with result.stages.stage("coverage"):
                coverage = wh.query(
                    f"select * from {marts.COVERAGE}"
                    " where game_date between @game_date and @through and is_game_day"
                    " order by game_date",
                    {"game_date": start, "through": end},
                )
            for row in coverage:
                result.dates.append({
                    "game_date": row["game_date"].isoformat(),
                    "requests_published": published.get(row["game_date"], 0),
                    "players_expected": row["players_expected"],
                    "players_predicted": row["players_predicted"],
                    "players_in_flight": row["players_in_flight"],
                    "players_pending": row["players_pending"],
                })  # fmt: skip
                result.players_expected += row["players_expected"]
                result.players_ready += row["players_ready"]
                result.players_predicted += row["players_predicted"]
                result.players_in_flight += row["players_in_flight"]
            if result.requests_failed:
                result.outcome, result.exit_code = "publish_failed", EXIT_ERROR
                result.error = (
                    f"{result.requests_failed} publishes failed; their claims were released"
                )
            else:
                result.outcome = "dispatched" if result.requests_published else "nothing_pending"
        return result

    def _settle_chunk(self, wh, result, chunk, published: dict[dt.date, int]) -> None:
        waiting, dates, batch_id, first, last = chunk
        with result.stages.stage("publish_wait"):
            outcomes = waiting()
        self._settle(wh, result, outcomes, batch_id, first, last)
        for outcome in outcomes:
            if outcome.ok:
                day = dates[outcome.request_id]
                published[day] = published.get(day, 0) + 1

    def plan(self, game_date: dt.date, *, force: bool = False) -> RunResult:
        """Dry run: who would be published, and why each other expected player is not."""
        with self.warehouse() as wh, self._run("plan", game_date, "manual", wh) as result:
            readiness = marts.readiness(wh, game_date)
            self._counts(result, marts.coverage(wh, game_date))
            result.plan = [
                {
                    "player_lookup": player["player_lookup"],
                    "state": player["state"],
                    "action": "publish"
                    if (player["can_force_request"] if force else player["state"] == "pending")
                    else "skip",
                    "reason": player["reason"],
                }
                for player in marts.dispatch_state(wh, game_date)
            ]
            would = sum(1 for item in result.plan if item["action"] == "publish")
            if readiness is None or not readiness["is_game_day"]:
                result.outcome = "no_games"
            elif readiness["is_critical"]:
                result.outcome, result.exit_code = "critical", EXIT_CRITICAL
            else:
                result.outcome = "would_publish" if would else "nothing_pending"
            result.players_filtered = (
                (readiness or {}).get("players_in_slate", 0) - result.players_expected
            )
        return result


def is_game_day(row: dict[str, Any] | None) -> bool:
    """Whether a readiness or coverage row (None: the date has none) is a game day."""
    return row is not None and bool(row["is_game_day"])


def _submit(
    transport: Transport, messages: list[OutgoingMessage], timeout: float
) -> Callable[[], list[PublishResult]]:
    """Start publishing; the returned call waits for the results. Transports that
    cannot publish in the background publish here and now."""
    submit = getattr(transport, "submit", None)
    if submit is None:
        outcomes = transport.publish(REQUEST_TOPIC, messages, timeout=timeout)
        return lambda: outcomes
    return submit(REQUEST_TOPIC, messages, timeout=timeout).results


def request_messages(
    claimed: list[dict[str, Any]], batch_id: str, trigger_source: str, requested_at: str
) -> list[OutgoingMessage]:
    """The prediction request messages (docs/CONTRACT.md) of claimed requests.

    The marts render each player's fields as JSON (``request_fields``); here the claimed
    request id goes in front and the run's fields behind, so a message costs a string
    join and an encode.
    """
    run = json.dumps(
        {"batch_id": batch_id, "trigger_source": trigger_source, "requested_at": requested_at},
        separators=(",", ":"),
    )[1:]
    return [
        OutgoingMessage(
            request_id=row["request_id"],
            data=(
                f'{{"request_id":{_json_string(row["request_id"])},'
                f'{row["request_fields"][1:-1]},{run}'
            ).encode(),
            attributes={
                "request_id": row["request_id"],
                "game_date": row["game_date"].isoformat(),
                "player_lookup": row["player_lookup"],
            },
        )
        for row in claimed
    ]


def request_message(
    row: dict[str, Any], batch_id: str, trigger_source: str, requested_at: str
) -> OutgoingMessage:
    """The prediction request message of one claimed request (see request_messages)."""
    return request_messages([row], batch_id, trigger_source, requested_at)[0]

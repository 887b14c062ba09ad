"""BigQuery, the production warehouse, through google-cloud-bigquery.

Every job has a timeout; every statement is bound with query parameters. Why each
ledger operation is atomic here:

- **claim**: one MERGE into the ledger from the pending mart, keyed on the request id
  the mart computes for the next attempt. A MERGE with an UPDATE clause is mutating
  DML, which BigQuery serialises per table partition: two concurrent claims of a date
  cannot both commit, the later one aborts on the concurrent update
  (``TransactionConflict``, retried by the caller) and, had it run after, would match
  the winner's request ids and insert nothing. The claimed requests are then read
  back by batch id. (A script holding both statements would save a round trip, but
  the BigQuery API emulator the tests run on ignores query parameters in scripts.)
- **confirm**: one MERGE that sets ``published_at`` and ``message_id`` on the
  acknowledged requests and deletes the batch's other unconfirmed claims.
- **release**: one DELETE of the batch's unconfirmed claims.
- **upsert_predictions**: one MERGE per game date (one partition), updating a key when
  it matches and inserting it when it does not, so it never adds a second row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from .warehouse import (
    CLAIM_COLUMNS,
    DISPATCH_STATE,
    LEDGER,
    PENDING,
    PREDICTION_COLUMNS,
    PREDICTIONS,
    RELEASE,
    UNLESS_CRITICAL,
    TransactionConflict,
    WarehouseError,
    no_local_outbox,
    plain,
    prediction_arrays,
)

_CLAIM = """
merge into {ledger} as ledger
using (
    select
        next_request_id as request_id,
        game_date,
        player_lookup,
        game_id,
        next_attempt as attempt
    from {source}
    where
        game_date between @first and @last
        {forced}
        {guard}
) as claims
on ledger.game_date between @first and @last and ledger.request_id = claims.request_id
when matched then update set claimed_at = ledger.claimed_at
when not matched then insert (
    request_id, game_date, player_lookup, game_id, attempt,
    batch_id, trigger_source, claimed_at, published_at, message_id
) values (
    claims.request_id, claims.game_date, claims.player_lookup, claims.game_id,
    claims.attempt, @batch_id, @trigger_source, @claimed_at,
    cast(null as timestamp), cast(null as string)
)
"""

_CLAIMED = f"""
select
    ledger.request_id,
    ledger.attempt,
    ledger.game_date,
    ledger.player_lookup,
    ledger.game_id,
    players.request_fields
from {LEDGER} as ledger
inner join {DISPATCH_STATE} as players
    on ledger.game_date = players.game_date and ledger.player_lookup = players.player_lookup
where
    ledger.game_date between @first and @last
    and players.game_date between @first and @last
    and ledger.batch_id = @batch_id
order by ledger.game_date, ledger.player_lookup
"""

# Array parameters are zipped by offset: the emulator binds arrays in UPDATE ... FROM
# wrongly and `@arr[offset(i)]` off by one; MERGE over offset joins works on both.
_CONFIRM = f"""
merge into {LEDGER} as ledger
using (
    select request_id, message_id
    from unnest(@request_ids) as request_id with offset as request_position
    inner join unnest(@message_ids) as message_id with offset as message_position
        on request_position = message_position
) as acked
on ledger.game_date between @first and @last and ledger.request_id = acked.request_id
when matched then update set published_at = @published_at, message_id = acked.message_id
when not matched by source
    and ledger.game_date between @first and @last
    and ledger.batch_id = @batch_id
    and ledger.published_at is null
    then delete
"""

_UPSERT_PREDICTIONS = f"""
merge into {PREDICTIONS} as predictions
using (
    select
        prediction_id, system_id, player_lookup, game_id, predicted_points,
        confidence_score, recommendation, has_line, points_line
    from unnest(@prediction_ids) as prediction_id with offset as p0
    inner join unnest(@system_ids) as system_id with offset as p1 on p1 = p0
    inner join unnest(@player_lookups) as player_lookup with offset as p2 on p2 = p0
    inner join unnest(@game_ids) as game_id with offset as p3 on p3 = p0
    inner join unnest(@predicted_points) as predicted_points with offset as p4 on p4 = p0
    inner join unnest(@confidence_scores) as confidence_score with offset as p5 on p5 = p0
    inner join unnest(@recommendations) as recommendation with offset as p6 on p6 = p0
    inner join unnest(@has_lines) as has_line with offset as p7 on p7 = p0
    inner join unnest(@points_lines) as points_line with offset as p8 on p8 = p0
) as incoming
on
    predictions.game_date = @game_date
    and predictions.player_lookup = incoming.player_lookup
    and predictions.system_id = incoming.system_id
when matched then update set
    prediction_id = incoming.prediction_id,
    game_id = incoming.game_id,
    predicted_points = cast(incoming.predicted_points as numeric),
    confidence_score = cast(incoming.confidence_score as numeric),
    recommendation = incoming.recommendation,
    current_points_line = if(incoming.has_line, cast(incoming.points_line as numeric), null),
    is_active = true,
    created_at = @created_at
when not matched then insert ({PREDICTION_COLUMNS}) values (
    incoming.prediction_id, incoming.system_id, incoming.player_lookup, incoming.game_id,
    @game_date,
    cast(incoming.predicted_points as numeric),
    cast(incoming.confidence_score as numeric),
    incoming.recommendation,
    if(incoming.has_line, cast(incoming.points_line as numeric), null),
    true,
    @created_at
)
"""


class BigQueryWarehouse:
    """google-cloud-bigquery with named parameters and bounded time on every call."""

    kind = "bigquery"

    def __init__(
        self,
        *,
        project: str,
        api_endpoint: str | None = None,
        location: str = "US",
        timeout: float = 60.0,
        client=None,
        credentials=None,
    ) -> None:
        """``credentials``: google-auth credentials (a keyfile's service account, see
        Settings.bigquery_credentials); None: Application Default Credentials. With
        ``api_endpoint`` (the emulator) the client is anonymous whatever they are."""
        from google.cloud import bigquery

        self._bigquery = bigquery
        self.timeout = timeout
        self.location = location
        self.statements = 0
        if client is None:
            kwargs: dict[str, Any] = {"project": project, "location": location}
            if api_endpoint:
                from google.api_core.client_options import ClientOptions
                from google.auth.credentials import AnonymousCredentials

                kwargs["client_options"] = ClientOptions(api_endpoint=api_endpoint)
                kwargs["credentials"] = AnonymousCredentials()
            elif credentials is not None:
                kwargs["credentials"] = credentials
            client = bigquery.Client(**kwargs)
        self.client = client

    # -- statements ----------------------------------------------------------------------

    def _parameter(self, name: str, value: Any):
        bq = self._bigquery
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            items = list(value)
            kind = _scalar_type(items[0]) if items else "STRING"
            return bq.ArrayQueryParameter(name, kind, items)
        return bq.ScalarQueryParameter(name, _scalar_type(value), value)

    def _job(self, sql: str, params: Mapping[str, Any] | None):
        config = self._bigquery.QueryJobConfig(
            query_parameters=[self._parameter(k, v) for k, v in (params or {}).items()],
            job_timeout_ms=int(self.timeout * 1000),
        )
        # The client's default retry keeps trying a refused or silent endpoint for 600 s
        # whatever `timeout` says (that bounds each HTTP request, not the retries).
        retry = self._bigquery.DEFAULT_RETRY.with_timeout(self.timeout)
        self.statements += 1
        try:
            job = self.client.query(
                sql, job_config=config, timeout=self.timeout, retry=retry, job_retry=None
            )
            return job, job.result(timeout=self.timeout, retry=retry)
        except Exception as exc:  # google.api_core raises many types; one error for callers
            raise WarehouseError(f"BigQuery query failed: {exc}") from exc

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        _, rows = self._job(sql, params)
        return [{key: plain(value) for key, value in row.items()} for row in rows]

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._job(sql, params)

    def _mutate(self, sql: str, params: Mapping[str, Any]) -> None:
        """Mutating DML; a concurrent-update abort becomes TransactionConflict."""
        try:
            self._job(sql, params)
        except WarehouseError as exc:
            text = str(exc).lower()
            if "concurrent update" in text or "aborted" in text or "serialize access" in text:
                raise TransactionConflict(str(exc)) from exc
            raise

    # -- the ledger ----------------------------------------------------------------------

    def claim(
        self,
        first: dt.date,
        last: dt.date,
        *,
        batch_id: str,
        trigger_source: str,
        claimed_at: dt.datetime,
        force: bool = False,
        unless_critical: bool = False,
    ) -> list[dict[str, Any]]:
        merge = _CLAIM.format(
            ledger=LEDGER,
            source=DISPATCH_STATE if force else PENDING,
            forced="and can_force_request" if force else "",
            guard=UNLESS_CRITICAL if unless_critical else "",
        )
        params: dict[str, Any] = {
            "first": first, "last": last, "batch_id": batch_id,
            "trigger_source": trigger_source, "claimed_at": claimed_at,
        }  # fmt: skip
        self._mutate(merge, params)
        rows = self.query(_CLAIMED, {"first": first, "last": last, "batch_id": batch_id})
        return [{name: row[name] for name in CLAIM_COLUMNS} for row in rows]

    def confirm(
        self,
        first: dt.date,
        last: dt.date,
        *,
        batch_id: str,
        acknowledged: Sequence[tuple[str, str]],
        published_at: dt.datetime,
    ) -> None:
        self._mutate(_CONFIRM, {
            "first": first, "last": last, "batch_id": batch_id,
            "published_at": published_at,
            "request_ids": [request for request, _ in acknowledged],
            "message_ids": [message for _, message in acknowledged],
        })  # fmt: skip

    def release(self, first: dt.date, last: dt.date, *, batch_id: str) -> None:
        self._mutate(RELEASE, {"first": first, "last": last, "batch_id": batch_id})

    # -- predictions (the reference worker) ----------------------------------------------

    def upsert_predictions(
        self, rows: Sequence[Mapping[str, Any]], *, created_at: dt.datetime
    ) -> None:
        by_date: dict[dt.date, list[Mapping[str, Any]]] = {}
        for row in rows:
            by_date.setdefault(row["game_date"], []).append(row)
        for game_date, date_rows in sorted(by_date.items()):
            params: dict[str, Any] = prediction_arrays(date_rows)
            del params["game_dates"]
            self._mutate(
                _UPSERT_PREDICTIONS, {**params, "game_date": game_date, "created_at": created_at}
            )

    def outbox(self):
        raise no_local_outbox()

    def close(self) -> None:
        self.client.close()


def _scalar_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, Decimal):
        return "NUMERIC"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    return "STRING"

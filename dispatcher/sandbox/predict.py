"""Turns prediction requests into predictions: parse each request, load the player's
Phase 4 features, run the required systems, upsert their rows (player_prop_predictions).

Per batch: one features query and one existing-predictions query per game_date, then
one write: on DuckDB one transaction (delete the keys, insert the rows), on BigQuery one
MERGE per game_date. Rows are keyed on (game_date, player_lookup, system_id) and
``prediction_id`` is ``game_date/player_lookup/system_id``. A row identical to the one
already there is not rewritten at all (its ``created_at`` stays, so the latency mart
does not move), and a request whose rows were all already there counts as a duplicate.
A malformed body, or a player with no production-ready features row, is logged and
counted as failed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..logs import log
from ..project import required_systems
from ..warehouse import TransactionConflict, Warehouse, WarehouseError
from . import systems

PREDICTIONS = "nba_predictions.player_prop_predictions"
FEATURES = "nba_orchestration.int_player_features"
WRITE_ATTEMPTS = 3
MAX_PLAYER_LOOKUP = 200
#: Numeric columns hold two decimals: closer than this is the same value.
_SAME = 0.005


class MalformedRequest(ValueError):
    """A body that is not the prediction request message (docs/CONTRACT.md, Messages)."""


class MissingSystem(LookupError):
    """The dbt var required_systems names a system that systems.SYSTEMS does not implement."""


@dataclass
class BatchResult:
    """What one batch came to (a run of the worker adds them up)."""

    #: Messages taken off the outbox / subscription (and acknowledged).
    received: int = 0
    #: Requests whose predictions were inserted or changed.
    written_players: int = 0
    #: Requests whose predictions were all already there, identical (nothing written),
    #: or that repeated a player already in the same batch.
    duplicates: int = 0
    #: Malformed requests and players without a production-ready features row.
    failed: int = 0

    def as_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class PredictionRequest:
    request_id: str | None
    game_date: dt.date
    player_lookup: str
    game_id: str | None
    line: float | None


@dataclass
class Delivery:
    """One message, whichever source it came from."""

    data: bytes | str
    message_id: str
    handle: Any = None


# --- requests ---------------------------------------------------------------------------


def parse_request(data: bytes | str) -> PredictionRequest:
    """Validate one prediction request body (docs/CONTRACT.md, Messages);
    MalformedRequest says what is wrong."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        body = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRequest(f"body is not JSON: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise MalformedRequest(f"body must be a JSON object, got {type(body).__name__}")

    player = body.get("player_lookup")
    if not isinstance(player, str) or not player or len(player) > MAX_PLAYER_LOOKUP:
        raise MalformedRequest("player_lookup must be a non-empty string")
    raw_date = body.get("game_date")
    if not isinstance(raw_date, str) or len(raw_date) != 10:
        raise MalformedRequest("game_date must be a YYYY-MM-DD string")
    try:
        game_date = dt.date.fromisoformat(raw_date)
    except ValueError:
        raise MalformedRequest(f"game_date {raw_date!r} is not a date") from None

    lines = body.get("line_values", [])
    if not isinstance(lines, list):
        raise MalformedRequest("line_values must be a list of numbers")
    line = None
    if lines:
        first = lines[0]
        if isinstance(first, bool) or not isinstance(first, int | float):
            raise MalformedRequest("line_values[0] must be a number")
        if not math.isfinite(first) or not 0 <= first <= 200:
            raise MalformedRequest(f"line_values[0] {first!r} is not a points line")
        line = float(first)

    game_id = body.get("game_id")
    if game_id is not None and not isinstance(game_id, str):
        raise MalformedRequest("game_id must be a string")
    request_id = body.get("request_id")
    return PredictionRequest(
        request_id=request_id if isinstance(request_id, str) else None,
        game_date=game_date,
        player_lookup=player,
        game_id=game_id,
        line=line,
    )


# --- reads ------------------------------------------------------------------------------

# Phase 4 features through the model the marts use: the latest row per player, and
# that row's readiness. The `in (select * from unnest(@x))` form: on the BigQuery
# emulator `in unnest(@x)` silently matches nothing inside some statements.
_FEATURES_SQL = f"""
select player_lookup, game_id, features, feature_names
from {FEATURES}
where
    game_date = @game_date
    and player_lookup in (select * from unnest(@players))
    and is_production_ready
"""

_EXISTING_SQL = f"""
select
    player_lookup, system_id, game_id, predicted_points, confidence_score,
    recommendation, current_points_line, is_active
from {PREDICTIONS}
where game_date = @game_date and player_lookup in (select * from unnest(@players))
"""


def load_features(
    warehouse: Warehouse, game_date: dt.date, players: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """player_lookup -> {"game_id", "features": {name: value}} for the players whose
    latest Phase 4 row is production ready. One query."""
    if not players:
        return {}
    rows = warehouse.query(_FEATURES_SQL, {"game_date": game_date, "players": list(players)})
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        names, values = row["feature_names"] or [], row["features"] or []
        found[row["player_lookup"]] = {
            "game_id": row["game_id"],
            "features": {
                name: float(value)
                for name, value in zip(names, values, strict=False)
                if value is not None
            },
        }
    return found


def _existing(
    warehouse: Warehouse, game_date: dt.date, players: Sequence[str]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    rows = warehouse.query(_EXISTING_SQL, {"game_date": game_date, "players": list(players)})
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault((row["player_lookup"], row["system_id"]), []).append(row)
    return out


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) < _SAME


def _unchanged(existing: list[dict[str, Any]], row: dict[str, Any]) -> bool:
    """Exactly one row for the key, active and equal to what would be written."""
    if len(existing) != 1:
        return False
    old = existing[0]
    return (
        bool(old["is_active"])
        and old["game_id"] == row["game_id"]
        and old["recommendation"] == row["recommendation"]
        and _close(old["predicted_points"], row["predicted_points"])
        and _close(old["confidence_score"], row["confidence_score"])
        and _close(old["current_points_line"], row["current_points_line"])
    )


def required_implementations() -> dict[str, systems.System]:
    """system id -> implementation, for exactly the systems of the dbt var
    required_systems, in its order; MissingSystem if one has no implementation."""
    required = required_systems()
    missing = [system_id for system_id in required if system_id not in systems.SYSTEMS]
    if missing:
        raise MissingSystem(
            f"var required_systems names {', '.join(missing)}, which"
            f" dispatcher.sandbox.systems does not implement (it has"
            f" {', '.join(systems.SYSTEMS)}): add them to systems.SYSTEMS"
        )
    return {system_id: systems.SYSTEMS[system_id] for system_id in required}


def prediction_rows(
    request: PredictionRequest,
    game_id: str,
    features: dict[str, float],
    *,
    implementations: Mapping[str, systems.System] | None = None,
) -> list[dict[str, Any]]:
    """A row per required system for one request (created_at is set by the writer).

    The systems predict against the request's line; without one, against the
    features' vegas_points_line (current_points_line then stays null).
    ``implementations`` defaults to :func:`required_implementations`.
    """
    if implementations is None:
        implementations = required_implementations()
    line = request.line
    if line is None:
        line = features.get("vegas_points_line")
    if line is None or not math.isfinite(line):
        raise MalformedRequest("no points line in the request or the features")
    rows = []
    predictions = systems.predict(features, line, implementations)
    for system_id, (points, confidence, call) in predictions.items():
        rows.append(
            {
                "prediction_id": f"{request.game_date.isoformat()}/{request.player_lookup}/"
                f"{system_id}",
                "system_id": system_id,
                "player_lookup": request.player_lookup,
                "game_id": game_id,
                "game_date": request.game_date,
                "predicted_points": float(points),
                "confidence_score": float(confidence),
                "recommendation": call,
                "current_points_line": request.line,
            }
        )
    return rows


# --- writes -----------------------------------------------------------------------------


def write_predictions(
    warehouse: Warehouse,
    rows: Sequence[dict[str, Any]],
    *,
    created_at: dt.datetime | None = None,
    attempts: int = WRITE_ATTEMPTS,
) -> int:
    """Upsert prediction rows keyed on (game_date, player_lookup, system_id); returns
    how many rows were written. Every written row is active, created at ``created_at``
    (default now, UTC).

    The warehouse makes each write atomic (see its module). A failed write is retried
    (``attempts`` in all), then raises.
    """
    unique = list({(r["game_date"], r["player_lookup"], r["system_id"]): r for r in rows}.values())
    if not unique:
        return 0
    created = created_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if created.tzinfo is not None:
        created = created.astimezone(dt.UTC).replace(tzinfo=None)

    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            warehouse.upsert_predictions(unique, created_at=created)
            return len(unique)
        except (TransactionConflict, WarehouseError):
            if attempt == attempts:
                raise
            time.sleep(delay * (1 + random.random()))
            delay *= 2
    return 0  # unreachable


# --- one batch --------------------------------------------------------------------------


def _log_failure(level: str, reason: str, delivery: Delivery, **fields: Any) -> None:
    log(level, f"prediction request failed: {reason}", message_id=delivery.message_id, **fields)


def process_batch(warehouse: Warehouse, deliveries: Sequence[Delivery]) -> BatchResult:
    """Predict and write one batch; the tally (received, written, duplicates, failed).

    Raises when the write fails (nothing of the batch is then acknowledged), and
    MissingSystem before reading anything if a required system has no implementation.
    """
    implementations = required_implementations()
    tally = BatchResult(received=len(deliveries))
    by_date: dict[dt.date, list[tuple[Delivery, PredictionRequest]]] = {}
    seen: set[tuple[dt.date, str]] = set()
    for delivery in deliveries:
        try:
            request = parse_request(delivery.data)
        except MalformedRequest as exc:
            tally.failed += 1
            _log_failure("ERROR", str(exc), delivery)
            continue
        key = (request.game_date, request.player_lookup)
        if key in seen:
            tally.duplicates += 1
            continue
        seen.add(key)
        by_date.setdefault(request.game_date, []).append((delivery, request))

    to_write: list[dict[str, Any]] = []
    for game_date, items in sorted(by_date.items()):
        players = [request.player_lookup for _, request in items]
        features = load_features(warehouse, game_date, players)
        existing = _existing(warehouse, game_date, players)
        for delivery, request in items:
            context = dict(
                request_id=request.request_id,
                game_date=game_date.isoformat(),
                player_lookup=request.player_lookup,
            )
            found = features.get(request.player_lookup)
            if found is None:
                tally.failed += 1
                _log_failure("WARNING", "no production-ready features row", delivery, **context)
                continue
            try:
                rows = prediction_rows(
                    request,
                    request.game_id or found["game_id"],
                    found["features"],
                    implementations=implementations,
                )
            except MalformedRequest as exc:
                tally.failed += 1
                _log_failure("ERROR", str(exc), delivery, **context)
                continue
            changed = [
                row
                for row in rows
                if not _unchanged(existing.get((row["player_lookup"], row["system_id"]), []), row)
            ]
            if changed:
                tally.written_players += 1
                to_write.extend(changed)
            else:
                tally.duplicates += 1
    write_predictions(warehouse, to_write)
    return tally

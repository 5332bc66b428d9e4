"""Turn Celery signals (and ``track()``) into ``JobRun`` rows through a per-process buffered writer.

Every receiver builds a small dict of the columns it knows and hands it to the process's buffer. The
buffer merges events for the same task id and flushes them in bulk with one upsert on the task id, whose
``ON CONFLICT`` clause applies the same monotonic merge rules in SQL, so events from other processes and
hosts (producer, worker parent, pool child) combine correctly in whatever order they land.

A failing write never reaches the user's task: receivers swallow and log every exception, and a failed
flush keeps its rows in memory and is retried with backoff (see ``MONITORING['MAX_BUFFERED_EVENTS']``).
"""

from __future__ import annotations

import atexit
import fnmatch
import functools
import json
import logging
import os
import threading
import time
import traceback as tb_module
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import DataError, IntegrityError, connections

from . import conf
from .masking import get_masking_hook
from .models import STATE_RANK, JobOrigin, JobRun, JobState

logger = logging.getLogger("monitoring.capture")

# Columns in the upsert and how a new event combines with the stored row (see _merge and _upsert_sql).
FIRST_WINS = ("task_name", "origin", "queue", "routing_key", "args", "kwargs", "priority", "eta", "expires",
              "parent_id", "root_id", "group_id", "retry_of", "published_at")
LATEST_WINS = ("received_at", "started_at", "retries", "updated_at")  # the retried attempt's values
OUTCOME = ("result", "exception_type", "exception_message", "traceback", "finished_at", "runtime")
COLUMNS = ("task_id", "state", *FIRST_WINS, "arguments_truncated", *LATEST_WINS, *OUTCOME, "worker",
           "created_at", "wait_time")
_COLUMN_LIST = ", ".join(COLUMNS)
_TEXT_COLUMNS = {"task_name", "origin", "queue", "routing_key", "parent_id", "root_id", "group_id", "retry_of",
                 "result", "exception_type", "exception_message", "traceback", "worker"}

# Set on a message by the publishing process's capture (Celery passes custom headers on to task.request).
ARGUMENTS_RECORDED_HEADER = "jobmonitor_args_recorded"
FLUSHER_PAUSE = 1.0  # seconds the flusher thread waits after a failure of its own before it goes on
UNSERIALIZABLE = "__unserializable__"
TRUNCATED = "__truncated__"


def now() -> datetime:
    return datetime.now(UTC)


# --- building rows --------------------------------------------------------------------------------------

def prepare_arguments(value: Any, *, task_name: str, field: str) -> tuple[Any, bool]:
    """Mask, JSON-check and cap one of args/kwargs; return ``(stored value, truncated?)``.

    A value that is not JSON (pickle serializer, custom objects) is kept as a readable repr with a
    marker instead of being dropped; a value over the size cap is kept as a preview with a marker.
    """
    if value is None:
        return None, False
    try:
        value = get_masking_hook()(value, task_name=task_name, field=field)
        text = json.dumps(value, cls=DjangoJSONEncoder)
    except Exception:  # the task's own objects: anything may raise in repr/json
        return {UNSERIALIZABLE: True, "repr": _safe_repr(value)[: conf.get("MAX_ARGUMENTS_BYTES")]}, True
    limit = conf.get("MAX_ARGUMENTS_BYTES")
    if len(text) > limit:
        return {TRUNCATED: True, "bytes": len(text), "limit": limit, "preview": text[:limit]}, True
    return json.loads(text), False


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _cap(text: str | None, key: str) -> str:
    if not text:
        return ""
    limit = conf.get(key)
    return text if len(text) <= limit else text[:limit] + f"... [truncated, {len(text)} chars]"


def make_row(task_id: str, state: str, **fields: Any) -> dict[str, Any]:
    """Return an event row: the columns this event knows, the rest left out."""
    stamp = now()
    first = next((fields[k] for k in ("published_at", "received_at", "started_at") if fields.get(k)), stamp)
    row = {"task_id": task_id, "state": state, "created_at": first, "updated_at": stamp}
    row.update({k: v for k, v in fields.items() if v is not None})
    for key in ("args", "kwargs"):
        if key in fields and fields[key] is not None:
            row[key], truncated = prepare_arguments(fields[key], task_name=fields.get("task_name", ""), field=key)
            row["arguments_truncated"] = row.get("arguments_truncated", False) or truncated
    for key, cap in (("result", "MAX_RESULT_CHARS"), ("traceback", "MAX_TRACEBACK_CHARS"),
                     ("exception_message", "MAX_RESULT_CHARS")):
        if key in row:
            row[key] = _cap(row[key], cap)
    for key, value in row.items():
        if isinstance(value, str):
            # PostgreSQL rejects NUL in text; an over-long name would fail the whole bulk write.
            row[key] = _text(key, value)
    return row


_MAX_LENGTHS = {f.name: f.max_length for f in JobRun._meta.concrete_fields if getattr(f, "max_length", None)}


def _text(key: str, value: str) -> str:
    """``value`` as make_row stores a text column: NUL replaced, cut to the column's length."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    limit = _MAX_LENGTHS.get(key)
    return value[:limit] if limit is not None and len(value) > limit else value


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Combine two events for one task id in memory, with the rules the SQL upsert applies."""
    merged = dict(old)
    newer = STATE_RANK[new["state"]] > STATE_RANK[old["state"]]
    if newer:
        merged["state"] = new["state"]
    for key in FIRST_WINS:
        if merged.get(key) in (None, "") and new.get(key) not in (None, ""):
            merged[key] = new[key]
            if key in ("args", "kwargs"):
                merged["arguments_truncated"] = merged.get("arguments_truncated") or new.get("arguments_truncated")
    for key in LATEST_WINS:
        if new.get(key) is not None and (merged.get(key) is None or new[key] > merged[key]):
            merged[key] = new[key]
    for key in OUTCOME:
        if newer:
            merged[key] = new.get(key)
        elif merged.get(key) in (None, ""):
            merged[key] = new.get(key, merged.get(key))
    if new.get("worker"):
        merged["worker"] = new["worker"]
    merged["created_at"] = min(old["created_at"], new["created_at"])
    if merged.get("wait_time") is None:
        merged["wait_time"] = new.get("wait_time")
    return merged


def _fill_wait_time(row: dict[str, Any]) -> None:
    start, origin = row.get("started_at"), row.get("published_at") or row.get("received_at")
    if row.get("wait_time") is None and start and origin:
        row["wait_time"] = max((start - origin).total_seconds(), 0.0)


# --- writing --------------------------------------------------------------------------------------------

def _rank_sql(expr: str) -> str:
    whens = " ".join(f"WHEN '{state}' THEN {rank}" for state, rank in STATE_RANK.items())
    return f"(CASE {expr} {whens} ELSE 0 END)"


def _seconds_sql(vendor: str, later: str, earlier: str) -> str:
    if vendor == "postgresql":
        return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def _conflict_sql(table: str, vendor: str) -> str:
    """Return the ``ON CONFLICT (task_id) DO UPDATE`` clause with the monotonic merge rules."""
    t, x = f'"{table}"', "excluded"
    newer = f"{_rank_sql(f'{x}.state')} > {_rank_sql(f'{t}.state')}"

    def empty_to_null(ref: str, col: str) -> str:
        return f"NULLIF({ref}.{col}, '')" if col in _TEXT_COLUMNS else f"{ref}.{col}"

    sets = [f"state = CASE WHEN {newer} THEN {x}.state ELSE {t}.state END"]
    for col in FIRST_WINS:
        fallback = f"COALESCE({x}.{col}, '')" if col in _TEXT_COLUMNS else f"{x}.{col}"
        sets.append(f"{col} = COALESCE({empty_to_null(t, col)}, {fallback})")
    sets.append(f"arguments_truncated = CASE WHEN {t}.args IS NULL AND {t}.kwargs IS NULL "
                f"THEN {x}.arguments_truncated ELSE {t}.arguments_truncated END")
    for col in LATEST_WINS:
        # GREATEST ignores NULLs on PostgreSQL but not SQLite's MAX(): coalesce both sides first.
        greatest = "GREATEST" if vendor == "postgresql" else "MAX"
        sets.append(f"{col} = {greatest}(COALESCE({t}.{col}, {x}.{col}), COALESCE({x}.{col}, {t}.{col}))")
    for col in OUTCOME:
        keep = f"COALESCE({empty_to_null(t, col)}, {x}.{col})"
        sets.append(f"{col} = CASE WHEN {newer} THEN {x}.{col} ELSE {keep} END")
    sets.append(f"worker = COALESCE(NULLIF({x}.worker, ''), {t}.worker)")
    least = "LEAST" if vendor == "postgresql" else "MIN"
    sets.append(f"created_at = {least}({t}.created_at, {x}.created_at)")
    start = f"COALESCE({x}.started_at, {t}.started_at)"
    origin = f"COALESCE({t}.published_at, {x}.published_at, {t}.received_at, {x}.received_at)"
    # Wait time runs from publication (or, for jobs published elsewhere, from receipt) to the first start.
    # A value measured from receipt is replaced once the publish event arrives; one from publication stays
    # (a retried attempt's later start does not change it).
    sets.append(f"wait_time = CASE WHEN {t}.wait_time IS NOT NULL AND ({t}.published_at IS NOT NULL "
                f"OR {x}.published_at IS NULL) THEN {t}.wait_time ELSE {_seconds_sql(vendor, start, origin)} END")
    return f"ON CONFLICT (task_id) DO UPDATE SET {', '.join(sets)}"


@functools.lru_cache(maxsize=64)
def _upsert_sql(table: str, vendor: str, rows: int) -> str:
    """Build ``INSERT ... VALUES (...), ... ON CONFLICT`` for ``rows`` rows (SQLite 3.24+, other databases)."""
    placeholders = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    values = ", ".join([placeholders] * rows)
    return f'INSERT INTO "{table}" ({_COLUMN_LIST}) VALUES {values} {_conflict_sql(table, vendor)}'


@functools.lru_cache(maxsize=8)
def _unnest_upsert_sql(table: str, types: tuple[str, ...]) -> str:
    """Build the PostgreSQL upsert that takes one array per column, whatever the number of rows.

    A multi-row VALUES list costs the server parse and analysis per value (28 per row); one array
    literal per column is parsed once, which cut the server's CPU per row by a fifth (bench
    --write-path) and keeps the statement text, and so its parse, the same size for any flush.
    """
    arrays = ", ".join(f"%s::{db_type}[]" for db_type in types)
    return f'INSERT INTO "{table}" ({_COLUMN_LIST}) SELECT * FROM unnest({arrays}) {_conflict_sql(table, "postgresql")}'


_DEFAULTS = {"arguments_truncated": False, "retries": 0, "origin": JobOrigin.CELERY}


def _json_text(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder)


def _adapters(connection: Any) -> list[Any]:
    """One cheap adapter per column: Django's per-field get_db_prep_save was a third of the write time."""
    from django.db import models

    adapters: list[Any] = []
    for name in COLUMNS:
        field = JobRun._meta.get_field(name)
        if isinstance(field, models.JSONField):
            adapters.append(_json_text)
        elif isinstance(field, models.DateTimeField):
            adapters.append(connection.ops.adapt_datetimefield_value)
        else:
            adapters.append(None)
    return adapters


def _text_item(value: Any) -> str:
    # Inside a quoted array element only the backslash and the double quote need escaping.
    text = str(value)
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text + '"'


def _json_item(value: Any) -> str:
    return _text_item(_json_text(value))


def _bool_item(value: Any) -> str:
    return "t" if value else "f"


@functools.lru_cache(maxsize=8)
def _array_columns(alias: str) -> tuple[list[tuple[str, Any, Any]], tuple[str, ...]]:
    """Per column: its name, its default, and how a non-NULL value is written as an array element; and
    the columns' database types."""
    from django.db import models

    elements: list[tuple[str, Any, Any]] = []
    for name in COLUMNS:
        field = JobRun._meta.get_field(name)
        if isinstance(field, models.JSONField):
            element = _json_item
        elif isinstance(field, models.DateTimeField):
            element = datetime.isoformat  # ISO 8601 with its UTC offset: no character that needs quoting
        elif isinstance(field, models.BooleanField):
            element = _bool_item
        elif isinstance(field, models.IntegerField | models.FloatField):
            element = str
        else:
            element = _text_item
        elements.append((name, _DEFAULTS.get(name, "" if name in _TEXT_COLUMNS else None), element))
    types = tuple(JobRun._meta.get_field(name).db_type(connections[alias]) for name in COLUMNS)
    return elements, types


def _write_arrays(cursor: Any, connection: Any, rows: list[dict[str, Any]]) -> None:
    elements, types = _array_columns(connection.alias)
    params = []
    nulls = None
    for name, default, element in elements:
        values = [row.get(name) for row in rows]
        if default is not None:
            values = [default if value is None else value for value in values]
        if not any(value is not None for value in values):
            # Most columns of a flush are unset in every row (a finished task has no eta, no traceback...).
            nulls = nulls or "{" + ",".join(["NULL"] * len(rows)) + "}"
            params.append(nulls)
            continue
        if element is _text_item:
            # Text columns repeat a few values through a flush (state, task name, queue, worker, ""): each
            # distinct value is quoted once.
            quoted = {value: _text_item(value) for value in set(values) if value is not None}
            items = ["NULL" if value is None else quoted[value] for value in values]
        else:
            items = ["NULL" if value is None else element(value) for value in values]
        params.append("{" + ",".join(items) + "}")
    cursor.execute(_unnest_upsert_sql(JobRun._meta.db_table, types), params)


def _write_values(cursor: Any, connection: Any, rows: list[dict[str, Any]]) -> None:
    adapters = list(zip(COLUMNS, _adapters(connection), strict=True))
    params: list[Any] = []
    for row in rows:
        for name, adapt in adapters:
            value = row.get(name)
            if value is None:
                value = _DEFAULTS.get(name, "" if name in _TEXT_COLUMNS else None)
            params.append(adapt(value) if adapt is not None and value is not None else value)
    cursor.execute(_upsert_sql(JobRun._meta.db_table, connection.vendor, len(rows)), params)


def write_rows(rows: Iterable[dict[str, Any]], using: str | None = None) -> int:
    """Upsert event rows (at most one per task id) into ``JobRun``; return how many were written."""
    rows = list(rows)
    if not rows:
        return 0
    alias = using or conf.get("DATABASE_ALIAS")
    connection = connections[alias]
    for row in rows:
        _fill_wait_time(row)
    if connection.vendor == "postgresql":
        write, chunk = _write_arrays, 1_000
    else:
        max_params = connection.features.max_query_params or 30_000
        write, chunk = _write_values, max(1, min(max_params // len(COLUMNS), 1_000))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), chunk):
            write(cursor, connection, rows[start:start + chunk])
    return len(rows)


def _receipt_row(task_id: str, request: Any, received_at: float) -> dict[str, Any]:
    """The RECEIVED event row of a task this worker holds (``request``: Celery's request object)."""
    return make_row(task_id, JobState.RECEIVED, task_name=request.task_name, worker=request.hostname or "",
                    queue=(request.delivery_info or {}).get("routing_key") or "",
                    received_at=datetime.fromtimestamp(received_at, UTC), eta=_parse_time(request.eta),
                    parent_id=request.parent_id or "", root_id=request.root_id or "")


class CaptureBuffer:
    """Per-process event buffer: merged by task id, flushed in bulk by size, by timer and at exit."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: dict[str, dict[str, Any]] = {}
        # task id -> (time.time() of the receipt, worker node name); see add_received.
        self._received: dict[str, tuple[float, str]] = {}
        self._timer: threading.Thread | None = None
        self._wakeup = threading.Event()
        self._failures = 0
        self._retry_at = 0.0
        self.dropped = 0
        # False leaves writing to explicit flush() calls: the flusher thread writes on a connection of its own,
        # which commits outside a caller's transaction (a test's, rolled back at its end).
        self.background = True

    def after_fork_in_child(self) -> None:
        # The parent flushes what it buffered; a forked pool child must not write it a second time,
        # and inherits no running timer thread.
        self._reset()

    def discard(self) -> None:
        """Forget every buffered event and any pending retry (tests).

        Waits for a flush in progress: a failing flush puts its rows back into the buffer when it ends, and
        rows put back after the discard would be written later, into whatever test runs then.
        """
        with self._flush_lock, self._lock:
            self._pending.clear()
            self._received.clear()
            self._failures, self._retry_at = 0, 0.0

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._pending or task_id in self._received

    def __len__(self) -> int:
        return len(self._pending) + len(self._received)

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            was_empty = not self._pending
            current = self._pending.get(row["task_id"])
            self._pending[row["task_id"]] = _merge(current, row) if current else row
            overflow = len(self._pending) - conf.get("MAX_BUFFERED_EVENTS")
            if overflow > 0:
                for key in list(self._pending)[:overflow]:
                    del self._pending[key]
                self.dropped += overflow
                logger.error("Job monitoring buffer full: dropped %d oldest events (database unreachable?).",
                             overflow)
            full = len(self._pending) >= conf.get("BUFFER_SIZE")
        if was_empty or full:
            # The flusher thread empties the buffer, so while it holds events the thread has been started:
            # checking on the first event after a flush (and when the buffer fills, should the thread have
            # died) is enough, and saves a Thread.is_alive() per event in every process.
            self._ensure_timer()
        if full:
            # Wake the flusher thread rather than writing here: the task (or the worker's consumer loop)
            # goes on while the database does the work.
            self._wakeup.set()

    def finish(self, task_id: str, outcome: dict[str, Any], build: Callable[[], dict[str, Any]]) -> None:
        """Buffer a task's outcome (``outcome``: its state and the OUTCOME columns, ``updated_at``).

        The usual case, the start this process buffered moments ago and has not flushed yet, is merged in
        place, with ``_merge``'s rules for an outcome that outranks the buffered state and carries only
        those columns. Otherwise ``build()`` makes the full row and it goes through ``add``. With the start
        row built directly in ``on_task_prerun``, this cut the two receivers' CPU in a pool process from
        ~67 to ~20 us per task: on a two-core machine every microsecond of it is taken from the worker's
        main process, prefork's bottleneck (bench/capture_overhead.py).
        """
        with self._lock:
            current = self._pending.get(task_id)
            if (current is not None and current.get("task_name")
                    and STATE_RANK[outcome["state"]] > STATE_RANK[current["state"]]):
                updated_at = max(current["updated_at"], outcome["updated_at"])
                current.update(outcome)
                current["updated_at"] = updated_at
                for key in OUTCOME:
                    if key not in outcome:
                        current[key] = None
                return
        self.add(build())

    def add_received(self, task_id: str, received_at: float, worker: str) -> None:
        """Buffer a worker's receipt of a task; written at flush time only if the task still waits then.

        A task that a pool process has started by then is recorded by that process (STARTED, then its
        outcome), so the receipt write is skipped: it was a third of the capture's database work. Jobs
        that do wait in a worker (prefetched backlog, ETA/countdown) still show as RECEIVED, their row built
        at flush time from the request the worker holds. Only the time and the worker's name are kept per
        task: this runs for every task in the worker's main process, prefork's bottleneck, where building
        the row (or a closure over the request) for every task cost ~30 us of CPU per task, and even the
        cheaper variants that copied the request's fields still cost it measurably (bench/RESULTS.md).
        """
        with self._lock:
            was_empty = not self._received
            self._received[task_id] = (received_at, worker)
            full = len(self._received) >= conf.get("BUFFER_SIZE")
        if was_empty or full:
            self._ensure_timer()

    def _take(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows, self._pending = self._pending, {}
            received, self._received = self._received, {}
        if received:
            waiting = _waiting_in_this_worker()
            if waiting is None:
                # The worker's state could not be read (changing under us): decide at the next flush.
                with self._lock:
                    for task_id, receipt in received.items():
                        self._received.setdefault(task_id, receipt)
                return rows
            for task_id, (received_at, worker) in received.items():
                request = waiting.get(task_id)
                if request is not None:
                    if _ignored(request.task_name):
                        continue
                    row = _receipt_row(task_id, request, received_at)
                elif task_id in rows:
                    # Run in this process (solo or thread pool) and no longer held: the rows of its start
                    # have the rest; the receipt adds when, and the worker's node name.
                    row = make_row(task_id, JobState.RECEIVED, task_name=rows[task_id].get("task_name"),
                                   worker=worker, received_at=datetime.fromtimestamp(received_at, UTC))
                else:
                    continue
                rows[task_id] = _merge(row, rows[task_id]) if task_id in rows else row
        return rows

    def flush(self, *, close_connection: bool = False) -> int:
        """Write every buffered event now; on failure keep them for the next attempt. Never raises.

        ``close_connection`` closes the database connection afterwards unless more events arrived meanwhile.
        """
        with self._flush_lock:
            rows = self._take()
            if not rows:
                return 0
            try:
                written = write_rows(rows.values())
            except Exception:
                salvaged = self._write_one_by_one(dict(rows))
                if salvaged is not None:
                    return salvaged
                self._failures += 1
                delay = min(30.0, 0.5 * 2 ** min(self._failures, 6))
                self._retry_at = time.monotonic() + delay
                logger.exception("Job monitoring could not write %d job records (attempt %d); retrying in %.1fs.",
                                 len(rows), self._failures, delay)
                with self._lock:
                    # Put the failed rows back in front, merged with what arrived meanwhile.
                    for task_id, row in self._pending.items():
                        rows[task_id] = _merge(rows[task_id], row) if task_id in rows else row
                    self._pending = rows
                self._close(conf.get("DATABASE_ALIAS"))
                return 0
            else:
                if self._failures:
                    logger.warning("Job monitoring writes recovered after %d failed attempts.", self._failures)
                self._failures, self._retry_at = 0, 0.0
                if close_connection and not (self._pending or self._received):
                    self._close(conf.get("DATABASE_ALIAS"))
                return written

    def _write_one_by_one(self, rows: dict[str, dict[str, Any]]) -> int | None:
        """After a failed bulk write, isolate rows the database rejects for their content.

        Returns how many rows were written and leaves the rest buffered, or returns None when the failure
        is not about content (database down, schema missing): then everything is kept and retried later. A
        row rejected for its content (DataError, IntegrityError) is logged in full and dropped, so one bad
        payload cannot block every later record.
        """
        alias = conf.get("DATABASE_ALIAS")
        self._close(alias)
        written = 0
        for task_id, row in list(rows.items()):
            try:
                written += write_rows([row])
            except (DataError, IntegrityError):
                logger.exception("Job monitoring dropped a record the database rejects: %r", row)
            except Exception:
                self._close(alias)
                if written == 0:
                    return None
                break
            del rows[task_id]
        with self._lock:
            for task_id, row in self._pending.items():
                rows[task_id] = _merge(rows[task_id], row) if task_id in rows else row
            self._pending = rows
        return written

    @staticmethod
    def _close(alias: str) -> None:
        try:
            connections[alias].close()
        except Exception:
            logger.debug("closing the monitoring connection failed", exc_info=True)

    def _ensure_timer(self) -> None:
        if self._timer is not None and self._timer.is_alive():
            return
        with self._lock:
            if self._timer is not None and self._timer.is_alive():
                return
            self._timer = threading.Thread(target=self._run_timer, name="jobmonitor-capture-flush", daemon=True)
            self._timer.start()

    def _run_timer(self) -> None:
        idle = True
        while True:
            try:
                idle = self._tick(idle)
            except Exception:
                # The flusher must outlive any failure (an invalid setting read at run time, a bug): it is
                # restarted only by the first event after a flush or by a full buffer, so a dead one would leave
                # a quiet process's buffered rows unwritten. Pause, so a failure that repeats cannot spin.
                logger.exception("Job monitoring's flusher thread failed; it goes on in %.0f s.", FLUSHER_PAUSE)
                time.sleep(FLUSHER_PAUSE)

    def _tick(self, idle: bool) -> bool:
        """Wait up to FLUSH_INTERVAL for events, then flush (or close an idle connection); return ``idle``."""
        woken = self._wakeup.wait(conf.get("FLUSH_INTERVAL"))
        self._wakeup.clear()
        if not self.background:
            return idle
        if (self._pending or self._received) and time.monotonic() >= self._retry_at:
            # Between bursts the connection is closed so it never lingers idle (a test database could not
            # be dropped, and an idle server-side connection per process adds up). While events keep
            # coming (the buffer filled, or more arrived during the flush) it is kept: a new connection
            # per flush costs a server process start-up, which a worker running under ~200 tasks/s per
            # process (timer-driven flushes) paid every second.
            self.flush(close_connection=not woken)
            return False
        if not idle:
            # A whole interval without events: close what the last flush kept open for more.
            self._close(conf.get("DATABASE_ALIAS"))
        return True


def _waiting_in_this_worker() -> dict[str, Any] | None:
    """Requests this worker holds but has not started (reserved or ETA-scheduled), by task id; None if unknown."""
    from celery.worker import state

    for _ in range(3):
        try:
            # The consumer thread mutates these while we read them: copy, and retry on a concurrent change.
            active = {request.id for request in list(state.active_requests)}
            held = dict(state.requests)
            held.update((request.id, request) for request in list(state.scheduled_requests))
        except RuntimeError:
            continue
        return {task_id: request for task_id, request in held.items() if task_id not in active}
    return None


buffer = CaptureBuffer()
os.register_at_fork(after_in_child=buffer.after_fork_in_child)
atexit.register(buffer.flush)


def record(row: dict[str, Any]) -> None:
    """Queue an event row for the buffered writer. Never raises."""
    try:
        buffer.add(row)
    except Exception:
        logger.exception("Job monitoring could not buffer an event for %s", row.get("task_id"))


def flush() -> int:
    """Write buffered events now (tests, shutdown hooks, the end of a tracked job)."""
    return buffer.flush()


# --- Celery signal receivers ----------------------------------------------------------------------------

def _ignored(task_name: str | None) -> bool:
    if not conf.get("CAPTURE_ENABLED") or not task_name:
        return not conf.get("CAPTURE_ENABLED")
    return _matches_any(tuple(conf.get("IGNORE_TASKS")), task_name)


@functools.lru_cache(maxsize=4096)
def _matches_any(patterns: tuple[str, ...], task_name: str) -> bool:
    # Called for every event, in the worker's main process too: a project has few task names.
    return any(fnmatch.fnmatchcase(task_name, pattern) for pattern in patterns)


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _safe(receiver: Any) -> Any:
    """Wrap a receiver so that nothing it does can fail the user's task or the publish."""

    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            receiver(*args, **kwargs)
        except Exception:
            logger.exception("Job monitoring receiver %s failed", receiver.__name__)

    wrapper.__name__ = receiver.__name__
    wrapper.__doc__ = receiver.__doc__
    return wrapper


@_safe
def on_before_task_publish(sender: str | None = None, body: Any = None, exchange: str | None = None,
                           routing_key: str | None = None, headers: dict | None = None,
                           properties: dict | None = None, declare: Any = None, **kwargs: Any) -> None:
    """Record a task as PENDING the moment it is published (scheduled tasks included)."""
    headers = {} if headers is None else headers
    task_name = headers.get("task") or sender
    task_id = headers.get("id")
    if not task_id or _ignored(task_name):
        return
    args, kw = (body[0], body[1]) if isinstance(body, list | tuple) and len(body) >= 2 else (None, None)
    queue = ""
    for declared in declare or ():
        queue = getattr(declared, "name", "") or queue
        break
    stamp = now()
    # Tell the worker that the arguments are recorded here (Celery publishes this same headers dict):
    # masking and JSON-checking them again in the pool process was half of that process's per-task
    # capture work, for a value the upsert would discard (the first one wins). Only a publisher that
    # crashes before its buffer is flushed leaves a row without arguments.
    headers[ARGUMENTS_RECORDED_HEADER] = True
    record(make_row(
        task_id, JobState.PENDING, task_name=task_name, queue=queue or routing_key or "",
        routing_key=routing_key or "", args=args, kwargs=kw, retries=headers.get("retries") or 0,
        priority=(properties or {}).get("priority"), eta=_parse_time(headers.get("eta")),
        expires=_parse_time(headers.get("expires")), parent_id=headers.get("parent_id") or "",
        root_id=headers.get("root_id") or "", group_id=headers.get("group") or "",
        retry_of=headers.get("jobmonitor_retry_of") or "", published_at=stamp,
    ))


@_safe
def on_task_received(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    """Record that a worker took the message (runs in the worker's main process)."""
    # Nothing else here: this runs for every task in the worker's main process, prefork's bottleneck. Which
    # tasks are ignored, and everything else a receipt records, is read from the request at flush time, and
    # only for the tasks that still wait then (CaptureBuffer.add_received).
    if request is None or not conf.get("CAPTURE_ENABLED"):
        return
    buffer.add_received(request.id, time.time(), request.hostname or "")


_started_clock: dict[str, float] = {}


@_safe
def on_task_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, args: Any = None,
                   kwargs: Any = None, **extra: Any) -> None:
    """Record the start (runs in the process executing the task)."""
    if task is None or _ignored(task.name):
        return
    _started_clock[task_id] = time.monotonic()
    req = task.request
    delivery = getattr(req, "delivery_info", None) or {}
    # Pool processes know the worker's node name ("celery@host"); a worker embedded in a thread (tests)
    # reports the bare host name there, which must not replace the node name recorded on receipt.
    hostname = getattr(req, "hostname", "") or ""
    worker = hostname if "@" in hostname or getattr(req, "is_eager", False) else None
    queue = delivery.get("routing_key") or ""
    parent_id, root_id = getattr(req, "parent_id", "") or "", getattr(req, "root_id", "") or ""
    retries = getattr(req, "retries", 0) or 0
    if not getattr(req, ARGUMENTS_RECORDED_HEADER, False):
        # A message from elsewhere (no publisher capture): its arguments are recorded here, masked.
        record(make_row(task_id, JobState.STARTED, task_name=task.name, worker=worker, queue=queue,
                        started_at=now(), retries=retries, args=args, kwargs=kwargs, parent_id=parent_id,
                        root_id=root_id))
        return
    # The row make_row would build, built directly: this runs in the pool process for every task.
    stamp = now()
    row = {"task_id": task_id, "state": JobState.STARTED, "created_at": stamp, "updated_at": stamp,
           "started_at": stamp, "task_name": _text("task_name", task.name), "queue": _text("queue", queue),
           "retries": retries, "parent_id": _text("parent_id", parent_id), "root_id": _text("root_id", root_id)}
    if worker is not None:
        row["worker"] = _text("worker", worker)
    record(row)


@_safe
def on_task_postrun(sender: Any = None, task_id: str | None = None, task: Any = None, retval: Any = None,
                    state: str | None = None, **extra: Any) -> None:
    """Record the outcome state, result summary and runtime of an execution."""
    if task is None or _ignored(task.name):
        return
    started = _started_clock.pop(task_id, None)
    if state is None:
        # A BaseException ended the attempt (SIGTERM from revoke(terminate=True), SystemExit): Celery sends
        # postrun without a state. The worker's main process reports the real outcome (task_revoked, or a
        # WorkerLostError failure); recording SUCCESS here would win the tie between terminal states.
        return
    runtime = time.monotonic() - started if started is not None else None
    state = state if state in STATE_RANK else JobState.SUCCESS
    if state in (JobState.RETRY, JobState.STARTED, JobState.RECEIVED, JobState.PENDING):
        # The attempt ended but the job goes on (retry): no finish time yet.
        record(make_row(task_id, state, task_name=task.name))
        return
    result = "" if state != JobState.SUCCESS else _safe_repr(retval)
    stamp = now()
    outcome = {"state": state, "finished_at": stamp, "runtime": runtime,
               "result": _text("result", _cap(result, "MAX_RESULT_CHARS")), "updated_at": stamp}
    buffer.finish(task_id, outcome, lambda: make_row(task_id, state, task_name=task.name, finished_at=stamp,
                                                     runtime=runtime, result=result))


@_safe
def on_task_failure(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None,
                    einfo: Any = None, **extra: Any) -> None:
    """Record the exception and traceback of a failed execution."""
    name = getattr(sender, "name", None)
    if _ignored(name):
        return
    trace = getattr(einfo, "traceback", None) or (
        "".join(tb_module.format_exception(exception)) if exception else "")
    record(make_row(
        task_id, JobState.FAILURE, task_name=name, finished_at=now(),
        exception_type=type(exception).__name__ if exception else "",
        exception_message=str(exception) if exception else "", traceback=trace,
    ))


@_safe
def on_task_retry(sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None,
                  **extra: Any) -> None:
    """Record that an attempt failed and the task was sent again (same task id)."""
    name = getattr(sender, "name", None)
    if request is None or _ignored(name):
        return
    exc = reason if isinstance(reason, BaseException) else None
    record(make_row(
        request.id, JobState.RETRY, task_name=name, retries=(getattr(request, "retries", 0) or 0) + 1,
        exception_type=type(exc).__name__ if exc else "", exception_message=str(reason or ""),
        traceback=getattr(einfo, "traceback", "") or "",
    ))


@_safe
def on_task_revoked(sender: Any = None, request: Any = None, terminated: bool = False,
                    expired: bool = False, **extra: Any) -> None:
    """Record a revoked (cancelled, terminated or expired) task."""
    name = getattr(sender, "name", None)
    if request is None or _ignored(name):
        return
    why = "expired" if expired else "terminated" if terminated else "revoked"
    record(make_row(request.id, JobState.REVOKED, task_name=name, finished_at=now(),
                    exception_type="Revoked", exception_message=f"Task {why}."))


def on_worker_shutdown(**kwargs: Any) -> None:
    flush()


def connect_signals() -> None:
    """Connect the receivers (called from ``MonitoringConfig.ready()``)."""
    from celery import signals

    # weak=False: the receivers are module-level but wrapped, and must live as long as the process.
    signals.before_task_publish.connect(on_before_task_publish, weak=False, dispatch_uid="jm_publish")
    signals.task_received.connect(on_task_received, weak=False, dispatch_uid="jm_received")
    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="jm_prerun")
    signals.task_postrun.connect(on_task_postrun, weak=False, dispatch_uid="jm_postrun")
    signals.task_failure.connect(on_task_failure, weak=False, dispatch_uid="jm_failure")
    signals.task_retry.connect(on_task_retry, weak=False, dispatch_uid="jm_retry")
    signals.task_revoked.connect(on_task_revoked, weak=False, dispatch_uid="jm_revoked")
    signals.worker_process_shutdown.connect(on_worker_shutdown, weak=False, dispatch_uid="jm_proc_shutdown")
    signals.worker_shutdown.connect(on_worker_shutdown, weak=False, dispatch_uid="jm_shutdown")

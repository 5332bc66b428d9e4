"""Rollups: finished jobs summed per task name, queue and time bucket, kept in step with ``JobRun``.

Three granularities live in ``JobRollup``: five-minute buckets (recomputed from ``JobRun``), hourly
buckets (recomputed from the five-minute ones) and daily buckets (recomputed from the hourly ones), so a
bucket always equals the sum of its parts. Every recompute deletes and rewrites a whole window in one
transaction, so it is idempotent and any number of runs converge on the same rows.

``RollupState`` records the span the rollups cover completely. A read over any range (``aggregate``)
takes whole days from daily rows, the partial days at its edges from hourly rows, the partial hours from
five-minute rows, the last few minutes at its edges and everything outside the covered span from
``JobRun`` through the finished-at index: one query over the rollups and one over ``JobRun`` whatever
the range. The answer is exact for counts and runtime sums; percentiles come from the summed histograms.

``ErrorRollup`` keeps the failures per error group (exception type and normalised message), task name and
queue in the same buckets, rewritten by the same recompute, so error groups read a range the same way
(``error_rows``). Reads sum in SQL at the grouping the caller asks for (``read``); ``shared_reads`` lets a
page that shows one range in several places read it once.
"""

from __future__ import annotations

import bisect
import logging
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.db.models import Count, F, Func, Max, Min, Q, Sum, TextField, Value
from django.db.models.functions import ExtractMinute, Floor, Trunc
from django.utils import timezone

from . import conf
from .models import (
    FINISHED_STATES,
    HISTOGRAM_BOUNDS,
    HISTOGRAM_FIELDS,
    OUTCOME_FIELDS,
    ErrorRollup,
    JobRollup,
    JobRun,
    JobState,
    RollupGranularity,
    RollupState,
)

logger = logging.getLogger("monitoring.rollups")

FIVE_MINUTES = int(RollupGranularity.FIVE_MINUTES)
HOUR = int(RollupGranularity.HOUR)
DAY = int(RollupGranularity.DAY)
# Coarsest first: ``plan`` covers a range with the largest whole buckets that fit.
LEVELS = (DAY, HOUR, FIVE_MINUTES)
SUM_FIELDS = (*OUTCOME_FIELDS, "runtime_sum", "runtime_count", *HISTOGRAM_FIELDS)
# Rows whose write reached the database this long after their own updated_at stamp (buffered capture)
# are still found by the late-write pass; later ones need ``rebuild()``.
LATE_WRITE_MARGIN = timedelta(minutes=10)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OUTCOME_STATES = {"succeeded": JobState.SUCCESS, "failed": JobState.FAILURE, "revoked": JobState.REVOKED,
                   "lost": JobState.LOST}


@dataclass
class Figures:
    """Sums over a set of finished jobs: counts by outcome, runtime sum/count and runtime histogram."""

    succeeded: int = 0
    failed: int = 0
    revoked: int = 0
    lost: int = 0
    runtime_sum: float = 0.0
    runtime_count: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * len(HISTOGRAM_FIELDS))

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Figures:
        return cls(*(int(row[name] or 0) for name in OUTCOME_FIELDS), float(row["runtime_sum"] or 0.0),
                   int(row["runtime_count"] or 0), [int(row[name] or 0) for name in HISTOGRAM_FIELDS])

    def add(self, other: Figures) -> Figures:
        # Spelled out: this runs once per rollup row and group on every trends/stats request.
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.revoked += other.revoked
        self.lost += other.lost
        self.runtime_sum += other.runtime_sum
        self.runtime_count += other.runtime_count
        self.histogram = list(map(operator.add, self.histogram, other.histogram))
        return self

    @property
    def failures(self) -> int:
        """Failed jobs, counting those whose worker died (LOST)."""
        return self.failed + self.lost

    @property
    def total(self) -> int:
        """Every finished job: succeeded, failed, lost and revoked."""
        return self.succeeded + self.failures + self.revoked

    @property
    def success_rate(self) -> float | None:
        """Percentage of succeeded among succeeded + failed (revoked jobs are neither); None without any."""
        decided = self.succeeded + self.failures
        return round(100.0 * self.succeeded / decided, 2) if decided else None

    @property
    def average_runtime(self) -> float | None:
        return self.runtime_sum / self.runtime_count if self.runtime_count else None

    def percentile(self, q: float) -> float | None:
        """Estimate the ``q`` quantile (0-1) of runtimes, interpolating linearly inside the histogram bucket."""
        return histogram_quantile(self.histogram, q)


def histogram_bucket(runtime: float) -> int:
    """Return the index of the histogram bucket holding ``runtime`` (upper bounds are inclusive)."""
    return bisect.bisect_left(HISTOGRAM_BOUNDS, runtime)


def histogram_quantile(histogram: list[int], q: float) -> float | None:
    """Estimate a quantile from bucket counts, as Prometheus' ``histogram_quantile`` does."""
    count = sum(histogram)
    if not count:
        return None
    rank = q * count
    cumulative = 0
    for index, in_bucket in enumerate(histogram):
        if in_bucket and cumulative + in_bucket >= rank:
            if index >= len(HISTOGRAM_BOUNDS):  # the overflow bucket has no upper bound
                return HISTOGRAM_BOUNDS[-1]
            lower = HISTOGRAM_BOUNDS[index - 1] if index else 0.0
            upper = HISTOGRAM_BOUNDS[index]
            return lower + (upper - lower) * max(rank - cumulative, 0.0) / in_bucket
        cumulative += in_bucket
    return HISTOGRAM_BOUNDS[-1]


# --- time arithmetic ------------------------------------------------------------------------------------

def floor_time(moment: datetime, seconds: int) -> datetime:
    """Round ``moment`` down to a multiple of ``seconds`` since the epoch (UTC)."""
    elapsed = int((moment - _EPOCH).total_seconds() // seconds) * seconds
    return _EPOCH + timedelta(seconds=elapsed)


def ceil_time(moment: datetime, seconds: int) -> datetime:
    floored = floor_time(moment, seconds)
    return floored if floored == moment else floored + timedelta(seconds=seconds)


def _trunc(column: str, step: int) -> Trunc:
    return Trunc(column, {HOUR: "hour", DAY: "day"}[step], tzinfo=UTC)


# --- aggregation expressions -----------------------------------------------------------------------------

def _jobrun_sums() -> dict[str, Any]:
    sums: dict[str, Any] = {name: Count("id", filter=Q(state=state)) for name, state in _OUTCOME_STATES.items()}
    sums["runtime_sum"] = Sum("runtime")
    sums["runtime_count"] = Count("runtime")
    for index, name in enumerate(HISTOGRAM_FIELDS):
        condition = Q(runtime__isnull=False)
        if index:
            condition &= Q(runtime__gt=HISTOGRAM_BOUNDS[index - 1])
        if index < len(HISTOGRAM_BOUNDS):
            condition &= Q(runtime__lte=HISTOGRAM_BOUNDS[index])
        sums[name] = Count("id", filter=condition)
    return sums


def _rollup_sums() -> dict[str, Any]:
    return {name: Sum(name) for name in SUM_FIELDS}


def _finished_between(since: datetime | None, until: datetime | None) -> Any:
    qs = JobRun.objects.filter(finished_at__isnull=False, state__in=FINISHED_STATES)
    if since is not None:
        qs = qs.filter(finished_at__gte=since)
    if until is not None:
        qs = qs.filter(finished_at__lt=until)
    return qs.order_by()


# --- error groups: normalised messages --------------------------------------------------------------

# Variable parts of exception messages, replaced in this order so "same error, different id" groups
# together. The patterns mean the same in Python's re and PostgreSQL's regular expressions.
MESSAGE_NORMALISERS: tuple[tuple[str, str], ...] = (
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<uuid>"),
    (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]+", "<email>"),
    (r"0x[0-9a-fA-F]+", "<hex>"),
    (r"'[^']*'", "'<str>'"),
    (r'"[^"]*"', '"<str>"'),
    (r"[0-9]+(\.[0-9]+)?", "<n>"),
)
MESSAGE_PREFIX = 300


def normalise_message(message: str) -> str:
    """The first line of a message (at most 300 characters) with ids, numbers and quoted values masked."""
    text = message.split("\n", 1)[0][:MESSAGE_PREFIX]
    for pattern, replacement in MESSAGE_NORMALISERS:
        text = re.sub(pattern, replacement, text)
    return text


def normalised_sql() -> Any:
    """``normalise_message`` of ``exception_message`` as a PostgreSQL expression."""
    expression: Any = Func(Func(F("exception_message"), Value("\n"), Value(1), function="split_part"),
                           Value(MESSAGE_PREFIX), function="left", output_field=TextField())
    for pattern, replacement in MESSAGE_NORMALISERS:
        expression = Func(expression, Value(pattern), Value(replacement), Value("g"), function="regexp_replace",
                          output_field=TextField())
    return expression


def failures_between(since: datetime | None, until: datetime | None) -> Any:
    """Failed jobs (state FAILURE) that finished in ``[since, until)``: what error groups count."""
    qs = JobRun.objects.failed().filter(finished_at__isnull=False)
    if since is not None:
        qs = qs.filter(finished_at__gte=since)
    if until is not None:
        qs = qs.filter(finished_at__lt=until)
    return qs.order_by()


# --- reading --------------------------------------------------------------------------------------------

DIMENSIONS = ("step", "task_name", "queue")
Key = tuple[datetime | None, str, str]
_COUNT_COLUMNS = 4  # the outcome columns; runtime sum, count and the histogram follow
_UNREAD = object()


@dataclass(frozen=True)
class Grouping:
    """One grouping of a read: the dimensions summed over (a subset of ``DIMENSIONS``, in that order or
    not) and whether runtimes are summed too (without them, the ``Figures`` hold counts only)."""

    by: tuple[str, ...]
    runtimes: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.by) - set(DIMENSIONS)
        if unknown:
            raise ValueError(f"unknown rollup dimensions {sorted(unknown)}; use {DIMENSIONS}")


@dataclass
class _Shared:
    """What ``shared_reads`` keeps: the coverage state and each (since, until, step, grouping) read."""

    state: Any = _UNREAD
    reads: dict[tuple[Any, ...], dict[tuple[Any, ...], Figures]] = field(default_factory=dict)


_shared: ContextVar[_Shared | None] = ContextVar("monitoring_rollups_shared", default=None)


@contextmanager
def shared_reads() -> Iterator[None]:
    """Within the block, read each (range, step, grouping) once and the coverage state once.

    A page that shows the same range in several cards (the jobs dashboard: stats, trends and queue counts
    of the last 24 hours) then costs one rollup query per range instead of one per card. A step-less
    grouping is also folded in Python from a finer step-less one read before (``task_name`` from
    ``task_name`` + ``queue``): their rows are bounded by the pairs of names, not by the range.
    """
    token = _shared.set(_Shared())
    try:
        yield
    finally:
        _shared.reset(token)


def read(since: datetime | None, until: datetime, groupings: Sequence[Grouping], *,
         step: int | None = None) -> list[dict[tuple[Any, ...], Figures]]:
    """Sum finished jobs in ``[since, until)`` once per grouping; one dict per grouping, keyed by its dims.

    ``step`` (``HOUR`` or ``DAY``, UTC) is the size of the ``"step"`` dimension, whose values are the
    buckets' start times. ``since=None`` means from the first record. Two queries whatever the range,
    the table size and the number of groupings (the covered span, then one statement over the rollup rows
    of every granularity the range needs and the ``JobRun`` rows at its edges, summed in SQL per grouping).
    """
    if step is None and any("step" in grouping.by for grouping in groupings):
        raise ValueError("grouping by step needs a step")
    memo = _shared.get()
    results: list[dict[tuple[Any, ...], Figures] | None] = [
        _recall(memo, since, until, step, grouping) if memo is not None else None for grouping in groupings]
    missing = [grouping for grouping, result in zip(groupings, results, strict=True) if result is None]
    if missing:
        if memo is None:
            state = _state()
        else:
            if memo.state is _UNREAD:
                memo.state = _state()
            state = memo.state
        computed = _sum(plan(since, until, state, step=step), missing, step)
        for grouping, result in zip(missing, computed, strict=True):
            if memo is not None:
                memo.reads[(since, until, step if "step" in grouping.by else None, grouping)] = result
        fresh = iter(computed)
        results = [result if result is not None else next(fresh) for result in results]
    return results  # type: ignore[return-value]


def aggregate(since: datetime | None, until: datetime, *, step: int | None = None) -> dict[Key, Figures]:
    """Sum finished jobs in ``[since, until)`` per (step bucket, task name, queue); the step is None
    without ``step`` (see ``read``)."""
    if step is None:
        (pairs,) = read(since, until, [Grouping(("task_name", "queue"))])
        return {(None, task_name, queue): figures for (task_name, queue), figures in pairs.items()}
    (data,) = read(since, until, [Grouping(("step", "task_name", "queue"))], step=step)
    return data  # type: ignore[return-value]


ErrorRow = tuple[str, str, str, str, int, datetime, datetime, str]


def error_rows(since: datetime | None, until: datetime) -> list[ErrorRow]:
    """Failures that finished in ``[since, until)`` per (exception type, normalised message, task name,
    queue): count, first and last finish, smallest message. Three queries whatever the range: the covered
    span, the error rollup rows, the ``JobRun`` failures at the edges."""
    memo = _shared.get()
    if memo is None or memo.state is _UNREAD:
        state = _state()
        if memo is not None:
            memo.state = state
    else:
        state = memo.state
    rolled, raw = Q(), Q()
    for kind, granularity, start, end in plan(since, until, state):
        if kind == "raw":
            raw |= Q(finished_at__lt=end) if start is None else Q(finished_at__gte=start, finished_at__lt=end)
        else:
            rolled |= Q(granularity=granularity, bucket__gte=start, bucket__lt=end)
    rows: list[ErrorRow] = []
    if rolled:
        rows += list(ErrorRollup.objects.filter(rolled).order_by()
                     .values_list("exception_type", "message", "task_name", "queue")
                     .annotate(Sum("count"), Min("first_seen"), Max("last_seen"), Min("example")))
    if raw:
        rows += _raw_error_rows(failures_between(None, None).filter(raw))
    return rows


def _merged_in_python(failures: Any, slot: Callable[[datetime], Any] | None = None) -> list[ErrorRow]:
    """Group failures per (exception type, normalised message, task name, queue) in Python, for databases
    without PostgreSQL's regular expressions; ``slot`` keeps the failures of each of its values apart."""
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for exception_type, message, task_name, queue, finished in failures.values_list(
            "exception_type", "exception_message", "task_name", "queue", "finished_at"):
        key = (exception_type, normalise_message(message), task_name, queue, slot(finished) if slot else None)
        row = merged.get(key)
        if row is None:
            merged[key] = [1, finished, finished, message]
        else:
            row[0] += 1
            row[1], row[2], row[3] = min(row[1], finished), max(row[2], finished), min(row[3], message)
    return [(*key[:4], *values) for key, values in merged.items()]  # type: ignore[misc]


def _raw_error_rows(failures: Any) -> list[ErrorRow]:
    if connections[failures.db].vendor != "postgresql":
        return _merged_in_python(failures)
    # Counted per exact first line first, so the regular expressions run once per distinct line, not per
    # failure (six regexp_replace per row were ~90% of the time over 10,000s of failures).
    first_line = Func(Func(F("exception_message"), Value("\n"), Value(1), function="split_part"),
                      Value(MESSAGE_PREFIX), function="left", output_field=TextField())
    exact = (failures.annotate(line=first_line).values("exception_type", "line", "task_name", "queue")
             .annotate(n=Count("id"), first_seen=Min("finished_at"), last_seen=Max("finished_at"),
                       example=Min("exception_message")))
    exact_sql, params = exact.query.sql_with_params()
    normalised = "line"
    for pattern, replacement in MESSAGE_NORMALISERS:
        normalised = f"regexp_replace({normalised}, %s, %s, 'g')"
        params = (*params, pattern, replacement)
    sql = (f"WITH exact AS ({exact_sql}), "
           f"lines AS (SELECT exception_type, line, {normalised} AS normalised FROM exact "
           "GROUP BY exception_type, line) "
           "SELECT e.exception_type, l.normalised, e.task_name, e.queue, SUM(e.n), MIN(e.first_seen), "
           "MAX(e.last_seen), MIN(e.example) "
           "FROM exact e JOIN lines l ON l.exception_type = e.exception_type AND l.line = e.line "
           "GROUP BY e.exception_type, l.normalised, e.task_name, e.queue")
    with connections[failures.db].cursor() as cursor:
        cursor.execute(sql, params)
        return [(*row[:4], int(row[4]), *row[5:]) for row in cursor.fetchall()]


def fold(data: dict[tuple[Any, ...], Figures], positions: Sequence[int]) -> dict[tuple[Any, ...], Figures]:
    """Re-key ``data`` by the key elements at ``positions`` and add up the figures that meet."""
    out: dict[tuple[Any, ...], Figures] = {}
    for key, figures in data.items():
        short = tuple(key[i] for i in positions)
        if short in out:
            out[short].add(figures)
        else:
            out[short] = replace(figures, histogram=list(figures.histogram))
    return out


def _state() -> RollupState | None:
    return RollupState.objects.filter(pk=1).first()


def _recall(memo: _Shared, since: datetime | None, until: datetime, step: int | None,
            grouping: Grouping) -> dict[tuple[Any, ...], Figures] | None:
    key_step = step if "step" in grouping.by else None
    for runtimes in ((grouping.runtimes, True) if not grouping.runtimes else (True,)):
        found = memo.reads.get((since, until, key_step, Grouping(grouping.by, runtimes)))
        if found is not None:
            return found
    if "step" in grouping.by:
        return None
    for (m_since, m_until, m_step, m_grouping), found in memo.reads.items():
        if (m_since, m_until, m_step) == (since, until, None) and set(grouping.by) < set(m_grouping.by) and (
                m_grouping.runtimes or not grouping.runtimes):
            return fold(found, [m_grouping.by.index(dim) for dim in grouping.by])
    return None


def _sum(segments: list[Segment], groupings: Sequence[Grouping], step: int | None
         ) -> list[dict[tuple[Any, ...], Figures]]:
    """Run the one statement that sums ``segments`` per grouping; see ``read``."""
    connection = connections[JobRollup.objects.db]
    ops, quote = connection.ops, connection.ops.quote_name
    postgres = connection.vendor == "postgresql"

    def step_of(column: str) -> str:
        if step is None:
            return "0"
        seconds = f"FLOOR(EXTRACT(EPOCH FROM {column}))" if postgres else f"CAST(STRFTIME('%%s', {column}) AS INTEGER)"
        return f"CAST({seconds} AS BIGINT) / {int(step)}"

    def moment(value: datetime) -> Any:
        return ops.adapt_datetimefield_value(value)

    rolled: list[str] = []
    raw: list[str] = []
    params: list[Any] = []
    rolled_params: list[Any] = []
    raw_params: list[Any] = []
    for kind, granularity, start, end in segments:
        if kind == "raw":
            if start is None:
                raw.append("finished_at < %s")
                raw_params.append(moment(end))
            else:
                raw.append("(finished_at >= %s AND finished_at < %s)")
                raw_params += [moment(start), moment(end)]
        else:
            rolled.append("(granularity = %s AND bucket >= %s AND bucket < %s)")
            rolled_params += [granularity, moment(start), moment(end)]
    sources = []
    if rolled:
        sources.append(f"SELECT {step_of('bucket')} AS step, task_name, queue, {', '.join(SUM_FIELDS)} "
                       f"FROM {quote(JobRollup._meta.db_table)} WHERE {' OR '.join(rolled)}")
        params += rolled_params
    if raw:
        outcomes = [f"CASE WHEN state = %s THEN 1 ELSE 0 END AS {name}" for name in OUTCOME_FIELDS]
        params += [_OUTCOME_STATES[name] for name in OUTCOME_FIELDS]
        histogram = []
        for index, name in enumerate(HISTOGRAM_FIELDS):
            condition = ["runtime IS NOT NULL"]
            if index:
                condition.append(f"runtime > {HISTOGRAM_BOUNDS[index - 1]!r}")
            if index < len(HISTOGRAM_BOUNDS):
                condition.append(f"runtime <= {HISTOGRAM_BOUNDS[index]!r}")
            histogram.append(f"CASE WHEN {' AND '.join(condition)} THEN 1 ELSE 0 END AS {name}")
        states = ", ".join(["%s"] * len(FINISHED_STATES))
        sources.append(
            f"SELECT {step_of('finished_at')} AS step, task_name, queue, {', '.join(outcomes)}, "
            f"COALESCE(runtime, 0) AS runtime_sum, CASE WHEN runtime IS NULL THEN 0 ELSE 1 END AS runtime_count, "
            f"{', '.join(histogram)} FROM {quote(JobRun._meta.db_table)} "
            f"WHERE finished_at IS NOT NULL AND state IN ({states}) AND ({' OR '.join(raw)})")
        params += [*FINISHED_STATES, *raw_params]
    if not sources:
        return [{} for _ in groupings]
    selects = []
    for index, grouping in enumerate(groupings):
        # Placeholders of one type per column (0 or ''), never NULL: PostgreSQL types a UNION pairwise.
        dims = ", ".join(dim if dim in grouping.by else "0" if dim == "step" else "''" for dim in DIMENSIONS)
        fields = SUM_FIELDS if grouping.runtimes else SUM_FIELDS[:_COUNT_COLUMNS]
        sums = ", ".join(f"SUM({name})" for name in fields)
        padding = ", 0" * (len(SUM_FIELDS) - len(fields))
        group_by = f" GROUP BY {', '.join(grouping.by)}" if grouping.by else ""
        selects.append(f"SELECT {index} AS grouping_id, {dims}, {sums}{padding} FROM src{group_by}")
    sql = f"WITH src AS ({' UNION ALL '.join(sources)}) {' UNION ALL '.join(selects)}"
    results: list[dict[tuple[Any, ...], Figures]] = [{} for _ in groupings]
    positions = [[DIMENSIONS.index(dim) + 1 for dim in grouping.by] for grouping in groupings]
    starts: dict[int, datetime] = {}
    empty = [0] * len(HISTOGRAM_FIELDS)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    for row in rows:
        index = row[0]
        values = list(row)
        if step is not None and values[1] is not None:
            number = int(values[1])
            if number not in starts:
                starts[number] = _EPOCH + timedelta(seconds=number * step)
            values[1] = starts[number]
        key = tuple(values[i] for i in positions[index])
        # Sums of integer columns arrive as int from both PostgreSQL (bigint) and SQLite: no conversion.
        if groupings[index].runtimes:
            figures = Figures(row[4], row[5], row[6], row[7], float(row[8] or 0.0), row[9] or 0, list(row[10:]))
        else:
            figures = Figures(row[4], row[5], row[6], row[7], histogram=list(empty))
        results[index][key] = figures
    return results


Segment = tuple[str, int | None, datetime | None, datetime]


def plan(since: datetime | None, until: datetime, state: RollupState | None, *,
         step: int | None = None) -> list[Segment]:
    """Split ``[since, until)`` into daily, hourly, five-minute and raw (``JobRun``) segments.

    Buckets coarser than ``step`` are not used: a day's row cannot be split into hourly points.
    """
    lo = state.covered_from if state else None
    hi = state.complete_until if state else None
    if lo is None or hi is None or lo >= hi or (since is not None and since >= hi) or until <= lo:
        return [("raw", None, since, until)]
    start = lo if since is None or since < lo else since
    end = min(until, hi)
    levels = tuple(level for level in LEVELS if step is None or level <= step)
    segments: list[Segment] = []
    if since is None or since < lo:
        segments.append(("raw", None, since, lo))
    segments += _cover(start, end, levels)
    if end < until:
        segments.append(("raw", None, end, until))
    merged: list[Segment] = []
    for segment in segments:
        kind, _, a, b = segment
        if a is not None and a >= b:
            continue
        if merged and kind == "raw" and merged[-1][0] == "raw" and merged[-1][3] == a:
            merged[-1] = ("raw", None, merged[-1][2], b)
        else:
            merged.append(segment)
    return merged


def _cover(start: datetime, end: datetime, levels: tuple[int, ...]) -> list[Segment]:
    """The whole buckets of the coarsest level inside ``[start, end)``, the edges from finer levels."""
    if not levels:
        return [("raw", None, start, end)]
    size, finer = levels[0], levels[1:]
    first, last = ceil_time(start, size), floor_time(end, size)
    if first >= last:
        return _cover(start, end, finer)
    return [*_cover(start, first, finer), ("rollup", size, first, last), *_cover(last, end, finer)]


# --- maintaining -----------------------------------------------------------------------------------------

def recompute(start: datetime, end: datetime) -> int:
    """Rewrite the five-minute buckets in ``[start, end)`` from ``JobRun`` and the hours and days they touch.

    ``start`` and ``end`` are rounded outward to five minutes. Returns the number of rows written.
    """
    start, end = floor_time(start, FIVE_MINUTES), ceil_time(end, FIVE_MINUTES)
    with transaction.atomic():
        rows = (_finished_between(start, end)
                .annotate(hour=Trunc("finished_at", "hour", tzinfo=UTC),
                          slot=Floor(ExtractMinute("finished_at", tzinfo=UTC) / 5))
                .values("hour", "slot", "task_name", "queue").annotate(**_jobrun_sums()))
        slots = [_rollup(FIVE_MINUTES, row["hour"] + timedelta(minutes=5 * int(row["slot"])), row) for row in rows]
        JobRollup.objects.filter(granularity=FIVE_MINUTES, bucket__gte=start, bucket__lt=end).delete()
        JobRollup.objects.bulk_create(slots, batch_size=2_000)
        h0, h1 = floor_time(start, HOUR), ceil_time(end, HOUR)
        hours = (JobRollup.objects.filter(granularity=FIVE_MINUTES, bucket__gte=h0, bucket__lt=h1).order_by()
                 .annotate(hour=_trunc("bucket", HOUR)).values("hour", "task_name", "queue")
                 .annotate(**_rollup_sums()))
        hourly = [_rollup(HOUR, row["hour"], row) for row in hours]
        JobRollup.objects.filter(granularity=HOUR, bucket__gte=h0, bucket__lt=h1).delete()
        JobRollup.objects.bulk_create(hourly, batch_size=2_000)
        d0, d1 = floor_time(start, DAY), ceil_time(end, DAY)
        days = (JobRollup.objects.filter(granularity=HOUR, bucket__gte=d0, bucket__lt=d1).order_by()
                .annotate(day=_trunc("bucket", DAY)).values("day", "task_name", "queue")
                .annotate(**_rollup_sums()))
        daily = [_rollup(DAY, row["day"], row) for row in days]
        JobRollup.objects.filter(granularity=DAY, bucket__gte=d0, bucket__lt=d1).delete()
        JobRollup.objects.bulk_create(daily, batch_size=2_000)
        errors = recompute_errors(start, end, (h0, h1), (d0, d1))
    return len(slots) + len(hourly) + len(daily) + errors


def recompute_errors(start: datetime, end: datetime, hours: tuple[datetime, datetime],
                     days: tuple[datetime, datetime]) -> int:
    """Rewrite the error rollups: five-minute buckets in ``[start, end)`` from ``JobRun``, then the
    ``hours`` and ``days`` spans from the finer rows (part of ``recompute``)."""
    slots = [ErrorRollup(granularity=FIVE_MINUTES, bucket=floor_time(row[5], FIVE_MINUTES), exception_type=row[0],
                         message=row[1], task_name=row[2], queue=row[3], count=row[4], first_seen=row[5],
                         last_seen=row[6], example=row[7])
             for row in _error_slots(start, end)]
    ErrorRollup.objects.filter(granularity=FIVE_MINUTES, bucket__gte=start, bucket__lt=end).delete()
    ErrorRollup.objects.bulk_create(slots, batch_size=2_000)
    written = len(slots)
    for size, finer, (lo, hi) in ((HOUR, FIVE_MINUTES, hours), (DAY, HOUR, days)):
        rows = (ErrorRollup.objects.filter(granularity=finer, bucket__gte=lo, bucket__lt=hi).order_by()
                .annotate(start=_trunc("bucket", size))
                .values_list("start", "exception_type", "message", "task_name", "queue")
                .annotate(Sum("count"), Min("first_seen"), Max("last_seen"), Min("example")))
        coarse = [ErrorRollup(granularity=size, bucket=row[0], exception_type=row[1], message=row[2],
                              task_name=row[3], queue=row[4], count=row[5], first_seen=row[6], last_seen=row[7],
                              example=row[8]) for row in rows]
        ErrorRollup.objects.filter(granularity=size, bucket__gte=lo, bucket__lt=hi).delete()
        ErrorRollup.objects.bulk_create(coarse, batch_size=2_000)
        written += len(coarse)
    return written


def _error_slots(start: datetime, end: datetime) -> list[ErrorRow]:
    """``_raw_error_rows`` per five-minute slot: each slot's failures grouped on their own."""
    failures = failures_between(start, end)
    if connections[failures.db].vendor != "postgresql":
        return _merged_in_python(failures, slot=lambda finished: floor_time(finished, FIVE_MINUTES))
    slot = Trunc("finished_at", "hour", tzinfo=UTC)
    return [(*row[2:6], row[6], row[7], row[8], row[9]) for row in failures
            .annotate(hour=slot, slot=Floor(ExtractMinute("finished_at", tzinfo=UTC) / 5),
                      normalised=normalised_sql())
            .values_list("hour", "slot", "exception_type", "normalised", "task_name", "queue")
            .annotate(Count("id"), Min("finished_at"), Max("finished_at"), Min("exception_message"))]


def _rollup(granularity: int, bucket: datetime, row: dict[str, Any]) -> JobRollup:
    values = {name: row[name] or 0 for name in SUM_FIELDS}
    return JobRollup(granularity=granularity, bucket=bucket, task_name=row["task_name"], queue=row["queue"],
                     **values)


def _locked_state() -> RollupState:
    RollupState.objects.get_or_create(pk=1)
    return RollupState.objects.select_for_update().get(pk=1)


def rebuild(since: datetime, until: datetime) -> int:
    """Recompute the rollups of ``[since, until)`` (seeded or imported data) and mark them covered."""
    start, end = floor_time(since, FIVE_MINUTES), floor_time(until, FIVE_MINUTES)
    if start >= end:
        return 0
    with transaction.atomic():
        state = _locked_state()
        written = recompute(start, end)
        lo, hi = state.covered_from, state.complete_until
        if lo is None or hi is None or end < lo or start > hi:
            # Disjoint from what was covered: coverage must stay one unbroken span, keep the newer one.
            if hi is None or end > hi:
                state.covered_from, state.complete_until = start, end
        else:
            state.covered_from, state.complete_until = min(lo, start), max(hi, end)
        state.save()
    return written


def roll_up(now: datetime | None = None) -> dict[str, Any]:
    """Roll up newly settled buckets and re-check buckets that received late writes (periodic task)."""
    now = now or timezone.now()
    end = floor_time(now - timedelta(seconds=conf.get("ROLLUP_SETTLE_SECONDS")), FIVE_MINUTES)
    horizon = floor_time(now - timedelta(days=conf.get("ROLLUP_RETENTION_DAYS")), FIVE_MINUTES)
    with transaction.atomic():
        state = _locked_state()
        if state.complete_until is None or state.covered_from is None:
            first = _finished_between(None, None).aggregate(first=Min("finished_at"))["first"]
            start = max(floor_time(first, FIVE_MINUTES), horizon) if first else end
            state.covered_from = min(start, end)
        else:
            start = state.complete_until
        windows: list[tuple[datetime, datetime]] = [(start, end)] if start < end else []
        if state.updated_mark is not None:
            late = (_finished_between(max(state.covered_from, horizon), start)
                    .filter(updated_at__gte=state.updated_mark - LATE_WRITE_MARGIN)
                    .annotate(hour=Trunc("finished_at", "hour", tzinfo=UTC),
                              slot=Floor(ExtractMinute("finished_at", tzinfo=UTC) / 5))
                    .values_list("hour", "slot").distinct())
            windows += [(hour + timedelta(minutes=5 * int(slot)), hour + timedelta(minutes=5 * int(slot) + 5))
                        for hour, slot in late]
        written = sum(recompute(a, b) for a, b in merge_windows(windows))
        state.complete_until = max(start, end)
        state.updated_mark = now
        state.save()
    return {"windows": len(windows), "rows": written, "complete_until": state.complete_until}


def merge_windows(windows: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Merge overlapping or touching ``(start, end)`` windows."""
    merged: list[tuple[datetime, datetime]] = []
    for a, b in sorted(windows):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def prune(now: datetime | None = None) -> int:
    """Delete rollups older than ``ROLLUP_RETENTION_DAYS`` and shrink the covered span to match."""
    now = now or timezone.now()
    cutoff = floor_time(now - timedelta(days=conf.get("ROLLUP_RETENTION_DAYS")), HOUR)
    with transaction.atomic():
        state = _locked_state()
        deleted, _ = JobRollup.objects.filter(bucket__lt=cutoff).delete()
        ErrorRollup.objects.filter(bucket__lt=cutoff).delete()
        if state.covered_from is not None and state.covered_from < cutoff:
            state.covered_from = cutoff
            if state.complete_until is not None and state.complete_until < cutoff:
                state.covered_from = state.complete_until = None
            state.save()
    return deleted

"""The batch pipeline: create, check, process, retry and expire, plus the operator actions on batches.

Each step reads with a constant number of queries (whatever the number of companies, requests or batches),
calls the provider in parallel (``BATCHES['CONCURRENCY']``) outside any transaction, and writes back in
bulk. Every run is recorded as a ``PipelineRun``; provider errors feed a circuit breaker.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import orjson
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F, Func, JSONField, Q, TextField
from django.utils import timezone

from monitoring.audit import Actor, record_action

from . import conf, pricing
from .models import (
    IN_FLIGHT_STATES,
    PROVIDER_TIMESTAMPS,
    AIProcessingRequest,
    BatchJob,
    BatchStatus,
    Company,
    PipelineRun,
    PipelineStep,
    ProviderCircuit,
    RequestStatus,
)
from .providers import ProviderBatch, ProviderError, get_provider

logger = logging.getLogger(__name__)
T = TypeVar("T")
COMPANY_CACHE_KEY = "batches:active-companies"
METADATA_KEY = "jobmonitor_batch"
_CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*"([^"]{1,64})"')


class ActionError(Exception):
    """An operator action that does not fit the batch's state (the API answers 409)."""


@dataclass
class StepResult:
    """What one step run did (also stored as a PipelineRun)."""

    step: str
    items: int = 0
    errors: int = 0
    queries: int = 0
    duration: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


# --- infrastructure: step metering, company cache, circuit breaker, parallel calls -----------------------

@contextmanager
def _metered(step: str) -> Iterator[StepResult]:
    """Time a step, count its queries on this thread's connection, and record a PipelineRun."""
    result = StepResult(step=step)
    started, clock = timezone.now(), time.perf_counter()
    count = 0

    def counter(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal count
        count += 1
        return execute(sql, params, many, context)

    try:
        with connection.execute_wrapper(counter):
            yield result
    finally:
        result.queries = count
        result.duration = time.perf_counter() - clock
        try:
            PipelineRun.objects.create(step=step, started_at=started, duration=result.duration, items=result.items,
                                       queries=result.queries, errors=result.errors, detail=result.detail)
        except Exception:  # metering must never fail the step it measures
            logger.exception("could not record the %s pipeline run", step)
        logger.info("batches %s: %d items, %d errors, %d queries, %.3fs", step, result.items, result.errors,
                    result.queries, result.duration)


def active_companies() -> dict[int, tuple[int | None, int | None]]:
    """Map active company ids to their (min batch size, max wait) overrides; cached for COMPANY_CACHE_TTL."""
    companies = cache.get(COMPANY_CACHE_KEY)
    if companies is None:
        companies = {pk: (size, wait) for pk, size, wait in
                     Company.objects.active().values_list("id", "min_batch_size", "max_wait")}
        cache.set(COMPANY_CACHE_KEY, companies, conf.get("COMPANY_CACHE_TTL"))
    return companies


def forget_active_companies(**kwargs: Any) -> None:
    """Drop the cached active-company list (connected to Company saves and deletes)."""
    cache.delete(COMPANY_CACHE_KEY)


class _Circuit:
    """The provider's circuit breaker, read once per step and written once at its end."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.row, _ = ProviderCircuit.objects.get_or_create(provider=get_provider().name)
        self.changed = False

    @property
    def open(self) -> bool:
        return self.row.is_open(self.now)

    def record(self, error: ProviderError | None) -> None:
        if error is None:
            if self.row.consecutive_failures or self.row.opened_until:
                self.row.consecutive_failures, self.row.opened_until, self.changed = 0, None, True
            return
        self.row.consecutive_failures += 1
        self.row.last_error, self.row.last_failure_at, self.changed = str(error)[:2000], self.now, True
        if self.row.consecutive_failures >= conf.get("CIRCUIT_FAILURE_THRESHOLD"):
            self.row.opened_until = self.now + timedelta(seconds=conf.get("CIRCUIT_OPEN_SECONDS"))

    def save(self) -> None:
        if self.changed:
            self.row.save()


def circuit_state(now: datetime | None = None) -> list[dict[str, Any]]:
    """Return every provider circuit as plain data (for the API)."""
    now = now or timezone.now()
    return [{"provider": c.provider, "open": c.is_open(now), "consecutive_failures": c.consecutive_failures,
             "opened_until": c.opened_until, "last_error": c.last_error, "last_failure_at": c.last_failure_at}
            for c in ProviderCircuit.objects.all()]


def _parallel(func: Callable[[Any], T], items: Iterable[Any]) -> list[tuple[Any, T | ProviderError]]:
    """Call ``func`` on each item in a thread pool; a ProviderError is returned, not raised."""
    def call(item: Any) -> tuple[Any, T | ProviderError]:
        try:
            return item, func(item)
        except ProviderError as exc:
            return item, exc

    items = list(items)
    workers = max(1, min(conf.get("CONCURRENCY"), len(items)))
    if workers == 1:
        return [call(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batches") as pool:
        return list(pool.map(call, items))


def _ts(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _arrays(fields: list[Any], objs: list[Any]) -> tuple[list[str], list[list[Any]], list[str]]:
    """Each field's values over ``objs`` as one array parameter: (typed placeholders, values, ``v.cN`` columns)."""
    arrays, params, columns = [], [], []
    for number, model_field in enumerate(fields):
        if isinstance(model_field, JSONField):
            # Arrays of jsonb adapters do not bind; send text and cast per row.
            encoder = model_field.encoder
            params.append([None if (value := getattr(obj, model_field.attname)) is None
                           else json.dumps(value, cls=encoder) for obj in objs])
            arrays.append("%s::text[]")
            columns.append(f"v.c{number}::jsonb")
        else:
            params.append([model_field.get_db_prep_save(getattr(obj, model_field.attname), connection)
                           for obj in objs])
            arrays.append(f"%s::{model_field.db_type(connection)}[]")
            columns.append(f"v.c{number}")
    return arrays, params, columns


def _int_array(values: Iterable[int]) -> str:
    """An array literal of integers ('{1,2,3}'), for a %s::bigint[] parameter."""
    return "{" + ",".join(map(str, values)) + "}"


def _bulk_update(objs: list[Any], fields: list[str]) -> None:
    """Save ``fields`` of model instances by primary key: one UPDATE ... FROM unnest(...) on PostgreSQL.

    Django's bulk_update builds a CASE WHEN per field and row, which costs seconds of Python for 1,000 batches;
    the arrays cost one pass over the values.
    """
    if not objs:
        return
    model = type(objs[0])
    if not _is_postgres():
        model.objects.bulk_update(objs, fields, batch_size=500)
        return
    meta, quote = model._meta, connection.ops.quote_name
    model_fields = [meta.get_field(name) for name in fields]
    arrays, params, columns = _arrays([meta.pk, *model_fields], objs)
    sets = [f"{quote(f.column)} = {column}" for f, column in zip(model_fields, columns[1:], strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {quote(meta.db_table)} AS t SET {', '.join(sets)} "
                       f"FROM unnest({', '.join(arrays)}) AS v({', '.join(f'c{n}' for n in range(len(arrays)))}) "
                       f"WHERE t.{quote(meta.pk.column)} = v.c0", params)


# --- create -----------------------------------------------------------------------------------------------

# What a claim hands to submission: one new local batch's job fields and, until its file is built, its rows.
_ClaimRow = tuple[int, int, str, str, str, int, datetime, str]  # id, company, model, endpoint, job_type,
#                                                                line_bytes, requested_at, input-file line
# The claim runs as up to this many transactions over disjoint sets of companies, once there are this many
# companies per transaction: the provider creates the batches of a committed part while PostgreSQL rewrites the
# next part's rows. Two parts, not more: each costs a SELECT and a write (plus BEGIN and COMMIT) and the step
# stays within 20 queries; three parts measured no faster on 2 cores (bench/RESULTS.md).
CLAIM_PARTS = 2
COMPANIES_PER_CLAIM_PART = 100


def create_batches(*, now: datetime | None = None) -> StepResult:
    """Claim pending requests into batches per company + model + endpoint and submit them to the provider.

    The provider calls overlap the database work: each new batch's input file is built and uploaded on the
    thread pool while the claim's UPDATE of the request rows runs in PostgreSQL, and each batch is created as
    soon as its part of the claim has committed and its upload has finished, while the next part is claimed.
    """
    now = now or timezone.now()
    with _metered(PipelineStep.CREATE) as result:
        clock = time.perf_counter()
        circuit = _Circuit(now)
        submitter = None if circuit.open else _Submitter(get_provider())
        jobs: list[dict[str, Any]] = []
        failure: Exception | None = None
        try:
            companies = active_companies()
            # MAX_CLAIM_PER_RUN bounds the whole run; when it binds, priority order holds within each part.
            budget = conf.get("MAX_CLAIM_PER_RUN")
            for part in claim_parts(list(companies)):
                try:
                    claimed = _claim_pending(now, {pk: companies[pk] for pk in part}, budget, submitter)
                except Exception as exc:
                    # This part's requests stay pending; the parts already committed are submitted before the
                    # error is raised (their batches would otherwise wait for the lease to run out).
                    failure = exc
                    break
                jobs += claimed
                if submitter is not None:
                    for job in claimed:  # their claim has committed: create each once its file is up
                        submitter.create(job)
                budget -= sum(job["request_count"] for job in claimed)
                if budget <= 0:
                    break
            if failure is not None and not jobs:
                raise failure
            claim_seconds = round(time.perf_counter() - clock, 3)
            if submitter is None:
                result.detail.update(claimed_batches=len(jobs), skipped="circuit open", claim_seconds=claim_seconds)
            else:
                submitted, errors = _submit([*jobs, *_lease_local_batches(now)], submitter, now, circuit)
        finally:
            # After a failed claim, uploads not started yet are dropped; the files already uploaded are orphans
            # at the provider (no batch refers to them) and the requests stay pending.
            if submitter is not None:
                submitter.close()
        if submitter is None:
            if failure is not None:
                raise failure
            return result
        circuit.save()
        result.items, result.errors = sum(j["request_count"] for j in submitted), errors
        # Where a slow run spent its time: the claim in the database (uploads and the creates of committed parts
        # already running meanwhile), or the provider calls that remained once its last part had committed.
        result.detail.update(claimed_batches=len(jobs), submitted_batches=len(submitted), claim_seconds=claim_seconds,
                             submit_seconds=round(time.perf_counter() - clock - claim_seconds, 3))
        if failure is not None:
            raise failure
    return result


def claim_parts(company_ids: list[int]) -> list[list[int]]:
    """Split the active companies into the claim's transactions: contiguous ids, up to CLAIM_PARTS of them."""
    ids = sorted(company_ids)
    if not ids:
        return []
    parts = max(1, min(CLAIM_PARTS, len(ids) // COMPANIES_PER_CLAIM_PART))
    size = -(-len(ids) // parts)
    return [ids[start:start + size] for start in range(0, len(ids), size)]


def _attempt(call: Callable[[], T]) -> T | ProviderError:
    """Run one provider call on the pool: a ProviderError is returned, not raised."""
    try:
        return call()
    except ProviderError as exc:
        return exc


class _Submitter:
    """Uploads input files and creates provider batches on a thread pool of ``BATCHES['CONCURRENCY']``.

    ``create(job)`` is called only once the job's claim has committed; the batch is then created as soon as its
    upload is done, without waiting for the other uploads (or for the next part of the claim).
    """

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.pool = ThreadPoolExecutor(max_workers=max(1, conf.get("CONCURRENCY")), thread_name_prefix="batches")
        self.uploads: dict[int, Future[str | ProviderError]] = {}
        self.creates: dict[int, Future[tuple[str, ProviderBatch] | ProviderError]] = {}

    def upload(self, filename: str, content: Callable[[], bytes]) -> Future[str | ProviderError]:
        return self.pool.submit(_attempt, lambda: self.provider.upload_file(filename, content()))

    def create(self, job: dict[str, Any]) -> None:
        created: Future[tuple[str, ProviderBatch] | ProviderError] = Future()
        self.creates[job["id"]] = created

        def call(upload: Future[str | ProviderError]) -> None:
            try:
                file_id = upload.result()
                if isinstance(file_id, ProviderError):
                    created.set_result(file_id)
                    return
                metadata = {METADATA_KEY: str(job["id"]), "company": str(job["company_id"]),
                            "job_type": job["job_type"]}
                batch = _attempt(lambda: self.provider.create_batch(file_id, job["endpoint"], metadata))
                created.set_result(batch if isinstance(batch, ProviderError) else (file_id, batch))
            except BaseException as exc:  # e.g. the worker being killed: the waiting thread re-raises it
                created.set_exception(exc)

        def start(upload: Future[str | ProviderError]) -> None:
            try:
                self.pool.submit(call, upload)
            except RuntimeError as exc:  # the pool was shut down: the run failed and nobody waits for this
                created.set_exception(exc)

        self.uploads[job["id"]].add_done_callback(start)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _claim_pending(now: datetime, companies: dict[int, tuple[int | None, int | None]] | None = None,
                   limit: int | None = None, submitter: _Submitter | None = None) -> list[dict[str, Any]]:
    """Move eligible pending requests into new local batches (FOR UPDATE SKIP LOCKED) and return those batches.

    ``companies`` maps the company ids to claim for to their (min size, max wait) overrides (default: every active
    company), ``limit`` caps the rows (default ``MAX_CLAIM_PER_RUN``). With a ``submitter``, each new batch's file
    starts uploading before the requests are rewritten, so the upload overlaps PostgreSQL's work. The new batches
    are leased to this run (``submit_started_at``) in the claim's own transaction: no other run submits them
    meanwhile.
    """
    companies = active_companies() if companies is None else companies
    if not companies:
        return []
    default_size, default_wait = conf.get("MIN_BATCH_SIZE"), conf.get("MAX_WAIT")
    max_requests, max_bytes = conf.get("MAX_REQUESTS_PER_BATCH"), conf.get("MAX_FILE_BYTES")
    with transaction.atomic():
        # Another scheduler's claim holds its rows locked until it commits: we skip them instead of waiting,
        # so two schedulers never batch a request twice. Each row's input-file line comes along, built by the
        # database: the files need no second read of the rows and no per-row work in this (GIL-bound) process.
        rows: list[_ClaimRow] = list(
            AIProcessingRequest.objects.pending().filter(company_id__in=list(companies))
            .order_by("-priority", "requested_at", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .annotate(line=InputLine())
            .values_list("id", "company_id", "model", "endpoint", "job_type", "line_bytes", "requested_at", "line")
            [: conf.get("MAX_CLAIM_PER_RUN") if limit is None else limit])
        groups: dict[tuple[int, str, str], list[_ClaimRow]] = defaultdict(list)
        for row in rows:
            groups[(row[1], row[2], row[3])].append(row)
        jobs: list[BatchJob] = []
        members: list[list[_ClaimRow]] = []
        provider = get_provider().name
        for (company_id, model, endpoint), group in groups.items():
            size, wait = companies[company_id]
            oldest = min(r[6] for r in group)
            if len(group) < (size or default_size) and oldest > now - timedelta(seconds=wait or default_wait):
                continue
            chunk: list[_ClaimRow] = []
            chunk_bytes = 0
            for row in [*group, None]:
                if row is None or len(chunk) >= max_requests or chunk_bytes + row[5] > max_bytes:
                    if chunk:
                        job_types = {r[4] for r in chunk}
                        jobs.append(BatchJob(company_id=company_id, model=model, endpoint=endpoint,
                                             provider=provider, request_count=len(chunk),
                                             job_type=job_types.pop() if len(job_types) == 1 else "mixed",
                                             created_at=now, submit_started_at=now,
                                             status_history=[{"status": "pending", "at": now.isoformat()}]))
                        members.append(chunk)
                    chunk, chunk_bytes = [], 0
                if row is not None:
                    chunk.append(row)
                    chunk_bytes += row[5]
        if not jobs:
            return []
        # Files are named before the batches have ids; nothing at the provider depends on the name.
        uploads = [submitter.upload(f"company-{job.company_id}-{number}.jsonl", partial(_input_file, chunk))
                   for number, (job, chunk) in enumerate(zip(jobs, members, strict=True))] if submitter else []
        jobs = _save_claim(jobs, [[r[0] for r in chunk] for chunk in members])
        if submitter is not None:
            submitter.uploads.update((job.pk, upload) for job, upload in zip(jobs, uploads, strict=True))
    # submit_started_at None: no earlier run tried to submit these, so there is nothing to adopt.
    return [{"id": job.pk, "company_id": job.company_id, "endpoint": job.endpoint, "job_type": job.job_type,
             "request_count": job.request_count, "submit_started_at": None, "status_history": job.status_history,
             "provider_error_count": 0} for job in jobs]


def _save_claim(jobs: list[BatchJob], members: list[list[int]]) -> list[BatchJob]:
    """Insert the new batches and point each claimed request at its batch, counting the attempt.

    On PostgreSQL one statement does both: the batch ids come from the identity sequence, the batch rows from
    arrays (Django's bulk_create spends ~0.25 s of Python on 1,000 rows of 40 fields) and the requests are
    rewritten in one ``UPDATE ... FROM unnest(...)``.
    """
    if not _is_postgres():
        jobs = BatchJob.objects.bulk_create(jobs)
        for job, group in zip(jobs, members, strict=True):
            for start in range(0, len(group), 500):
                AIProcessingRequest.objects.filter(id__in=group[start:start + 500]).update(
                    status=RequestStatus.BATCHING_IN_PROGRESS, batch=job, attempts=F("attempts") + 1)
        return jobs
    meta, quote = BatchJob._meta, connection.ops.quote_name
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    arrays, params, columns = _arrays(fields, jobs)
    # 100,000s of ids go as one array literal: a Python list would reach PostgreSQL as ARRAY[...] of as many
    # expressions to parse (~0.25 s per 100,000 claimed rows).
    ids = _int_array(rid for group in members for rid in group)
    positions = _int_array(number for number, group in enumerate(members, start=1) for _ in group)
    table, requests = quote(meta.db_table), quote(AIProcessingRequest._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH new AS MATERIALIZED (SELECT ord, nextval(pg_get_serial_sequence(%s, %s)) AS id "
            f"FROM generate_series(1, %s) AS ord), "
            f"saved AS (INSERT INTO {table} ({quote(meta.pk.column)}, {', '.join(quote(f.column) for f in fields)}) "
            f"SELECT new.id, {', '.join(columns)} FROM unnest({', '.join(arrays)}) WITH ORDINALITY "
            f"AS v({', '.join(f'c{n}' for n in range(len(fields)))}, ord) JOIN new USING (ord)), "
            f"assigned AS (UPDATE {requests} AS r SET status = %s, batch_id = new.id, attempts = r.attempts + 1 "
            f"FROM unnest(%s::bigint[], %s::int[]) AS m(id, ord) JOIN new USING (ord) WHERE r.id = m.id) "
            f"SELECT id FROM new ORDER BY ord",
            [meta.db_table, meta.pk.column, len(jobs), *params, RequestStatus.BATCHING_IN_PROGRESS, ids, positions])
        for job, (pk,) in zip(jobs, cursor.fetchall(), strict=True):
            job.pk = pk
            job._state.adding = False
    return jobs


def _lease_local_batches(now: datetime) -> list[dict[str, Any]]:
    """Take the submission lease of local batches an earlier run left: failed to submit, or crashed."""
    cutoff = now - timedelta(seconds=conf.get("SUBMIT_LEASE"))
    with transaction.atomic():
        jobs = list(BatchJob.objects.local()
                    .filter(Q(submit_started_at__isnull=True) | Q(submit_started_at__lt=cutoff))
                    .select_for_update(skip_locked=True)
                    .values("id", "company_id", "model", "endpoint", "job_type", "request_count",
                            "submit_started_at", "status_history", "provider_error_count"))
        if jobs:
            BatchJob.objects.filter(id__in=[j["id"] for j in jobs]).update(submit_started_at=now)
    return jobs


class InputLine(Func):
    """A request's line of the JSONL input file, as the database's text: custom_id, method, url and body."""

    output_field = TextField()

    def __init__(self) -> None:
        super().__init__(F("custom_id"), F("endpoint"), F("body"))

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        # PostgreSQL and SQLite (the backends the app is tested on) concatenate with || and quote JSON strings.
        (custom_id, p1), (endpoint, p2), (body, p3) = (compiler.compile(e) for e in self.get_source_expressions())
        if connection.vendor == "postgresql":
            custom_id, endpoint, body = f"to_json({custom_id})::text", f"to_json({endpoint})::text", f"{body}::text"
        else:
            custom_id, endpoint = f"json_quote({custom_id})", f"json_quote({endpoint})"
        return (f"""('{{"custom_id":' || {custom_id} || ',"method":"POST","url":' || {endpoint} || ',"body":' || """
                f"{body} || '}}')", [*p1, *p2, *p3])


def _jsonl(lines: Iterable[str]) -> bytes:
    """A JSONL file's bytes from its lines (each already one JSON document)."""
    return ("\n".join(lines) + "\n").encode()


def _input_file(rows: list[_ClaimRow]) -> bytes:
    """A new batch's JSONL input file from its claimed rows' lines."""
    return _jsonl(r[7] for r in rows)


def _input_files(job_ids: list[int]) -> dict[int, bytes]:
    """Build the JSONL input files of batches an earlier run left unsubmitted, from their requests."""
    lines: dict[int, list[str]] = defaultdict(list)
    rows = (AIProcessingRequest.objects.filter(batch_id__in=job_ids, status=RequestStatus.BATCHING_IN_PROGRESS)
            .annotate(line=InputLine()).values_list("batch_id", "line"))
    for batch_id, line in rows.iterator(chunk_size=10_000):
        lines[batch_id].append(line)
    return {batch_id: _jsonl(group) for batch_id, group in lines.items()}


def _submit(jobs: list[dict[str, Any]], submitter: _Submitter, now: datetime, circuit: _Circuit
            ) -> tuple[list[dict[str, Any]], int]:
    """Upload (unless already uploading) and create each leased batch; adopt batches a crashed run created."""
    if not jobs:
        return [], 0
    provider = submitter.provider
    adopted: dict[str, ProviderBatch] = {}
    errors = 0
    resumed = [j for j in jobs if j["submit_started_at"]]
    if resumed:
        # A previous run may have crashed after the provider created the batch but before we saved its id:
        # find it by the metadata we tag every batch with, rather than creating a duplicate.
        oldest = min(j["submit_started_at"] for j in resumed)
        try:
            for batch in provider.list_batches():
                if batch.metadata.get(METADATA_KEY):
                    adopted[batch.metadata[METADATA_KEY]] = batch
                if batch.created_at and batch.created_at < oldest.timestamp() - 3600:
                    break
            circuit.record(None)
        except ProviderError as exc:
            circuit.record(exc)
            _record_failures(resumed, exc)
            errors += len(resumed)
            jobs = [j for j in jobs if not j["submit_started_at"]]
    outcomes: dict[int, tuple[str, ProviderBatch] | ProviderError] = {}
    for job in jobs:
        if (batch := adopted.get(str(job["id"]))) is not None:
            outcomes[job["id"]] = (batch.input_file_id, batch)
    # Batches an earlier run left: rebuild their files from their requests, then create them like the claimed ones
    # (whose creates started as soon as their part of the claim committed).
    files = _input_files([j["id"] for j in jobs if j["id"] not in submitter.uploads and j["id"] not in outcomes])
    for job_id, content in files.items():
        submitter.uploads[job_id] = submitter.upload(f"batchjob-{job_id}.jsonl", lambda content=content: content)
    for job in jobs:
        if job["id"] in submitter.uploads and job["id"] not in submitter.creates and job["id"] not in outcomes:
            submitter.create(job)
    for job in jobs:
        if job["id"] not in outcomes and (created := submitter.creates.get(job["id"])) is not None:
            outcomes[job["id"]] = created.result()

    updates, submitted = [], []
    for job in jobs:
        if job["id"] not in outcomes:  # a local batch whose requests are all gone (cancelled or retried)
            continue
        outcome = outcomes[job["id"]]
        if isinstance(outcome, ProviderError):
            circuit.record(outcome)
            errors += 1
            updates.append(BatchJob(id=job["id"], last_error=str(outcome)[:2000], submit_started_at=None,
                                    provider_error_count=job["provider_error_count"] + 1))
            continue
        circuit.record(None)
        file_id, batch = outcome
        update = BatchJob(id=job["id"], input_file_id=file_id, last_error="", submit_started_at=now,
                          provider_error_count=job["provider_error_count"])
        _apply(update, batch, job["status_history"], now)
        updates.append(update)
        submitted.append(job)
    fields = ["last_error", "submit_started_at", "provider_error_count", "input_file_id", "provider_batch_id",
              "status", "submitted_at", "status_history", *PROVIDER_TIMESTAMPS, "output_file_id", "error_file_id",
              "provider_errors"]
    ok = [u for u in updates if u.provider_batch_id]
    failed = [u for u in updates if not u.provider_batch_id]
    if ok:
        _bulk_update(ok, fields)
    if failed:
        _bulk_update(failed, ["last_error", "submit_started_at", "provider_error_count"])
    return submitted, errors


def _record_failures(jobs: list[dict[str, Any]], error: ProviderError) -> None:
    _bulk_update(
        [BatchJob(id=j["id"], last_error=str(error)[:2000], submit_started_at=None,
                  provider_error_count=j["provider_error_count"] + 1) for j in jobs],
        ["last_error", "submit_started_at", "provider_error_count"])


def _apply(job: BatchJob, batch: ProviderBatch, history: list[dict[str, Any]], now: datetime) -> bool:
    """Copy the provider's view of a batch onto ``job``; return whether its status changed."""
    job.provider_batch_id = batch.id
    previous = history[-1]["status"] if history else None
    job.status = batch.status
    job.submitted_at = _ts(batch.created_at)
    for name in PROVIDER_TIMESTAMPS:
        setattr(job, name, _ts(getattr(batch, name)))
    job.output_file_id = batch.output_file_id or ""
    job.error_file_id = batch.error_file_id or ""
    job.provider_errors = batch.errors
    changed = previous != batch.status
    job.status_history = [*history, {"status": batch.status, "at": now.isoformat()}] if changed else history
    return changed


# --- check ------------------------------------------------------------------------------------------------

_CHECK_FIELDS = ["status", "submitted_at", *PROVIDER_TIMESTAMPS, "output_file_id", "error_file_id",
                 "provider_errors", "status_history", "last_error", "provider_error_count", "metadata"]


def check_batches(*, now: datetime | None = None) -> StepResult:
    """Poll every in-flight batch and record its status changes and timestamps."""
    now = now or timezone.now()
    with _metered(PipelineStep.CHECK) as result:
        circuit = _Circuit(now)
        if circuit.open:
            result.detail["skipped"] = "circuit open"
            return result
        jobs = list(BatchJob.objects.in_flight().exclude(provider_batch_id=None).only(*_CHECK_FIELDS,
                                                                                    "provider_batch_id"))
        changes = _poll(jobs, lambda job: get_provider().retrieve_batch(job.provider_batch_id), now, circuit,
                        result)
        result.items = len(jobs)
        result.detail["status_changes"] = changes
        circuit.save()
    return result


def _poll(jobs: list[BatchJob], call: Callable[[BatchJob], ProviderBatch], now: datetime, circuit: _Circuit,
          result: StepResult) -> dict[str, int]:
    """Run ``call`` on each job in parallel, apply the answers and save them in one bulk update."""
    changes: Counter[str] = Counter()
    for job, outcome in _parallel(call, jobs):
        if isinstance(outcome, ProviderError):
            circuit.record(outcome)
            result.errors += 1
            job.last_error, job.provider_error_count = str(outcome)[:2000], job.provider_error_count + 1
            continue
        circuit.record(None)
        job.last_error = ""
        if _apply(job, outcome, job.status_history, now):
            changes[outcome.status] += 1
    if jobs:
        _bulk_update(jobs, _CHECK_FIELDS)
    return dict(changes)


# --- expire -----------------------------------------------------------------------------------------------

def expire_batches(*, now: datetime | None = None) -> StepResult:
    """Cancel batches still running past their completion window (plus grace) so their results arrive."""
    now = now or timezone.now()
    with _metered(PipelineStep.EXPIRE) as result:
        circuit = _Circuit(now)
        if circuit.open:
            result.detail["skipped"] = "circuit open"
            return result
        cutoff = now - timedelta(seconds=conf.get("EXPIRY_GRACE"))
        jobs = list(BatchJob.objects.filter(status__in=IN_FLIGHT_STATES, expires_at__lt=cutoff)
                    .exclude(status=BatchStatus.CANCELLING).only(*_CHECK_FIELDS, "provider_batch_id"))
        provider = get_provider()

        def expire(job: BatchJob) -> ProviderBatch:
            batch = provider.retrieve_batch(job.provider_batch_id)
            if batch.status in IN_FLIGHT_STATES and batch.status != BatchStatus.CANCELLING:
                job.metadata = {**job.metadata, "expired_locally": now.isoformat()}
                batch = provider.cancel_batch(job.provider_batch_id)
            return batch

        result.detail["status_changes"] = _poll(jobs, expire, now, circuit, result)
        result.items = len(jobs)
        circuit.save()
    return result


# --- process ----------------------------------------------------------------------------------------------

@dataclass
class _Outcome:
    request_id: int
    status: str
    response: Any = None
    code: str = ""
    message: str = ""
    usage: tuple[int, int, int, int] = (0, 0, 0, 0)
    cost: Decimal | None = None
    sync_cost: Decimal | None = None
    next_attempt_at: datetime | None = None


def _usage(body: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input, cached input, output, reasoning) tokens of a response body of any endpoint."""
    usage = body.get("usage") or {}
    if "input_tokens" in usage:  # /v1/responses
        return (int(usage.get("input_tokens") or 0),
                int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
                int(usage.get("output_tokens") or 0),
                int((usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0))
    return (int(usage.get("prompt_tokens") or 0),
            int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
            int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0))


def _parse_line(raw: bytes) -> tuple[str | None, str, Any, str, str]:
    """Read one output/error line: (custom_id, "ok" | "error", response body, error code, message)."""
    try:
        line = orjson.loads(raw)  # its JSONDecodeError is a ValueError
        custom_id = line["custom_id"]
        response = line.get("response")
        if response and response.get("status_code") == 200:
            body = response.get("body")
            if not isinstance(body, dict):
                raise ValueError("response body is not an object")
            return custom_id, "ok", body, "", ""
        if response:
            error = (response.get("body") or {}).get("error") or {}
            return (custom_id, "error", None, str(error.get("code") or f"http_{response.get('status_code')}"),
                    str(error.get("message") or ""))
        error = line.get("error") or {}
        return custom_id, "error", None, str(error.get("code") or "unknown_error"), str(error.get("message") or "")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        match = _CUSTOM_ID.search(raw)
        return (match.group(1).decode() if match else None, "error", None, "malformed_result",
                f"Unreadable result line ({type(exc).__name__}: {exc}).")


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(conf.get("BACKOFF") * 2 ** max(attempts - 1, 0), conf.get("BACKOFF_MAX")))


def process_results(*, now: datetime | None = None) -> StepResult:
    """Read the output and error files of finished batches and store each request's result and cost."""
    now = now or timezone.now()
    with _metered(PipelineStep.PROCESS) as result:
        circuit = _Circuit(now)
        if circuit.open:
            result.detail["skipped"] = "circuit open"
            return result
        jobs = list(BatchJob.objects.unprocessed().order_by("id")
                    .only("id", "status", "model", "output_file_id", "error_file_id", "provider_errors", "metadata")
                    [: conf.get("PROCESS_BATCHES_PER_RUN")])
        provider = get_provider()

        def fetch(job: BatchJob) -> tuple[bytes, bytes]:
            return (provider.file_content(job.output_file_id) if job.output_file_id else b"",
                    provider.file_content(job.error_file_id) if job.error_file_id else b"")

        fetched = {}
        for job, outcome in _parallel(fetch, jobs):
            circuit.record(outcome if isinstance(outcome, ProviderError) else None)
            if isinstance(outcome, ProviderError):
                result.errors += 1
                BatchJob.objects.filter(pk=job.pk).update(last_error=str(outcome)[:2000])
            else:
                fetched[job.pk] = (job, outcome)
        circuit.save()
        lines = _store_results(list(fetched.values()), now)
        result.items = lines
        result.detail["batches"] = len(fetched)
    return result


def _store_results(batches: list[tuple[BatchJob, tuple[bytes, bytes]]], now: datetime) -> int:
    """Match result lines to requests by custom_id, then write requests and batch totals in bulk."""
    if not batches:
        return 0
    retryable = set(conf.get("RETRYABLE_ERRORS"))
    max_attempts = conf.get("MAX_ATTEMPTS")
    requests: dict[int, dict[str, tuple[int, str, int]]] = defaultdict(dict)
    rows = AIProcessingRequest.objects.filter(batch_id__in=[job.pk for job, _ in batches],
                                              status=RequestStatus.BATCHING_IN_PROGRESS)
    for rid, batch_id, custom_id, model, attempts in rows.values_list("id", "batch_id", "custom_id", "model",
                                                                       "attempts"):
        requests[batch_id][custom_id] = (rid, model, attempts)
    outcomes: list[_Outcome] = []
    job_updates: list[BatchJob] = []
    line_count = 0
    for job, (output, errors) in batches:
        members = requests.get(job.pk, {})
        seen: dict[str, _Outcome] = {}
        summary: Counter[str] = Counter()
        totals = {"cost": Decimal(0), "sync": Decimal(0), "input": 0, "output": 0}
        for raw in (*output.splitlines(), *errors.splitlines()):
            if not raw.strip():
                continue
            line_count += 1
            custom_id, kind, body, code, message = _parse_line(raw)
            member = members.get(custom_id) if custom_id else None
            if member is None or custom_id in seen:
                summary["unmatched_line"] += 1
                continue
            rid, model, attempts = member
            if kind == "ok":
                usage = _usage(body)
                cost = pricing.cost_of(model, usage[0], usage[1], usage[2])
                outcome = _Outcome(rid, RequestStatus.COMPLETED, response=body, usage=usage,
                                   cost=cost.batch if cost else None, sync_cost=cost.sync if cost else None)
                totals["cost"] += outcome.cost or 0
                totals["sync"] += outcome.sync_cost or 0
                totals["input"] += usage[0]
                totals["output"] += usage[2]
            else:
                outcome = _failure(rid, attempts, code, message, retryable, max_attempts, now)
                summary[code] += 1
            seen[custom_id] = outcome
        # Requests with no line at all: the batch stopped before reaching them (expired, cancelled, failed).
        missing_code = _missing_code(job)
        for custom_id, (rid, _, attempts) in members.items():
            if custom_id not in seen:
                message = _missing_message(job, missing_code)
                seen[custom_id] = _failure(rid, attempts, missing_code, message, retryable, max_attempts, now)
                summary[missing_code] += 1
        outcomes.extend(seen.values())
        completed = sum(1 for o in seen.values() if o.status == RequestStatus.COMPLETED)
        job_updates.append(BatchJob(
            id=job.pk, completed_count=completed, failed_count=len(seen) - completed, cost=totals["cost"],
            sync_cost=totals["sync"], savings=totals["sync"] - totals["cost"], input_tokens=totals["input"],
            output_tokens=totals["output"], error_summary=dict(summary), results_processed_at=now))
    _write_outcomes(outcomes, now)
    _bulk_update(job_updates, ["completed_count", "failed_count", "cost", "sync_cost", "savings", "input_tokens",
                               "output_tokens", "error_summary", "results_processed_at"])
    return line_count


def _missing_code(job: BatchJob) -> str:
    if job.status == BatchStatus.EXPIRED or (job.status == BatchStatus.CANCELLED and job.metadata.get(
            "expired_locally")):
        return "batch_expired"
    return {BatchStatus.CANCELLED: "batch_cancelled", BatchStatus.FAILED: "batch_failed"}.get(job.status,
                                                                                           "missing_result")


def _missing_message(job: BatchJob, code: str) -> str:
    if code == "batch_failed":
        details = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in job.provider_errors or [])
        return f"The batch failed validation ({details or 'no detail from the provider'})."
    return {"batch_expired": "The batch's completion window passed before this request ran.",
            "batch_cancelled": "The batch was cancelled before this request ran.",
            "missing_result": "The provider returned no result line for this request."}[code]


def _failure(rid: int, attempts: int, code: str, message: str, retryable: set[str], max_attempts: int,
             now: datetime) -> _Outcome:
    if code in retryable and attempts < max_attempts:
        return _Outcome(rid, RequestStatus.RETRY_SCHEDULED, code=code, message=message,
                        next_attempt_at=now + _backoff(attempts))
    return _Outcome(rid, RequestStatus.FAILED, code=code, message=message)


def _write_outcomes(outcomes: list[_Outcome], now: datetime) -> None:
    """Store every request's outcome: one UPDATE ... FROM unnest(...) on PostgreSQL, bulk_update elsewhere."""
    if not outcomes:
        return
    done = (RequestStatus.COMPLETED, RequestStatus.FAILED)
    if _is_postgres():
        table = AIProcessingRequest._meta.db_table
        columns = list(zip(*[(
            o.request_id, o.status, orjson.dumps(o.response).decode() if o.response is not None else None, o.code,
            o.message[:10_000], *o.usage, o.cost, o.sync_cost, o.next_attempt_at,
            now if o.status in done else None) for o in outcomes], strict=True))
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS r SET status = v.status, response_body = v.response::jsonb, "
                f"error_code = v.code, error_message = v.message, input_tokens = v.input_tokens, "
                f"cached_input_tokens = v.cached, output_tokens = v.output_tokens, reasoning_tokens = v.reasoning, "
                f"cost = v.cost, sync_cost = v.sync_cost, next_attempt_at = v.next_at, completed_at = v.done_at "
                f"FROM unnest(%s::bigint[], %s::varchar[], %s::text[], %s::varchar[], %s::text[], %s::int[], "
                f"%s::int[], %s::int[], %s::int[], %s::numeric[], %s::numeric[], %s::timestamptz[], "
                f"%s::timestamptz[]) AS v(id, status, response, code, message, input_tokens, cached, output_tokens, "
                f"reasoning, cost, sync_cost, next_at, done_at) WHERE r.id = v.id",
                [list(c) for c in columns])
        return
    AIProcessingRequest.objects.bulk_update(
        [AIProcessingRequest(id=o.request_id, status=o.status, response_body=o.response, error_code=o.code,
                             error_message=o.message, input_tokens=o.usage[0], cached_input_tokens=o.usage[1],
                             output_tokens=o.usage[2], reasoning_tokens=o.usage[3], cost=o.cost,
                             sync_cost=o.sync_cost, next_attempt_at=o.next_attempt_at,
                             completed_at=now if o.status in done else None) for o in outcomes],
        ["status", "response_body", "error_code", "error_message", "input_tokens", "cached_input_tokens",
         "output_tokens", "reasoning_tokens", "cost", "sync_cost", "next_attempt_at", "completed_at"],
        batch_size=500)


# --- retry ------------------------------------------------------------------------------------------------

def retry_failed(*, now: datetime | None = None) -> StepResult:
    """Put scheduled retries whose backoff has passed back into the pending pool for a later batch."""
    now = now or timezone.now()
    with _metered(PipelineStep.RETRY) as result:
        result.items = AIProcessingRequest.objects.retry_due(now).update(
            status=RequestStatus.PENDING_BATCHING, batch=None, next_attempt_at=None)
    return result


# --- operator actions ------------------------------------------------------------------------------------

def retryable_requests(job: BatchJob) -> Any:
    """The requests of a finished batch an operator may resubmit (failed, expired, awaiting retry)."""
    return AIProcessingRequest.objects.filter(
        batch=job, status__in=(RequestStatus.FAILED, RequestStatus.RETRY_SCHEDULED))


def retry_batch(job: BatchJob, actor: Actor, *, dry_run: bool = False) -> int:
    """Resubmit a finished batch's failed and expired requests in a later batch; return how many."""
    if job.results_processed_at is None:
        raise ActionError(f"Batch {job} is {job.status} and its results are not processed yet; retry it once it "
                          f"has finished and its results were read.")
    with transaction.atomic():
        requests = retryable_requests(job).select_for_update()
        count = len(ids := list(requests.values_list("id", flat=True)))
        if not count:
            raise ActionError(f"Batch {job} has no failed or expired requests to retry.")
        if not dry_run:
            AIProcessingRequest.objects.filter(id__in=ids).update(
                status=RequestStatus.PENDING_BATCHING, batch=None, next_attempt_at=None, attempts=0,
                error_code="", error_message="", completed_at=None)
            record_action(actor, "batches.retry_batch", targets=[job.provider_batch_id or job.pk],
                          parameters={"batch": job.pk}, detail=f"{count} requests resubmitted")
    return count


def cancel_batch(job: BatchJob, actor: Actor) -> BatchJob:
    """Cancel a batch: locally before submission, else at the provider (its finished lines are kept)."""
    now = timezone.now()
    if job.status == BatchStatus.PENDING:
        with transaction.atomic():
            locked = BatchJob.objects.select_for_update().get(pk=job.pk)
            if locked.status != BatchStatus.PENDING or locked.provider_batch_id:
                raise ActionError(f"Batch {locked} was submitted meanwhile; cancel it again.")
            locked.status, locked.cancelled_at, locked.results_processed_at = BatchStatus.CANCELLED, now, now
            locked.status_history = [*locked.status_history, {"status": "cancelled", "at": now.isoformat()}]
            locked.failed_count = AIProcessingRequest.objects.filter(batch=locked).update(
                status=RequestStatus.FAILED, error_code="batch_cancelled", completed_at=now,
                error_message="The batch was cancelled before it was submitted.")
            locked.error_summary = {"batch_cancelled": locked.failed_count}
            locked.save()
            record_action(actor, "batches.cancel_batch", targets=[locked.pk], parameters={"batch": locked.pk},
                          detail="cancelled before submission")
        return locked
    if job.status not in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING):
        raise ActionError(f"Batch {job} is {job.status}; only pending, validating, in_progress or finalizing "
                          f"batches can be cancelled.")
    try:
        batch = get_provider().cancel_batch(job.provider_batch_id)
    except ProviderError as exc:
        BatchJob.objects.filter(pk=job.pk).update(last_error=str(exc)[:2000])
        record_action(actor, "batches.cancel_batch", targets=[job.provider_batch_id], parameters={"batch": job.pk},
                      outcome="error", detail=str(exc)[:500])
        raise
    _apply(job, batch, job.status_history, now)
    job.save(update_fields=["status", "submitted_at", *PROVIDER_TIMESTAMPS, "output_file_id", "error_file_id",
                            "provider_errors", "status_history", "provider_batch_id"])
    record_action(actor, "batches.cancel_batch", targets=[job.provider_batch_id], parameters={"batch": job.pk},
                  detail=f"provider status {batch.status}")
    return job


def run_all(*, now: datetime | None = None) -> list[StepResult]:
    """Run every step once, in pipeline order (used by the demo and the tests)."""
    return [retry_failed(now=now), create_batches(now=now), check_batches(now=now), expire_batches(now=now),
            process_results(now=now)]

"""Every Celery task becomes a durable JobRun from publication to outcome (real worker, real broker)."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from types import SimpleNamespace

import psycopg2
import pytest
from celery import chain
from django.db import connection
from django.test import override_settings

from jobmonitor import tasks
from jobmonitor.celery import app as celery_app
from monitoring import capture
from monitoring.models import JobRun, JobState

from .factories import wait_until

pytestmark = pytest.mark.worker


def finished_run(task_id: str, state: str = JobState.SUCCESS, timeout: float = 20) -> JobRun:
    """Wait until the worker's events for ``task_id`` are flushed and the job reached ``state``."""
    return wait_until(lambda: JobRun.objects.filter(task_id=task_id, state=state).first(), timeout=timeout)


@pytest.mark.sqlite
def test_success_is_recorded_from_publish_to_finish(celery_worker):
    result = tasks.add.delay(2, 3)
    assert result.get(timeout=10) == 5

    run = finished_run(result.id)
    assert run.task_name == "jobmonitor.tasks.add"
    assert run.queue == "default"
    assert run.args == [2, 3] and run.kwargs == {}
    assert run.result == "5"
    assert run.worker == celery_worker.hostname
    assert run.published_at <= run.received_at <= run.started_at <= run.finished_at
    assert run.created_at == run.published_at
    assert run.runtime is not None and 0 <= run.runtime < 5
    # abs=1e-3: SQLite computes it with julianday(), precise to about 10 microseconds.
    assert run.wait_time == pytest.approx((run.started_at - run.published_at).total_seconds(), abs=1e-3)


def test_published_task_is_visible_before_any_worker_takes_it(transactional_db, celery_session_app):
    result = tasks.add.apply_async((1, 1), queue="nobody-consumes-this")
    capture.flush()
    run = JobRun.objects.get(task_id=result.id)
    assert run.state == JobState.PENDING
    assert run.queue == "nobody-consumes-this"
    with celery_session_app.connection_for_write() as conn:
        conn.default_channel.queue_purge("nobody-consumes-this")


def test_failure_keeps_exception_and_traceback(celery_worker):
    result = tasks.fail.delay("disk full")
    with pytest.raises(RuntimeError):
        result.get(timeout=10)

    run = finished_run(result.id, JobState.FAILURE)
    assert run.exception_type == "RuntimeError"
    assert run.exception_message == "disk full"
    assert "Traceback" in run.traceback and 'raise RuntimeError(message)' in run.traceback
    assert run.finished_at is not None and run.runtime is not None
    assert run.result == ""


def test_retry_counts_attempts_and_ends_in_the_final_outcome(celery_worker):
    result = tasks.flaky.delay(fail_times=2)
    assert result.get(timeout=15) == "succeeded after 2 retries"

    run = finished_run(result.id)
    assert run.retries == 2
    # The retry's exception is not the final outcome.
    assert run.exception_type == "" and run.traceback == ""
    assert JobRun.objects.filter(task_id=result.id).count() == 1


def test_revoked_queued_task_is_recorded_as_revoked(celery_worker):
    task_id = str(uuid.uuid4())
    celery_app.control.revoke(task_id)
    wait_until(lambda: task_id in __import__("celery.worker.state", fromlist=["revoked"]).revoked)
    tasks.add.apply_async((1, 2), task_id=task_id)

    run = finished_run(task_id, JobState.REVOKED)
    assert run.started_at is None
    assert run.exception_message == "Task revoked."


def test_countdown_task_is_recorded_as_scheduled_then_runs(celery_worker):
    result = tasks.add.apply_async((4, 4), countdown=2)
    capture.flush()
    scheduled = JobRun.objects.get(task_id=result.id)
    assert scheduled.state in (JobState.PENDING, JobState.RECEIVED)
    assert scheduled.eta is not None
    assert scheduled.eta - scheduled.published_at >= timedelta(seconds=1.9)

    assert result.get(timeout=10) == 8
    run = finished_run(result.id)
    assert run.started_at >= scheduled.eta - timedelta(milliseconds=50)
    assert run.wait_time >= 1.9


def test_a_task_waiting_in_the_worker_is_recorded_as_received_with_its_eta(celery_worker):
    result = tasks.add.apply_async((2, 2), countdown=3)

    def received():
        capture.flush()
        return JobRun.objects.filter(task_id=result.id, state=JobState.RECEIVED).first()

    job = wait_until(received, timeout=5)
    assert job.worker == celery_worker.hostname
    assert job.received_at is not None and job.eta is not None and job.eta > job.received_at
    assert result.get(timeout=10) == 4


def test_chain_links_children_to_parent_and_root(celery_worker):
    result = chain(tasks.add.s(1, 2), tasks.add.s(10)).delay()
    assert result.get(timeout=10) == 13

    second = finished_run(result.id)
    first = finished_run(result.parent.id)
    assert second.args == [3, 10]
    assert second.parent_id == first.task_id
    assert second.root_id == first.task_id == first.root_id


def test_arguments_are_masked_before_storage(celery_worker):
    result = tasks.send_email.apply_async(("a@example.com", "hi"), {"smtp_password": "hunter2"}, queue="default")
    result.get(timeout=15, propagate=False)
    run = wait_until(lambda: JobRun.objects.filter(task_id=result.id, finished_at__isnull=False).first())
    assert run.kwargs == {"smtp_password": "********"}
    assert "hunter2" not in str(run.args) + str(run.kwargs)


def test_database_outage_never_fails_the_task_and_the_record_appears_after_recovery(celery_worker):
    db_name = connection.settings_dict["NAME"]
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    connection.close()
    try:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS false')
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [db_name])
        result = tasks.add.delay(20, 22)
        assert result.get(timeout=10) == 42  # the task is unaffected by the outage
        wait_until(lambda: capture.buffer._failures > 0)
        assert result.id in capture.buffer
    finally:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS true')
        admin.close()

    run = finished_run(result.id, timeout=40)
    assert run.result == "42" and run.args == [20, 22]


@pytest.mark.sqlite
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("same_flush", [True, False], ids=["merged-in-memory", "merged-by-upsert"])
def test_duplicate_and_out_of_order_events_never_move_state_backwards(same_flush):
    t0 = capture.now()
    task_id = "dup-1"
    events = [
        capture.make_row(task_id, JobState.SUCCESS, task_name="t", finished_at=t0 + timedelta(seconds=3),
                         runtime=1.5, result="ok"),
        capture.make_row(task_id, JobState.STARTED, task_name="t", started_at=t0 + timedelta(seconds=1),
                         worker="w1"),
        capture.make_row(task_id, JobState.PENDING, task_name="t", published_at=t0, queue="q", args=[1]),
        capture.make_row(task_id, JobState.SUCCESS, task_name="t", finished_at=t0 + timedelta(seconds=9),
                         result="duplicate"),
        capture.make_row(task_id, JobState.RECEIVED, task_name="t", received_at=t0 + timedelta(seconds=0.5)),
    ]
    for event in events:
        capture.record(event)
        if not same_flush:
            capture.flush()
    capture.flush()

    run = JobRun.objects.get(task_id=task_id)
    assert run.state == JobState.SUCCESS
    assert run.result == "ok"  # the first terminal event wins over a duplicate
    assert run.finished_at == t0 + timedelta(seconds=3)
    assert run.runtime == 1.5
    assert run.published_at == t0 and run.queue == "q" and run.args == [1]
    assert run.started_at == t0 + timedelta(seconds=1)
    assert run.received_at == t0 + timedelta(seconds=0.5)
    assert run.worker == "w1"
    assert run.wait_time == pytest.approx(1.0, abs=1e-3)  # julianday() precision on SQLite


@pytest.mark.django_db(transaction=True)
def test_wait_time_runs_from_publication_even_when_the_worker_reports_first():
    t0 = capture.now()
    worker_side = capture.make_row("w-1", JobState.STARTED, task_name="t", received_at=t0 + timedelta(seconds=4),
                                   started_at=t0 + timedelta(seconds=5))
    capture.record(worker_side)
    capture.flush()
    assert JobRun.objects.get(task_id="w-1").wait_time == pytest.approx(1.0)  # from receipt, for now
    capture.record(capture.make_row("w-1", JobState.PENDING, task_name="t", published_at=t0))
    capture.flush()
    assert JobRun.objects.get(task_id="w-1").wait_time == pytest.approx(5.0)
    capture.record(capture.make_row("w-1", JobState.STARTED, task_name="t", started_at=t0 + timedelta(seconds=60)))
    capture.flush()
    assert JobRun.objects.get(task_id="w-1").wait_time == pytest.approx(5.0)  # a retry's start changes nothing


@pytest.mark.django_db(transaction=True)
def test_a_real_outcome_replaces_lost_but_not_the_other_way_round():
    capture.record(capture.make_row("lost-1", JobState.STARTED, task_name="t", started_at=capture.now()))
    capture.flush()
    capture.record(capture.make_row("lost-1", JobState.LOST, task_name="t"))
    capture.flush()
    capture.record(capture.make_row("lost-1", JobState.SUCCESS, task_name="t", result="late but fine",
                                    finished_at=capture.now()))
    capture.flush()
    capture.record(capture.make_row("lost-1", JobState.LOST, task_name="t"))
    capture.flush()
    run = JobRun.objects.get(task_id="lost-1")
    assert (run.state, run.result) == (JobState.SUCCESS, "late but fine")


@pytest.mark.django_db(transaction=True)
def test_a_row_the_database_rejects_does_not_block_the_others():
    capture.record(capture.make_row("good-1", JobState.PENDING, task_name="t"))
    capture.record(capture.make_row("bad-1", JobState.PENDING, task_name="t", priority=70_000))  # > smallint
    capture.record(capture.make_row("good-2", JobState.PENDING, task_name="t"))
    capture.flush()
    assert set(JobRun.objects.values_list("task_id", flat=True)) == {"good-1", "good-2"}
    assert len(capture.buffer) == 0


@pytest.mark.sqlite
@pytest.mark.django_db(transaction=True)
def test_long_names_and_nul_bytes_are_stored_not_dropped():
    capture.record(capture.make_row("nul-1", JobState.FAILURE, task_name="x" * 400,
                                    exception_message="bad\x00byte", finished_at=capture.now()))
    capture.flush()
    run = JobRun.objects.get(task_id="nul-1")
    assert len(run.task_name) == 255
    assert run.exception_message == "bad\ufffdbyte"


AWKWARD_TEXT = ['', 'NULL', 'null', '"', '\\', '\\"', '{a,b}', 'a,b', ' padded ', 'line\nbreak\ttab', "it's",
                'ünïcödé ✓', '{"json": "in text"}', '\\N']


@pytest.mark.sqlite
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("text", AWKWARD_TEXT)
def test_text_that_looks_like_syntax_is_stored_exactly(text):
    # PostgreSQL receives each column of a flush as one array literal: quoting must be exact.
    t0 = capture.now()
    capture.record(capture.make_row("odd-1", JobState.PENDING, task_name="t", published_at=t0, queue=text,
                                    args=[text, {text: text}], kwargs={"k": text}))
    capture.record(capture.make_row("odd-2", JobState.FAILURE, task_name="t" + text, finished_at=t0,
                                    exception_type="E" + text, exception_message=text, traceback=text,
                                    worker="w" + text, priority=3, runtime=0.25))
    capture.flush()
    first, second = JobRun.objects.get(task_id="odd-1"), JobRun.objects.get(task_id="odd-2")
    assert (first.queue, first.args, first.kwargs) == (text, [text, {text: text}], {"k": text})
    assert first.published_at == t0 and first.state == JobState.PENDING and first.retries == 0
    assert (second.task_name, second.exception_type, second.exception_message, second.traceback,
            second.worker) == ("t" + text, "E" + text, text, text, "w" + text)
    assert (second.priority, second.runtime, second.finished_at, second.args) == (3, 0.25, t0, None)


@pytest.mark.sqlite
@pytest.mark.django_db(transaction=True)
@override_settings(MONITORING={"MAX_ARGUMENTS_BYTES": 100})
def test_oversized_arguments_are_capped_with_a_visible_marker():
    capture.record(capture.make_row("big-1", JobState.PENDING, task_name="t", args=["a" * 500], kwargs={"k": 1}))
    capture.flush()
    run = JobRun.objects.get(task_id="big-1")
    assert run.arguments_truncated is True
    assert run.args[capture.TRUNCATED] is True
    assert run.args["bytes"] == len('["' + "a" * 500 + '"]') and run.args["limit"] == 100
    assert len(run.args["preview"]) == 100
    assert run.kwargs == {"k": 1}


def test_masking_hook_is_configurable():
    with override_settings(MONITORING={"MASKING_HOOK": "tests.test_capture.redact_everything"}):
        value, truncated = capture.prepare_arguments({"a": 1}, task_name="t", field="kwargs")
    assert value == {"redacted": "kwargs of t"} and truncated is False


def redact_everything(value, *, task_name, field):
    return {"redacted": f"{field} of {task_name}"}


def test_the_worker_records_arguments_only_for_messages_whose_publisher_did_not(monkeypatch):
    recorded = {}
    monkeypatch.setattr(capture, "record", lambda row: recorded.__setitem__(row["task_id"], row))

    def prerun(task_id, **headers):
        request = SimpleNamespace(hostname="celery@h", retries=0, delivery_info={"routing_key": "q"},
                                  parent_id=None, root_id=None, **headers)
        capture.on_task_prerun(task_id=task_id, task=SimpleNamespace(name="t", request=request), args=[1],
                               kwargs={"password": "hunter2"})
        return recorded[task_id]

    headers = {"id": "p-1", "task": "t"}
    capture.on_before_task_publish(sender="t", body=([1], {}, {}), headers=headers)
    assert recorded["p-1"]["args"] == [1]
    assert headers[capture.ARGUMENTS_RECORDED_HEADER] is True  # travels with the message to task.request
    assert "args" not in prerun("p-1", **{capture.ARGUMENTS_RECORDED_HEADER: True})
    from_elsewhere = prerun("p-2")  # e.g. published by a process without the capture
    assert from_elsewhere["args"] == [1] and from_elsewhere["kwargs"] == {"password": "********"}


def _set(row: dict) -> dict:
    return {key: value for key, value in row.items() if value is not None}


@pytest.mark.sqlite
@pytest.mark.parametrize("state", [JobState.SUCCESS, JobState.FAILURE])
def test_the_pool_processes_lean_rows_equal_the_generic_rows_merged(monkeypatch, state):
    # prerun and postrun build their rows directly and merge the outcome into the buffered start in place;
    # what they buffer must be what make_row + _merge make of the same events.
    stamp = capture.now()
    monkeypatch.setattr(capture, "now", lambda: stamp)
    request = SimpleNamespace(hostname="celery@h", retries=2, delivery_info={"routing_key": "q\x00ueue"},
                              parent_id="p" * 300, root_id="r", **{capture.ARGUMENTS_RECORDED_HEADER: True})
    task = SimpleNamespace(name="t" * 300, request=request)
    error = ValueError("bad")
    capture.on_task_prerun(task_id="lean-1", task=task, args=[1], kwargs={})
    if state == JobState.FAILURE:
        capture.on_task_failure(sender=task, task_id="lean-1", exception=error, einfo=None)
    capture.on_task_postrun(task_id="lean-1", task=task, retval="done", state=state)
    lean = capture.buffer._pending["lean-1"]

    events = [capture.make_row("lean-1", JobState.STARTED, task_name=task.name, worker="celery@h",
                               queue="q\x00ueue", started_at=stamp, retries=2, parent_id="p" * 300, root_id="r")]
    if state == JobState.FAILURE:
        events.append(capture.make_row("lean-1", JobState.FAILURE, task_name=task.name, finished_at=stamp,
                                       exception_type="ValueError", exception_message="bad",
                                       traceback="".join(capture.tb_module.format_exception(error))))
    events.append(capture.make_row("lean-1", state, task_name=task.name, finished_at=stamp,
                                   runtime=lean["runtime"], result="'done'" if state == JobState.SUCCESS else ""))
    generic = events[0]
    for event in events[1:]:
        generic = capture._merge(generic, event)
    assert _set(lean) == _set(generic)
    assert len(lean["task_name"]) == 255 and lean["queue"] == "q\ufffdueue" and lean["state"] == state


def test_ignored_tasks_are_not_recorded(celery_worker):
    with override_settings(MONITORING={"IGNORE_TASKS": ["jobmonitor.tasks.a*"], "FLUSH_INTERVAL": 0.2}):
        result = tasks.add.delay(1, 1)
        result.get(timeout=10)
        other = tasks.sleep_for.delay(0)
        other.get(timeout=10)
        finished_run(other.id)
    assert not JobRun.objects.filter(task_id=result.id).exists()


def test_discard_waits_for_a_failing_flush_so_its_rows_cannot_come_back(monkeypatch):
    # Without waiting, a flush failing after the discard put its rows back, and they were written later into
    # another test's database (a stray PENDING row in a count).
    import threading

    writing, fail = threading.Event(), threading.Event()

    def blocked_write(rows, using=None):
        writing.set()
        fail.wait(5)
        raise RuntimeError("database unreachable")

    monkeypatch.setattr(capture, "write_rows", blocked_write)
    buffer = capture.CaptureBuffer()
    buffer.add(capture.make_row(str(uuid.uuid4()), JobState.PENDING, task_name="t"))
    flusher = threading.Thread(target=buffer.flush)
    flusher.start()
    assert writing.wait(5)
    discarding = threading.Thread(target=buffer.discard)
    discarding.start()
    discarding.join(0.2)
    assert discarding.is_alive(), "discard must wait for the flush in progress"
    fail.set()
    flusher.join(5)
    discarding.join(5)
    assert len(buffer) == 0


def test_a_receipt_keeps_its_time_and_the_flush_builds_the_row_from_the_request_still_held(monkeypatch):
    # The worker's main process (prefork's bottleneck) keeps only the time and its node name per received task;
    # the row is built at flush time from Celery's request, for the tasks still waiting in the worker then.
    buffer = capture.CaptureBuffer()
    monkeypatch.setattr(capture, "buffer", buffer)
    request = SimpleNamespace(id="r-1", task_name="t", hostname="celery@h", eta="2030-01-01T00:00:00+00:00",
                              delivery_info={"routing_key": "q"}, parent_id=None, root_id="root")
    before = capture.now()
    capture.on_task_received(request=request)
    received_at, worker = buffer._received["r-1"]
    assert isinstance(received_at, float) and worker == "celery@h"

    monkeypatch.setattr(capture, "_waiting_in_this_worker", lambda: None)  # the worker's state is unreadable
    assert capture.buffer._take() == {} and "r-1" in buffer  # kept for the next flush
    monkeypatch.setattr(capture, "_waiting_in_this_worker", lambda: {"r-1": request})
    row = buffer._take()["r-1"]
    assert row["state"] == JobState.RECEIVED and row["task_name"] == "t" and row["worker"] == "celery@h"
    assert row["queue"] == "q" and row["root_id"] == "root" and "parent_id" in row and not row["parent_id"]
    assert row["eta"] == capture._parse_time("2030-01-01T00:00:00+00:00")
    assert before <= row["received_at"] <= capture.now()

    capture.on_task_received(request=request)
    monkeypatch.setattr(capture, "_waiting_in_this_worker", lambda: {})  # a pool process has started it
    assert buffer._take() == {} and "r-1" not in buffer
    with override_settings(MONITORING={"IGNORE_TASKS": ["t"]}):
        capture.on_task_received(request=request)
        monkeypatch.setattr(capture, "_waiting_in_this_worker", lambda: {"r-1": request})
        assert buffer._take() == {}


def test_a_receipt_of_a_task_run_in_the_same_process_adds_its_time_and_worker_to_the_start(monkeypatch):
    # Solo and thread pools run the task in the process that received it; by the flush the request has left
    # the worker, and the receipt completes the start row with what only it knows.
    buffer = capture.CaptureBuffer()
    buffer.add_received("s-1", capture.now().timestamp(), "celery@h")
    buffer.add(capture.make_row("s-1", JobState.STARTED, task_name="t", queue="q", started_at=capture.now()))
    monkeypatch.setattr(capture, "_waiting_in_this_worker", dict)
    row = buffer._take()["s-1"]
    assert row["state"] == JobState.STARTED and row["worker"] == "celery@h" and row["queue"] == "q"
    assert row["received_at"] <= row["started_at"]


def test_the_flusher_thread_outlives_a_failure_of_its_own_and_still_writes_the_buffered_rows(monkeypatch, caplog):
    # It is restarted only by the first event after a flush or by a full buffer: had it died, a quiet process's
    # buffered rows would wait for events that may never come.
    buffer = capture.CaptureBuffer()
    written: list[str] = []
    monkeypatch.setattr(capture, "FLUSHER_PAUSE", 0.01)
    monkeypatch.setattr(capture, "write_rows", lambda rows: written.extend(r["task_id"] for r in rows) or len(written))
    real_get, failures = capture.conf.get, []

    def get(key: str) -> object:
        # Only this buffer's thread fails (the process's own buffer may have a flusher running too).
        if key == "FLUSH_INTERVAL" and threading.current_thread() is buffer._timer and len(failures) < 2:
            failures.append(key)
            raise TypeError("an invalid FLUSH_INTERVAL read at run time")
        return 0.01 if key == "FLUSH_INTERVAL" and threading.current_thread() is buffer._timer else real_get(key)

    monkeypatch.setattr(capture.conf, "get", get)
    buffer.add(capture.make_row("q-1", JobState.PENDING, task_name="t"))
    wait_until(lambda: written == ["q-1"], timeout=5)
    assert buffer._timer.is_alive() and len(failures) == 2
    assert "flusher thread failed" in caplog.text


def test_the_flusher_thread_is_checked_on_the_first_event_after_a_flush_and_when_the_buffer_fills(monkeypatch):
    # Thread.is_alive() on every event was a cost in every process. The flusher empties the buffer, so an event
    # that finds it non-empty (and not full) knows the thread has been started.
    buffer = capture.CaptureBuffer()
    checks = []
    monkeypatch.setattr(buffer, "_ensure_timer", lambda: checks.append(len(buffer)))
    with override_settings(MONITORING={"BUFFER_SIZE": 3}):
        for n in range(4):
            buffer.add(capture.make_row(f"t-{n}", JobState.PENDING, task_name="t"))
        buffer._take()
        buffer.add(capture.make_row("t-9", JobState.PENDING, task_name="t"))
        buffer.add_received("t-10", 0.0, "celery@h")
    assert checks == [1, 3, 4, 1, 2]

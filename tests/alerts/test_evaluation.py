"""Every rule kind fires on seeded data and resolves when the data recovers (fixed clock)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import IntegrityError

from batches.models import BatchJob, BatchStatus, Company
from jobmonitor.celery import app as celery_app
from monitoring import alerts, rollups
from monitoring.models import HISTOGRAM_BOUNDS, Alert, AlertState, JobState
from tests.factories import job_run

from .conftest import HOUR, MINUTE, NOW, make_rule

pytestmark = pytest.mark.usefixtures("only_test_rules")


def state_of(rule) -> str | None:
    """The state of the rule's latest alert (None: it never fired)."""
    alert = Alert.objects.filter(rule=rule).order_by("-fired_at", "-id").first()
    return alert.state if alert else None


def seed(states: list[str], *, start=NOW - 50 * MINUTE, runtime: float = 1.0, **fields) -> None:
    for index, state in enumerate(states):
        job_run(state=state, created_at=start + index * MINUTE, runtime=runtime, **fields)


# --- job metrics ---------------------------------------------------------------------------------------------

def test_error_rate_fires_above_threshold_and_resolves_when_failures_leave_the_window():
    rule = make_rule(metric="error_rate", threshold=10)
    outcomes = [JobState.SUCCESS] * 7 + [JobState.FAILURE] * 2 + [JobState.LOST]
    seed(outcomes)

    alerts.evaluate(now=NOW)

    alert = Alert.objects.get(rule=rule)
    failures = sum(state in (JobState.FAILURE, JobState.LOST) for state in outcomes)
    assert alert.state == AlertState.FIRING
    assert alert.value == pytest.approx(100 * failures / len(outcomes))  # 30%: lost jobs count as failures
    assert alert.severity == "high" and alert.scope_key == "all" and alert.fired_at == NOW
    assert "Error rate 30% above 10%" in alert.message

    seed([JobState.SUCCESS] * 5, start=NOW + 20 * MINUTE)
    later = NOW + 70 * MINUTE  # the failures are now older than the one-hour window
    alerts.evaluate(now=later)
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and alert.resolved_at == later and alert.last_value == 0.0
    assert alert.resolved_by_name == ""  # resolved by the evaluation, not by a person


@pytest.mark.parametrize(("metric", "threshold", "outcomes"), [
    ("error_rate", 10, [JobState.SUCCESS] * 3 + [JobState.FAILURE] * 2),
    ("success_rate", 90, [JobState.SUCCESS] * 3 + [JobState.FAILURE] * 2),
    ("avg_processing_time", 0.5, [JobState.SUCCESS] * 5),
])
def test_a_rate_or_average_over_fewer_jobs_than_min_samples_does_not_fire(metric, threshold, outcomes):
    few = make_rule(name="few", metric=metric, threshold=threshold, min_samples=len(outcomes) + 1)
    enough = make_rule(name="enough", metric=metric, threshold=threshold, min_samples=len(outcomes))
    seed(outcomes)

    report = alerts.evaluate(now=NOW)

    assert state_of(few) is None and state_of(enough) == AlertState.FIRING
    assert report.fired == [Alert.objects.get(rule=enough).pk]

    # More jobs in the window: the first rule's minimum is met, so it fires too.
    seed([JobState.FAILURE if metric != "avg_processing_time" else JobState.SUCCESS], start=NOW - 5 * MINUTE)
    alerts.evaluate(now=NOW + MINUTE)
    assert state_of(few) == AlertState.FIRING


def test_an_open_rate_alert_resolves_when_too_few_jobs_remain_to_establish_it():
    rule = make_rule(metric="error_rate", threshold=10, min_samples=4)
    seed([JobState.SUCCESS, JobState.FAILURE, JobState.FAILURE, JobState.SUCCESS])
    alerts.evaluate(now=NOW)
    assert state_of(rule) == AlertState.FIRING

    seed([JobState.FAILURE], start=NOW + 40 * MINUTE)
    alerts.evaluate(now=NOW + 60 * MINUTE)  # only the last failure is in the window: 100% of one job
    alert = Alert.objects.get(rule=rule)
    assert alert.state == AlertState.RESOLVED and alert.last_value == 100.0


def test_batch_error_rate_counts_processed_requests_as_its_samples(company):
    rule = make_rule(metric="batch_error_rate", threshold=5, min_samples=101)
    batch(company, BatchStatus.COMPLETED, created_at=NOW - 30 * MINUTE, completed_count=80, failed_count=20)
    alerts.evaluate(now=NOW)
    assert state_of(rule) is None  # 20% of 100 requests, one short of the minimum
    rule.min_samples = 100
    rule.save()
    alerts.evaluate(now=NOW)
    assert state_of(rule) == AlertState.FIRING


def test_error_rate_reads_the_same_from_rollups_as_from_job_records():
    rule = make_rule(metric="error_rate", threshold=10)
    seed([JobState.SUCCESS] * 3 + [JobState.FAILURE], start=NOW - 3 * HOUR + 10 * MINUTE)
    rule.window = 4 * 3_600
    rule.save()
    raw = alerts.evaluate(now=NOW)
    value_raw = Alert.objects.get(rule=rule).value
    Alert.objects.all().delete()
    rollups.rebuild(NOW - 5 * HOUR, NOW)
    alerts.evaluate(now=NOW)
    assert raw.fired and Alert.objects.get(rule=rule).value == value_raw == 25.0


def test_success_rate_fires_below_threshold_and_resolves_when_jobs_succeed_again():
    rule = make_rule(metric="success_rate", threshold=90)
    outcomes = [JobState.SUCCESS] * 8 + [JobState.FAILURE] * 2 + [JobState.REVOKED]  # revoked: neither
    seed(outcomes)
    alerts.evaluate(now=NOW)
    assert Alert.objects.get(rule=rule).value == pytest.approx(100 * 8 / 10)

    recovery = [JobState.SUCCESS] * 19 + [JobState.FAILURE]
    seed(recovery, start=NOW + 10 * MINUTE, runtime=0.1)
    alerts.evaluate(now=NOW + 50 * MINUTE)  # the earlier jobs left the window; 19 of 20 succeeded
    assert state_of(rule) == AlertState.RESOLVED
    assert Alert.objects.get(rule=rule).last_value == pytest.approx(100 * 19 / 20)


def test_average_processing_time_fires_above_an_hour_and_resolves_when_jobs_get_fast():
    rule = make_rule(metric="avg_processing_time", threshold=3_600, window=6 * 3_600)
    runtimes = [3_000.0, 4_000.0, 5_500.0]
    for index, runtime in enumerate(runtimes):
        job_run(created_at=NOW - 5 * HOUR + index * MINUTE, runtime=runtime)
    alerts.evaluate(now=NOW)
    assert Alert.objects.get(rule=rule).value == pytest.approx(sum(runtimes) / len(runtimes))

    later = NOW + 3 * HOUR  # the slow jobs finished more than six hours before
    seed([JobState.SUCCESS] * 3, start=NOW + 2 * HOUR, runtime=30.0)
    alerts.evaluate(now=later)
    assert state_of(rule) == AlertState.RESOLVED
    assert Alert.objects.get(rule=rule).last_value == pytest.approx(30.0)


def test_p95_processing_time_fires_above_threshold_and_resolves():
    rule = make_rule(metric="p95_processing_time", threshold=60)
    runtimes = [1.0] * 18 + [200.0, 400.0]
    for index, runtime in enumerate(runtimes):
        job_run(created_at=NOW - 50 * MINUTE + index * MINUTE, runtime=runtime, finished_at=NOW - 20 * MINUTE)
    alerts.evaluate(now=NOW)
    value = Alert.objects.get(rule=rule).value
    # The estimate comes from histogram buckets: it lies in the bucket of the exact 95th percentile.
    exact = sorted(runtimes)[math.ceil(0.95 * len(runtimes)) - 1]
    upper = next(bound for bound in HISTOGRAM_BOUNDS if bound >= exact)
    lower = HISTOGRAM_BOUNDS[HISTOGRAM_BOUNDS.index(upper) - 1]
    assert lower <= value <= upper and value > 60

    for index in range(20):
        job_run(created_at=NOW + 30 * MINUTE, runtime=2.0, finished_at=NOW + 40 * MINUTE + index * timedelta(seconds=1))
    alerts.evaluate(now=NOW + 45 * MINUTE)  # 20 fast + 2 slow jobs: the 95th percentile is fast
    assert state_of(rule) == AlertState.RESOLVED


def test_throughput_fires_below_half_a_job_per_hour_and_resolves_when_jobs_finish():
    rule = make_rule(metric="throughput", threshold=0.5, window=2 * 3_600, severity="medium")
    job_run(created_at=NOW - 5 * HOUR)  # outside the two-hour window
    alerts.evaluate(now=NOW)
    alert = Alert.objects.get(rule=rule)
    assert alert.state == AlertState.FIRING and alert.value == 0.0

    seed([JobState.SUCCESS, JobState.FAILURE], start=NOW + MINUTE)
    alerts.evaluate(now=NOW + 10 * MINUTE)  # 2 finished jobs in 2 hours = 1 per hour
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and alert.last_value == pytest.approx(2 / 2)


def test_stuck_jobs_fire_for_a_job_active_over_30_minutes_and_resolve_when_it_ends():
    rule = make_rule(metric="stuck_jobs", threshold=1_800, severity="medium")
    job_run(state=JobState.STARTED, created_at=NOW - 10 * MINUTE)  # active, but not long enough
    stuck = job_run(state=JobState.STARTED, created_at=NOW - 45 * MINUTE, wait_time=0)
    alerts.evaluate(now=NOW)
    alert = Alert.objects.get(rule=rule)
    assert alert.value == pytest.approx((NOW - stuck.started_at).total_seconds())
    assert alert.details["stuck"] == 1 and alert.details["longest"][0]["task_id"] == stuck.task_id

    type(stuck).objects.filter(pk=stuck.pk).update(state=JobState.SUCCESS, finished_at=NOW + MINUTE)
    alerts.evaluate(now=NOW + 2 * MINUTE)
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED


def test_scope_limits_a_rule_to_one_queue_or_task_name():
    on_queue = make_rule(name="emails", metric="error_rate", threshold=10, scope="queue", scope_value="emails")
    on_task = make_rule(name="add", metric="error_rate", threshold=10, scope="task_name",
                        scope_value="app.add")
    seed([JobState.FAILURE] * 2, queue="emails", task_name="app.mail")
    seed([JobState.SUCCESS] * 5, queue="default", task_name="app.add")
    alerts.evaluate(now=NOW)
    assert Alert.objects.get(rule=on_queue).scope_key == "queue:emails"
    assert Alert.objects.get(rule=on_queue).value == 100.0
    assert not Alert.objects.filter(rule=on_task).exists()


QUEUE = "alerts-depth-test"


@pytest.mark.django_db
def test_queue_depth_fires_above_threshold_and_resolves_when_the_queue_drains():
    rule = make_rule(metric="queue_depth", threshold=2, scope="queue", scope_value=QUEUE)
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(QUEUE)
        for _ in range(3):
            celery_app.send_task("tests.nobody.consumes", queue=QUEUE, connection=conn)
    cache.clear()
    alerts.evaluate(now=NOW)
    assert Alert.objects.get(rule=rule).value == 3.0

    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(QUEUE)
    cache.clear()  # depths are cached a few seconds
    alerts.evaluate(now=NOW + MINUTE)
    assert state_of(rule) == AlertState.RESOLVED


def test_an_unreachable_broker_leaves_the_alert_as_it_is(settings):
    rule = make_rule(metric="queue_depth", threshold=0, scope="queue", scope_value=QUEUE)
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    from monitoring import brokers

    def unreachable(names, app):
        return brokers.DepthReport(available=False, transport="redis", error="ConnectionError: refused")

    original, brokers.measure_depths = brokers.measure_depths, unreachable
    try:
        cache.clear()
        report = alerts.evaluate(now=NOW)
    finally:
        brokers.measure_depths = original
    assert report.unknown == [rule.pk] and not Alert.objects.exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_no_workers_online_fires_without_a_worker_and_resolves_when_one_answers(celery_session_app):
    from celery.contrib.testing.worker import start_worker

    from monitoring.models import AlertRule

    AlertRule.objects.all().delete()
    rule = make_rule(metric="no_workers_online", threshold=0, severity="critical")
    alerts.evaluate(now=NOW)
    alert = Alert.objects.get(rule=rule)
    assert alert.state == AlertState.FIRING and alert.value == 0.0

    with start_worker(celery_session_app, pool="solo", concurrency=1, perform_ping_check=False,
                      queues=["default"], shutdown_timeout=10) as worker:
        from tests.factories import wait_until

        wait_until(lambda: celery_session_app.control.ping([worker.hostname], timeout=0.5), timeout=20)
        alerts.evaluate(now=NOW + MINUTE)
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and alert.last_value >= 1


# --- batch metrics (registered by the batches app) --------------------------------------------------------

def batch(company: Company, status: str, **fields) -> BatchJob:
    return BatchJob.objects.create(company=company, status=status, endpoint="/v1/chat/completions",
                                   model="gpt-4o-mini", job_type=fields.pop("job_type", "sentiment"), **fields)


@pytest.fixture
def company() -> Company:
    return Company.objects.create(name="Acme")


def test_batch_failed_fires_critical_for_a_batch_that_failed_and_resolves_after_the_window(company):
    rule = make_rule(metric="batch_failed", threshold=1, severity="critical")
    batch(company, BatchStatus.COMPLETED, completed_at=NOW - 5 * MINUTE)
    failed = batch(company, BatchStatus.FAILED, failed_at=NOW - 10 * MINUTE, provider_batch_id="batch_x1")
    alerts.evaluate(now=NOW)
    alert = Alert.objects.get(rule=rule)
    assert alert.severity == "critical" and alert.value == 1.0
    assert [b["provider_batch_id"] for b in alert.details["batches"]] == [failed.provider_batch_id]

    alerts.evaluate(now=NOW + HOUR)  # the failure is older than the window
    assert state_of(rule) == AlertState.RESOLVED


def test_batch_expired_counts_batches_past_their_completion_window_and_not_failed_ones(company):
    rule = make_rule(metric="batch_expired", threshold=2)
    batch(company, BatchStatus.FAILED, failed_at=NOW - 10 * MINUTE)
    batch(company, BatchStatus.EXPIRED, expired_at=NOW - 2 * HOUR)  # before the window
    first = batch(company, BatchStatus.EXPIRED, expired_at=NOW - 20 * MINUTE, provider_batch_id="batch_e1")
    alerts.evaluate(now=NOW)
    assert state_of(rule) is None  # one expired batch in the hour, the rule asks for two

    second = batch(company, BatchStatus.EXPIRED, expired_at=NOW - 5 * MINUTE, provider_batch_id="batch_e2")
    alerts.evaluate(now=NOW)
    alert = Alert.objects.get(rule=rule)
    assert alert.value == 2.0 and "Batches expired 2 batches at least 2 batches" in alert.message
    assert [b["provider_batch_id"] for b in alert.details["batches"]] == [second.provider_batch_id,
                                                                          first.provider_batch_id]


def test_batch_rules_scoped_to_a_company_or_job_type(company):
    other = Company.objects.create(name="Other")
    by_company = make_rule(name="acme", metric="batch_failed", threshold=1, scope="company",
                           scope_value=str(other.pk))
    by_type = make_rule(name="summary", metric="batch_failed", threshold=1, scope="job_type", scope_value="summary")
    batch(company, BatchStatus.FAILED, failed_at=NOW - MINUTE, job_type="summary")
    alerts.evaluate(now=NOW)
    assert not Alert.objects.filter(rule=by_company).exists()
    assert Alert.objects.get(rule=by_type).scope_key == "job_type:summary"


def test_batch_error_rate_fires_above_threshold_and_resolves_with_healthy_batches(company):
    rule = make_rule(metric="batch_error_rate", threshold=5)
    batch(company, BatchStatus.COMPLETED, created_at=NOW - 30 * MINUTE, completed_count=80, failed_count=20)
    batch(company, BatchStatus.COMPLETED, created_at=NOW - 20 * MINUTE, completed_count=100, failed_count=0)
    alerts.evaluate(now=NOW)
    assert Alert.objects.get(rule=rule).value == pytest.approx(100 * 20 / 200)

    batch(company, BatchStatus.COMPLETED, created_at=NOW + 40 * MINUTE, completed_count=500, failed_count=5)
    alerts.evaluate(now=NOW + 50 * MINUTE)  # only the new batch was created in the last hour
    assert state_of(rule) == AlertState.RESOLVED
    assert Alert.objects.get(rule=rule).last_value == pytest.approx(round(100 * 5 / 505, 2))


def test_batch_processing_time_fires_above_an_hour_and_resolves(company):
    rule = make_rule(metric="batch_processing_time", threshold=3_600, window=4 * 3_600)
    batch(company, BatchStatus.COMPLETED, submitted_at=NOW - 3 * HOUR, completed_at=NOW - HOUR)
    batch(company, BatchStatus.COMPLETED, submitted_at=NOW - 2 * HOUR, completed_at=NOW - HOUR)
    alerts.evaluate(now=NOW)
    assert Alert.objects.get(rule=rule).value == pytest.approx((2 * 3_600 + 3_600) / 2)

    batch(company, BatchStatus.COMPLETED, submitted_at=NOW + 3 * HOUR, completed_at=NOW + 3 * HOUR + 10 * MINUTE)
    alerts.evaluate(now=NOW + 4 * HOUR)
    assert state_of(rule) == AlertState.RESOLVED
    assert Alert.objects.get(rule=rule).last_value == pytest.approx(600.0)


# --- lifecycle ------------------------------------------------------------------------------------------------

def test_one_open_alert_per_rule_and_scope_while_the_condition_holds():
    rule = make_rule(metric="error_rate", threshold=10)
    seed([JobState.FAILURE] * 3)
    for minute in range(3):
        alerts.evaluate(now=NOW + minute * MINUTE)
    alert = Alert.objects.get(rule=rule)
    assert alert.fired_at == NOW and alert.last_evaluated_at == NOW + 2 * MINUTE
    # The database refuses a second open alert for the same rule and scope, whoever writes it.
    with pytest.raises(IntegrityError):
        Alert.objects.create(rule=rule, rule_name=rule.name, metric=rule.metric, scope_key="all", severity="high",
                             threshold=10, message="dup", fired_at=NOW, last_evaluated_at=NOW)


def test_acknowledged_alert_stays_open_until_the_condition_clears(operator):
    from monitoring.audit import Actor

    rule = make_rule(metric="error_rate", threshold=10)
    seed([JobState.FAILURE] * 3)
    alerts.evaluate(now=NOW)
    alert = alerts.acknowledge(Actor(user=operator, source="api"), Alert.objects.get(rule=rule).pk,
                               comment="looking", now=NOW + MINUTE)
    alerts.evaluate(now=NOW + 2 * MINUTE)
    alert.refresh_from_db()
    assert alert.state == AlertState.ACKNOWLEDGED and alert.acknowledged_by == operator
    assert alert.acknowledge_comment == "looking" and Alert.objects.filter(rule=rule).count() == 1

    alerts.evaluate(now=NOW + 2 * HOUR)
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and alert.acknowledged_by == operator  # history kept


def test_a_new_breach_after_resolution_opens_a_new_alert_and_keeps_the_old_one():
    rule = make_rule(metric="error_rate", threshold=10)
    seed([JobState.FAILURE] * 2)
    alerts.evaluate(now=NOW)
    alerts.evaluate(now=NOW + 2 * HOUR)
    seed([JobState.FAILURE] * 2, start=NOW + 2 * HOUR + MINUTE)
    alerts.evaluate(now=NOW + 2 * HOUR + 10 * MINUTE)
    assert list(Alert.objects.filter(rule=rule).order_by("fired_at").values_list("state", flat=True)) == [
        AlertState.RESOLVED, AlertState.FIRING]


def test_disabling_a_rule_resolves_its_open_alert():
    rule = make_rule(metric="error_rate", threshold=10)
    seed([JobState.FAILURE] * 2)
    alerts.evaluate(now=NOW)
    rule.enabled = False
    rule.save()
    alerts.evaluate(now=NOW + MINUTE)
    alert = Alert.objects.get(rule=rule)
    assert alert.state == AlertState.RESOLVED and "disabled" in alert.resolve_comment


def test_an_open_alert_of_a_rule_deleted_outside_the_services_is_resolved_and_kept():
    rule = make_rule(metric="error_rate", threshold=10)
    seed([JobState.FAILURE] * 2)
    alerts.evaluate(now=NOW)
    rule.delete()  # e.g. from a shell: the alert loses its rule but stays as history
    alerts.evaluate(now=NOW + MINUTE)
    alert = Alert.objects.get()
    assert alert.rule is None and alert.rule_name == "error_rate" and alert.state == AlertState.RESOLVED


def test_a_metric_that_raises_does_not_stop_the_other_rules(monkeypatch):
    from monitoring import registry

    broken = make_rule(name="broken", metric="error_rate", threshold=10)
    healthy = make_rule(name="stuck", metric="stuck_jobs", threshold=60)
    job_run(state=JobState.STARTED, created_at=NOW - 10 * MINUTE)
    original = registry.get_metric

    def failing(name):
        metric = original(name)
        if name != "error_rate":
            return metric

        def boom(check):
            raise RuntimeError("metric store down")

        return registry.Metric(**{**metric.__dict__, "measure": boom})

    monkeypatch.setattr(registry, "get_metric", failing)
    report = alerts.evaluate(now=NOW)
    assert "metric store down" in report.errors[broken.pk]
    assert Alert.objects.filter(rule=healthy, state=AlertState.FIRING).exists()


def test_evaluation_cost_does_not_grow_with_the_number_of_jobs(django_assert_max_num_queries):
    for metric, threshold in (("error_rate", 10), ("success_rate", 90), ("avg_processing_time", 3_600),
                              ("p95_processing_time", 60), ("throughput", 0.5), ("stuck_jobs", 1_800)):
        make_rule(name=metric, metric=metric, threshold=threshold)
    seed([JobState.SUCCESS] * 40)
    rollups.rebuild(NOW - 2 * HOUR, NOW - 10 * MINUTE)
    # Rules with the same window share one rollup read; each rule then costs a lock query and a write.
    with django_assert_max_num_queries(30):
        alerts.evaluate(now=NOW)

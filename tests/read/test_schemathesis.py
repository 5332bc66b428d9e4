"""Every endpoint, fuzzed from its own OpenAPI schema (valid and invalid input): never a server error."""

from __future__ import annotations

from datetime import timedelta

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from jobmonitor.wsgi import application
from monitoring import rollups
from monitoring.models import JobState
from tests.factories import job_run, user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


@pytest.fixture
def keep_test_connection():
    """Calling the WSGI app directly would close the test's database connection after each request
    (Django's test client avoids the same signal handlers)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(settings, celery_worker, keep_test_connection) -> str:
    # A real worker answers, so health/ is genuinely healthy (it answers 503 only when something is down).
    # Streams end quickly so a fuzzed request to live/ returns; no throttling in the way of the fuzzer.
    settings.MONITORING = {"LIVE_INTERVAL": 0.2, "LIVE_MAX_SECONDS": 0.3,
                           "API_THROTTLE_RATES": {"monitoring": None, "monitoring-live": None,
                                                  "monitoring-scrape": None}}
    now = timezone.now()
    for minutes, state in ((3, JobState.SUCCESS), (20, JobState.FAILURE), (45, JobState.STARTED)):
        job_run(task_name="app.mail", queue="emails", state=state, created_at=now - timedelta(minutes=minutes),
                exception_type="DeliveryError" if state == JobState.FAILURE else "")
    rollups.rebuild(now - timedelta(days=1), now)
    return Token.objects.create(user=user("superuser")).key


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_on_any_endpoint(token, mode):
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    headers = {"Authorization": f"Token {token}"}
    failures, skipped = [], []
    for operation in operations:
        try:
            fuzz(operation, mode, headers)
        except Unsatisfiable:
            # Negative mode finds nothing to break in an operation without parameters: nothing to send.
            skipped.append(operation.path)
            continue
        except Exception as exc:  # collect every failing operation, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures[:5])
    if mode == GenerationMode.POSITIVE:
        assert not skipped, skipped


def fuzz(operation, mode: GenerationMode, headers: dict[str, str]) -> None:
    """Send a few generated requests to one operation; fail on any 5xx."""

    @hypothesis_settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        case.call_and_validate(headers=headers, checks=[not_a_server_error])

    run()

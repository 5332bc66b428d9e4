"""Submitting requests validates them up front; the BATCHES settings are checked at startup."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import override_settings

from batches.models import AIProcessingRequest, RequestStatus
from batches.submit import RequestSpec, submit_request, submit_requests

from .helpers import chat_body, company

pytestmark = pytest.mark.django_db


def test_a_valid_request_is_stored_pending_with_its_line_size():
    acme = company()
    request = submit_request(acme, "sentiment", chat_body("I love it"), metadata={"session": 42})
    assert request.status == RequestStatus.PENDING_BATCHING and request.model == "gpt-4o-mini"
    assert request.custom_id.startswith("req-") and request.line_bytes > len("I love it")
    assert request.metadata == {"session": 42} and request.attempts == 0


@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"body": "not a dict"}, "body", "JSON object"),
    ({"body": {"model": "gpt-4o-mini", "messages": []}}, "body", "messages"),
    ({"body": {"model": "gpt-4o-mini", "messages": [{"content": "hi"}]}}, "body", "role"),
    ({"body": {"messages": [{"role": "user", "content": "hi"}]}}, "model", "model"),
    ({"body": chat_body("hi", model="gpt-9-turbo")}, "model", "BATCHES['PRICES']"),
    ({"body": chat_body("hi"), "model": "gpt-4o"}, "model", "body['model']"),
    ({"body": chat_body("hi"), "endpoint": "/v1/images"}, "endpoint", "/v1/chat/completions"),
    ({"body": chat_body("hi", stream=True)}, "body", "stream"),
    ({"body": chat_body("hi"), "job_type": ""}, "job_type", "sentiment"),
    ({"body": chat_body("hi"), "custom_id": "x" * 65}, "custom_id", "64"),
    ({"body": {"model": "text-embedding-3-small"}, "endpoint": "/v1/embeddings"}, "body", "input"),
])
def test_invalid_requests_are_rejected_naming_the_problem(kwargs, field, words):
    acme = company()
    spec = {"job_type": "sentiment", **kwargs}
    with pytest.raises(ValidationError) as error:
        submit_request(acme, spec.pop("job_type"), spec.pop("body"), **spec)
    assert field in error.value.message_dict
    assert words in " ".join(error.value.message_dict[field])
    assert not AIProcessingRequest.objects.exists()


def test_inactive_company_and_duplicate_custom_id_are_rejected():
    dormant = company(is_active=False)
    with pytest.raises(ValidationError, match="inactive"):
        submit_request(dormant, "sentiment", chat_body("hi"))
    acme = company()
    submit_request(acme, "sentiment", chat_body("hi"), custom_id="session-1")
    with pytest.raises(ValidationError, match="already used"):
        submit_request(acme, "sentiment", chat_body("hi"), custom_id="session-1")


def test_a_bulk_submit_is_all_or_nothing():
    acme = company()
    with pytest.raises(ValidationError) as error:
        submit_requests([RequestSpec(acme, "sentiment", chat_body("ok")),
                         RequestSpec(acme, "sentiment", {"model": "gpt-4o-mini"})])
    assert "requests[1].body" in error.value.message_dict
    assert not AIProcessingRequest.objects.exists()


@pytest.mark.parametrize(("setting", "check_id", "hint"), [
    ({"MIN_BATCH_SIZ": 5}, "batches.E001", "MIN_BATCH_SIZE"),
    ({"MIN_BATCH_SIZE": 0}, "batches.E002", "MIN_BATCH_SIZE"),
    ({"MAX_REQUESTS_PER_BATCH": 60_000}, "batches.E002", "50000"),
    ({"PROVIDER": "batches.providers.nope.Provider"}, "batches.E003", "OpenAIProvider"),
    ({"PRICES": {"m": {"input": "x"}}}, "batches.E004", "cached_input"),
    ({"BATCH_DISCOUNT": "1.5"}, "batches.E005", "0.5"),
    ({"RETRYABLE_ERRORS": "server_error"}, "batches.E006", "rate_limit_exceeded"),
])
def test_settings_checks_name_the_key_and_hint_the_fix(setting, check_id, hint):
    with override_settings(BATCHES=setting):
        errors = [e for e in run_checks() if e.id.startswith("batches.")]
    assert [e.id for e in errors] == [check_id]
    assert hint in errors[0].hint or hint in errors[0].msg


def test_default_settings_pass_the_checks():
    assert [e for e in run_checks() if e.id.startswith("batches.")] == []


def test_retry_command_dry_run_then_real(standin):
    from batches import pipeline
    from batches.models import BatchJob

    from ..factories import wait_until
    from .helpers import submit

    submit(company(), [f"ok {i}" for i in range(9)] + ["bad [[standin:token_limit_exceeded]]"])
    pipeline.create_batches()
    wait_until(lambda: pipeline.check_batches() and not BatchJob.objects.in_flight().exists())
    pipeline.process_results()
    job = BatchJob.objects.get()

    from io import StringIO

    out = StringIO()
    call_command("retry_batches", "--dry-run", "--status", "completed", stdout=out)
    assert "Dry run: would resubmit 1 requests from 1 batches." in out.getvalue()
    assert AIProcessingRequest.objects.filter(status=RequestStatus.FAILED).count() == 1
    call_command("retry_batches", str(job.pk), stdout=out)
    assert AIProcessingRequest.objects.filter(status=RequestStatus.PENDING_BATCHING).count() == 1
    with pytest.raises(CommandError, match="No finished batch"):
        call_command("retry_batches", "--job-type", "nothing-like-this")
    with pytest.raises(CommandError, match="hours"):
        call_command("retry_batches", "--since", "yesterday")

"""Costs to the cent against hand-computed values (prices per million tokens, batch price = half)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from batches import metrics, pipeline, pricing
from batches.models import AIProcessingRequest, BatchJob

from ..factories import wait_until
from .helpers import company, submit

pytestmark = pytest.mark.django_db


def test_request_cost_by_hand():
    # gpt-4o: $2.50 input, $1.25 cached input, $10.00 output per million tokens.
    # 10,000 input tokens of which 4,000 cached, 2,000 output:
    #   6,000 x 2.50 = 15,000; 4,000 x 1.25 = 5,000; 2,000 x 10.00 = 20,000 -> $0.04 synchronous, $0.02 in a batch.
    cost = pricing.cost_of("gpt-4o", 10_000, 4_000, 2_000)
    assert cost.sync == Decimal("0.04") and cost.batch == Decimal("0.02") and cost.savings == Decimal("0.02")
    # gpt-4o-mini, 1 input token and 1 output token: (0.15 + 0.60) / 1e6 exactly, no float rounding.
    tiny = pricing.cost_of("gpt-4o-mini", 1, 0, 1)
    assert tiny.sync == Decimal("0.00000075") and tiny.batch == Decimal("0.000000375")
    # Dated snapshots are priced like their family; unknown models have no price.
    assert pricing.cost_of("gpt-4o-mini-2024-07-18", 1, 0, 1) == tiny
    assert pricing.cost_of("my-own-model", 1, 0, 1) is None


def test_display_rounding_and_projection():
    assert pricing.to_cents(Decimal("0.775")) == Decimal("0.78")
    assert pricing.to_cents(Decimal("0.0049")) == Decimal("0.00")
    assert pricing.savings_percentage(Decimal("0.775"), Decimal("1.55")) == Decimal("50.00")
    # $1.00 saved in one day projects to $30.00 in a 30-day month.
    assert pricing.projected_monthly(Decimal("1"), 86_400) == Decimal("30.00")


def test_configured_prices_and_discount_override_the_defaults():
    with override_settings(BATCHES={"PRICES": {"house-model": {"input": "1", "cached_input": "0.5", "output": "2"}},
                                    "BATCH_DISCOUNT": "0.25"}):
        cost = pricing.cost_of("house-model", 1_000_000, 0, 1_000_000)
        assert cost.sync == Decimal("3") and cost.batch == Decimal("2.25")
        assert pricing.price_for("gpt-4o") is not None  # the defaults stay


def test_batch_costs_and_savings_to_the_cent(standin):
    acme = company()
    # 40 requests on gpt-4o, each 10,000 prompt characters (= tokens at the stand-in), half of them cached
    # (prompt_cache_key), and 2,000 completion tokens:
    #   5,000 x 2.50 + 5,000 x 1.25 + 2,000 x 10.00 = 38,750 per million = $0.03875 per request synchronously.
    #   40 requests: $1.55 synchronously, $0.775 in a batch, $0.775 saved (50.00%).
    submit(acme, ["x" * 10_000] * 40, model="gpt-4o", max_tokens=2_000, prompt_cache_key="reviews",
           job_type="summary")
    now = timezone.now()
    pipeline.create_batches(now=now)
    wait_until(lambda: pipeline.check_batches(now=now) and not BatchJob.objects.in_flight().exists())
    pipeline.process_results(now=now)

    job = BatchJob.objects.get()
    assert job.sync_cost == Decimal("1.55") and job.cost == Decimal("0.775") and job.savings == Decimal("0.775")
    request = AIProcessingRequest.objects.first()
    assert (request.input_tokens, request.cached_input_tokens, request.output_tokens) == (10_000, 5_000, 2_000)
    assert request.sync_cost == Decimal("0.03875") and request.cost == Decimal("0.019375")

    report = metrics.monitoring_report(time_range="24h", now=now + timedelta(minutes=1))
    savings = report["summary"]["cost_savings"]
    assert savings["current_period"] == Decimal("0.78")  # 0.775 rounded half up
    assert savings["cost_at_sync_price"] == Decimal("1.55")
    assert savings["savings_percentage"] == Decimal("50.00")
    assert savings["projected_monthly"] == Decimal("23.25")  # 0.775 x 30 days
    assert report["jobs"][0]["cost_estimate"] == Decimal("0.78")


def test_reasoning_tokens_are_recorded_but_billed_once_as_output(standin):
    acme = company(min_batch_size=1)
    submit(acme, ["y" * 1_000], model="o4-mini", max_tokens=400, job_type="category")
    pipeline.create_batches()
    wait_until(lambda: pipeline.check_batches() and not BatchJob.objects.in_flight().exists())
    pipeline.process_results()
    request = AIProcessingRequest.objects.get()
    assert (request.input_tokens, request.output_tokens, request.reasoning_tokens) == (1_000, 400, 200)
    # o4-mini $1.10 / $4.40: 1,000 x 1.10 + 400 x 4.40 = 2,860 per million.
    assert request.sync_cost == Decimal("0.00286") and request.cost == Decimal("0.00143")

"""Costs in exact Decimal arithmetic: per request, per batch, savings and projections."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from . import conf

MILLION = Decimal(1_000_000)
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Price:
    """Synchronous prices of one model in dollars per million tokens."""

    input: Decimal
    cached_input: Decimal
    output: Decimal


@dataclass(frozen=True)
class Cost:
    """The cost of some usage at the batch price and at the synchronous price."""

    batch: Decimal
    sync: Decimal

    @property
    def savings(self) -> Decimal:
        return self.sync - self.batch


def known_models() -> list[str]:
    return sorted(conf.get("PRICES"))


def price_for(model: str) -> Price | None:
    """Return the configured price of ``model`` (an exact name, else the longest configured prefix)."""
    prices = conf.get("PRICES")
    entry = prices.get(model)
    if entry is None:
        # Dated snapshots ("gpt-4o-mini-2024-07-18") are priced like their family.
        matches = [name for name in prices if model.startswith(f"{name}-")]
        entry = prices[max(matches, key=len)] if matches else None
    if entry is None:
        return None
    return Price(Decimal(str(entry["input"])), Decimal(str(entry["cached_input"])), Decimal(str(entry["output"])))


def discount() -> Decimal:
    return Decimal(str(conf.get("BATCH_DISCOUNT")))


def cost_of(model: str, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> Cost | None:
    """Return the exact cost of one request's usage (cached tokens are part of the input tokens)."""
    price = price_for(model)
    if price is None:
        return None
    uncached = max(input_tokens - cached_input_tokens, 0)
    sync = (uncached * price.input + cached_input_tokens * price.cached_input + output_tokens * price.output) / MILLION
    return Cost(batch=sync * (1 - discount()), sync=sync)


def to_cents(amount: Decimal | None) -> Decimal:
    """Round a dollar amount to cents for display (stored amounts keep full precision)."""
    return (amount or Decimal(0)).quantize(CENT, rounding=ROUND_HALF_UP)


def savings_percentage(batch: Decimal, sync: Decimal) -> Decimal:
    """Savings as a percentage of the synchronous cost, to two decimals."""
    if not sync:
        return Decimal("0.00")
    return ((sync - batch) * 100 / sync).quantize(CENT, rounding=ROUND_HALF_UP)


def projected_monthly(amount: Decimal, period_seconds: float) -> Decimal:
    """Extrapolate an amount observed over ``period_seconds`` to 30 days, in cents."""
    if period_seconds <= 0:
        return Decimal("0.00")
    return to_cents(amount * Decimal(30 * 86_400) / Decimal(str(period_seconds)))

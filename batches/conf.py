"""The ``BATCHES`` settings dict: documented defaults, read lazily, reset on ``setting_changed``."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

# Prices in US dollars per million tokens at the synchronous (non-batch) rate: input, cached input, output.
# Reasoning tokens are billed as output tokens and are already counted in them.
DEFAULT_PRICES: dict[str, dict[str, str]] = {
    "gpt-4o": {"input": "2.50", "cached_input": "1.25", "output": "10.00"},
    "gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.60"},
    "gpt-4.1": {"input": "2.00", "cached_input": "0.50", "output": "8.00"},
    "gpt-4.1-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"},
    "gpt-4.1-nano": {"input": "0.10", "cached_input": "0.025", "output": "0.40"},
    "o4-mini": {"input": "1.10", "cached_input": "0.275", "output": "4.40"},
    "o3": {"input": "2.00", "cached_input": "0.50", "output": "8.00"},
    "gpt-5": {"input": "1.25", "cached_input": "0.125", "output": "10.00"},
    "gpt-5-mini": {"input": "0.25", "cached_input": "0.025", "output": "2.00"},
    "text-embedding-3-small": {"input": "0.02", "cached_input": "0.02", "output": "0"},
    "text-embedding-3-large": {"input": "0.13", "cached_input": "0.13", "output": "0"},
}

DEFAULTS: dict[str, Any] = {
    # Provider -------------------------------------------------------------------------------------------
    # Dotted path of the provider implementation (a subclass of batches.providers.base.BatchProvider).
    "PROVIDER": "batches.providers.openai.OpenAIProvider",
    # Base URL and API key of the OpenAI(-compatible) API; None reads OPENAI_BASE_URL / OPENAI_API_KEY.
    "OPENAI_BASE_URL": None,
    "OPENAI_API_KEY": None,
    # Seconds the SDK waits for one HTTP call, and the SDK's own retries of 408/409/429/5xx.
    "OPENAI_TIMEOUT": 60.0,
    "OPENAI_MAX_RETRIES": 2,
    # Costs ----------------------------------------------------------------------------------------------
    # Synchronous prices per million tokens, per model (strings, read as Decimal). Overrides merge per model.
    "PRICES": DEFAULT_PRICES,
    # The Batch API discount against the synchronous price (0.5 = half price).
    "BATCH_DISCOUNT": "0.5",
    # Batching -------------------------------------------------------------------------------------------
    # A group (company + model + endpoint) is submitted once it has this many requests ...
    "MIN_BATCH_SIZE": 10,
    # ... or its oldest request has waited this many seconds.
    "MAX_WAIT": 30 * 60,
    # Provider limits per input file.
    "MAX_REQUESTS_PER_BATCH": 50_000,
    "MAX_FILE_BYTES": 200 * 1024 * 1024,
    # Most pending requests one create run claims (bounds memory and transaction time).
    "MAX_CLAIM_PER_RUN": 200_000,
    # Seconds a create run owns a batch it is submitting; after that another run may resume it.
    "SUBMIT_LEASE": 300,
    # Retries --------------------------------------------------------------------------------------------
    # Attempts of a request in total (the first submission included).
    "MAX_ATTEMPTS": 3,
    # Seconds before a retryable failure is resubmitted: BACKOFF * 2 ** (attempts - 1), at most BACKOFF_MAX.
    "BACKOFF": 60,
    "BACKOFF_MAX": 3_600,
    # Error codes of a failed line that are worth a retry; every other code is permanent.
    "RETRYABLE_ERRORS": ("rate_limit_exceeded", "server_error", "timeout", "batch_expired", "expired",
                         "missing_result"),
    # Seconds past a batch's expires_at before the expire step cancels it at the provider.
    "EXPIRY_GRACE": 15 * 60,
    # Pipeline -------------------------------------------------------------------------------------------
    # Periodic task intervals in seconds (used by the host's beat schedule; see jobmonitor/settings.py).
    "CREATE_INTERVAL": 5 * 60,
    "CHECK_INTERVAL": 2 * 60,
    "PROCESS_INTERVAL": 60,
    "RETRY_INTERVAL": 10 * 60,
    # Parallel provider calls within one step.
    "CONCURRENCY": 4,
    # Most finished batches one process run reads.
    "PROCESS_BATCHES_PER_RUN": 50,
    # Seconds the active-company list is cached (Django cache framework).
    "COMPANY_CACHE_TTL": 300,
    # Consecutive provider errors that open the circuit, and seconds it then stays open.
    "CIRCUIT_FAILURE_THRESHOLD": 5,
    "CIRCUIT_OPEN_SECONDS": 300,
}


@cache
def get_config() -> dict[str, Any]:
    """Return the effective BATCHES settings: the defaults overlaid with the host's dict."""
    user = getattr(settings, "BATCHES", {}) or {}
    config = {**DEFAULTS, **{k: v for k, v in user.items() if k in DEFAULTS}}
    if "PRICES" in user and isinstance(user["PRICES"], dict):
        config["PRICES"] = {**DEFAULT_PRICES, **user["PRICES"]}
    return config


def get(key: str) -> Any:
    """Return one BATCHES setting."""
    return get_config()[key]


def openai_base_url() -> str | None:
    """Return the configured base URL, else OPENAI_BASE_URL from the environment."""
    return get("OPENAI_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or None


def openai_api_key() -> str:
    """Return the configured API key, else OPENAI_API_KEY from the environment."""
    return get("OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""


@receiver(setting_changed)
def _reset_config(*, setting: str, **kwargs: Any) -> None:
    if setting == "BATCHES":
        get_config.cache_clear()
        from . import providers

        providers.get_provider.cache_clear()

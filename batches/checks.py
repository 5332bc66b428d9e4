"""System checks for the BATCHES settings dict (ids ``batches.E00x``, each with a hint)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.checks import Error, register
from django.utils.module_loading import import_string

from monitoring.checks import check_setting_keys

from .conf import DEFAULTS

_POSITIVE_INTEGERS = ("MIN_BATCH_SIZE", "MAX_WAIT", "MAX_REQUESTS_PER_BATCH", "MAX_FILE_BYTES", "MAX_CLAIM_PER_RUN",
                      "SUBMIT_LEASE", "MAX_ATTEMPTS", "BACKOFF", "BACKOFF_MAX", "EXPIRY_GRACE", "CREATE_INTERVAL",
                      "CHECK_INTERVAL", "PROCESS_INTERVAL", "RETRY_INTERVAL", "CONCURRENCY",
                      "PROCESS_BATCHES_PER_RUN", "COMPANY_CACHE_TTL", "CIRCUIT_FAILURE_THRESHOLD",
                      "CIRCUIT_OPEN_SECONDS")
# The OpenAI Batch API's own limits per input file.
_PROVIDER_LIMITS = {"MAX_REQUESTS_PER_BATCH": 50_000, "MAX_FILE_BYTES": 200 * 1024 * 1024}


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


@register()
def check_batches_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    user = getattr(settings, "BATCHES", {})
    errors = check_setting_keys(user, DEFAULTS, "BATCHES", "batches")
    if errors:
        return errors
    config = {**DEFAULTS, **user}
    for key in _POSITIVE_INTEGERS:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            errors.append(Error(f"settings.BATCHES[{key!r}] must be a positive whole number, got {value!r}.",
                                hint=f"For example BATCHES = {{{key!r}: {DEFAULTS[key]!r}}}.", id="batches.E002"))
    for key, limit in _PROVIDER_LIMITS.items():
        if isinstance(config[key], int) and config[key] > limit:
            errors.append(Error(f"settings.BATCHES[{key!r}] = {config[key]} is over the Batch API limit of {limit}.",
                                hint=f"Use at most {limit}.", id="batches.E002"))
    try:
        provider = import_string(config["PROVIDER"])
        if not isinstance(provider, type):
            raise TypeError(f"{config['PROVIDER']} is not a class")
    except (ImportError, TypeError) as exc:
        errors.append(Error(f"settings.BATCHES['PROVIDER'] = {config['PROVIDER']!r} cannot be used: {exc}.",
                            hint="Give the dotted path of a BatchProvider subclass, e.g. "
                                 "'batches.providers.openai.OpenAIProvider'.", id="batches.E003"))
    prices = config["PRICES"]
    if not isinstance(prices, dict):
        errors.append(Error("settings.BATCHES['PRICES'] must be a dict of model name to prices.",
                            hint="For example {'gpt-4o-mini': {'input': '0.15', 'cached_input': '0.075', "
                                 "'output': '0.60'}}.", id="batches.E004"))
    else:
        for model, entry in prices.items():
            values = [_decimal(entry.get(k)) if isinstance(entry, dict) else None
                      for k in ("input", "cached_input", "output")]
            if any(v is None or v < 0 for v in values):
                errors.append(Error(f"settings.BATCHES['PRICES'][{model!r}] needs 'input', 'cached_input' and "
                                    f"'output' prices per million tokens, each a number >= 0; got {entry!r}.",
                                    hint="Write prices as strings, e.g. {'input': '0.15', 'cached_input': "
                                         "'0.075', 'output': '0.60'}.", id="batches.E004"))
    discount = _decimal(config["BATCH_DISCOUNT"])
    if discount is None or not 0 <= discount < 1:
        errors.append(Error(f"settings.BATCHES['BATCH_DISCOUNT'] must be a fraction from 0 to below 1, got "
                            f"{config['BATCH_DISCOUNT']!r}.", hint="The OpenAI Batch API discount is '0.5'.",
                            id="batches.E005"))
    retryable = config["RETRYABLE_ERRORS"]
    if isinstance(retryable, str) or not all(isinstance(code, str) for code in retryable):
        errors.append(Error("settings.BATCHES['RETRYABLE_ERRORS'] must be a list of error codes.",
                            hint=f"For example {list(DEFAULTS['RETRYABLE_ERRORS'])[:3]!r}.", id="batches.E006"))
    return errors

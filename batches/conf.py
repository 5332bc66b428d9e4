"""The ``BATCHES`` settings dict: documented defaults, read lazily, reset on ``setting_changed``."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Dotted path of the provider implementation.
    "PROVIDER": "batches.providers.openai.OpenAIProvider",
}


@cache
def get_config() -> dict[str, Any]:
    """Return the effective BATCHES settings: the defaults overlaid with the host's dict."""
    user = getattr(settings, "BATCHES", {}) or {}
    return {**DEFAULTS, **{k: v for k, v in user.items() if k in DEFAULTS}}


def get(key: str) -> Any:
    """Return one BATCHES setting."""
    return get_config()[key]


@receiver(setting_changed)
def _reset_config(*, setting: str, **kwargs: Any) -> None:
    if setting == "BATCHES":
        get_config.cache_clear()

"""The masking hook applied to task arguments before they are stored or shown."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.utils.module_loading import import_string

from . import conf

MASK = "********"


def mask_sensitive(value: Any, *, task_name: str = "", field: str = "") -> Any:
    """Replace the values of dict keys that look like secrets (see ``SENSITIVE_KEYS``), recursively."""
    fragments = tuple(k.lower() for k in conf.get("SENSITIVE_KEYS"))
    return _mask(value, fragments)


def _mask(value: Any, fragments: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {
            k: MASK if isinstance(k, str) and any(f in k.lower() for f in fragments) else _mask(v, fragments)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_mask(v, fragments) for v in value]
    return value


@cache
def get_masking_hook() -> Any:
    """Return the configured masking callable (cached; reset when MONITORING changes)."""
    return import_string(conf.get("MASKING_HOOK"))

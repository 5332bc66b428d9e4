"""Batch API providers, chosen by ``BATCHES['PROVIDER']`` (a dotted path)."""

from __future__ import annotations

from functools import cache

from django.utils.module_loading import import_string

from .base import BatchProvider, ProviderBatch, ProviderError


@cache
def get_provider() -> BatchProvider:
    """Return the configured provider instance (rebuilt when BATCHES changes)."""
    from .. import conf

    return import_string(conf.get("PROVIDER"))()


__all__ = ["BatchProvider", "ProviderBatch", "ProviderError", "get_provider"]

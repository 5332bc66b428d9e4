"""System checks for the BATCHES settings dict (ids ``batches.E00x``, each with a hint)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from monitoring.checks import check_setting_keys

from .conf import DEFAULTS


@register()
def check_batches_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    return check_setting_keys(getattr(settings, "BATCHES", {}), DEFAULTS, "BATCHES", "batches")

"""Template tags of the monitoring admin pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.utils.dateparse import parse_datetime

from ..admin.base import cheap_date_hierarchy

register = template.Library()


@register.inclusion_tag("admin/date_hierarchy.html")
def jm_date_hierarchy(changelist: Any) -> dict[str, Any]:
    """Django's date drill-down, with choices from MIN/MAX instead of a DISTINCT scan of dates."""
    return cheap_date_hierarchy(changelist) or {"show": False}


@register.filter
def as_datetime(value: Any) -> datetime | None:
    """An ISO 8601 string from a service answer as a datetime (for the date filter)."""
    if isinstance(value, datetime) or value is None:
        return value
    return parse_datetime(str(value))


@register.filter
def seconds(value: float | None) -> str:
    """A duration in seconds, readable: 850 ms, 12.3 s, 4 min 05 s, 2 h 03 min."""
    if value is None:
        return "\u2013"  # an en dash, as the other empty cells
    value = float(value)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(value % 60):02d} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60):02d} min"

"""Authentication, throttling and pagination for the monitoring and batches APIs.

They come from the ``MONITORING`` settings, not the host's global ``REST_FRAMEWORK``, so a project can
mount the API without changing its own DRF configuration.
"""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string
from rest_framework.pagination import LimitOffsetPagination, PageNumberPagination
from rest_framework.throttling import ScopedRateThrottle

from .. import conf
from .permissions import CanViewJobs


class MonitoringThrottle(ScopedRateThrottle):
    """Scoped throttle whose rates come from ``MONITORING['API_THROTTLE_RATES']``."""

    def get_rate(self) -> str | None:
        return conf.get("API_THROTTLE_RATES").get(self.scope)


class MonitoringPagination(PageNumberPagination):
    """``?page=`` and ``?limit=`` (default 50, at most 100)."""

    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 100


class MonitoringAPIMixin:
    """Mix into every API view: our auth classes, role permission, scoped throttle and pagination."""

    permission_classes = [CanViewJobs]
    throttle_classes = [MonitoringThrottle]
    throttle_scope = "monitoring"
    pagination_class = MonitoringPagination

    def get_authenticators(self) -> list[Any]:
        return [import_string(path)() for path in conf.get("API_AUTHENTICATION_CLASSES")]


__all__ = ["LimitOffsetPagination", "MonitoringAPIMixin", "MonitoringPagination", "MonitoringThrottle"]

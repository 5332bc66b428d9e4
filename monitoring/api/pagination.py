"""Pagination of the read endpoints: ``page``/``limit`` with a bounded count, and a keyset cursor mode.

Counting a filtered slice of a 10M-row table costs as much as reading it, so the count stops at
``COUNT_LIMIT`` (``SEARCH_COUNT_LIMIT`` for a free-text search; ``count_capped`` says so) and page mode
reaches that far; ``cursor`` mode walks any depth by keyset (created_at, id) through the index.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from .. import search

COUNT_LIMIT = 10_000
# A search's count stops earlier: each match it counts is a random heap read (about 10 ms per thousand at
# 10M rows), where an exact filter's count reads an index in order.
SEARCH_COUNT_LIMIT = 1_000
DEFAULT_LIMIT = 50
MAX_LIMIT = 100


def positive_int(params: Any, name: str, default: int, maximum: int | None = None) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1 or (maximum is not None and value > maximum):
        bound = f" between 1 and {maximum}" if maximum else " of at least 1"
        raise ValidationError({name: [f"Must be a whole number{bound}, got {raw!r}."]})
    return value


class ReadPagination(BasePagination):
    """``?page=`` and ``?limit=`` (default 50, at most 100); ``?cursor=`` for keyset walks (created_at order)."""

    cursor_query_param = "cursor"

    def paginate_queryset(self, queryset: QuerySet | Sequence, request: Any, view: Any = None) -> list:
        self.request = request
        params = request.query_params
        self.limit = positive_int(params, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        self.cursor_mode = self.cursor_query_param in params
        if self.cursor_mode:
            if "page" in params:
                raise ValidationError({"page": ["Use either page or cursor, not both."]})
            return self._cursor_page(queryset, params.get(self.cursor_query_param) or "")
        self.page = positive_int(params, "page", 1)
        offset = (self.page - 1) * self.limit
        searched = isinstance(queryset, QuerySet) and search.is_search(queryset)
        cap = SEARCH_COUNT_LIMIT if searched else COUNT_LIMIT
        if offset >= cap:
            raise ValidationError({"page": [f"Page mode reaches the first {cap} rows; walk further with "
                                            f"cursor= (start with an empty cursor)."]})
        if searched:
            counted = search.capped_count(queryset, cap)
        else:
            counted = queryset.order_by()[:cap + 1].count() if isinstance(queryset, QuerySet) else len(queryset)
        self.count_capped = isinstance(queryset, QuerySet) and counted > cap
        self.count = min(counted, cap)
        if searched and self.count_capped and queryset.query.order_by[:1] == ("-created_at",):
            rows = search.newest_first(queryset, offset, self.limit + 1)
        else:
            rows = list(queryset[offset:offset + self.limit + 1])
        self.has_next = len(rows) > self.limit
        return rows[:self.limit]

    # -- cursor mode ----------------------------------------------------------------------------------
    def _cursor_page(self, queryset: Any, token: str) -> list:
        if not isinstance(queryset, QuerySet):
            raise ValidationError({"cursor": ["This list has no cursor mode; use page and limit."]})
        ordering = queryset.query.order_by
        descending = not ordering or ordering[0] in ("-created_at",)
        if ordering and ordering[0] not in ("-created_at", "created_at"):
            raise ValidationError({"cursor": ["Cursor mode walks created_at order: use ordering=-created_at or "
                                              "ordering=created_at."]})
        queryset = queryset.order_by(*(("-created_at", "-id") if descending else ("created_at", "id")))
        if token:
            stamp, last_id = self._decode(token)
            if descending:
                queryset = queryset.filter(Q(created_at__lt=stamp) | Q(created_at=stamp, id__lt=last_id))
            else:
                queryset = queryset.filter(Q(created_at__gt=stamp) | Q(created_at=stamp, id__gt=last_id))
        rows = list(queryset[:self.limit + 1])
        self.has_next = len(rows) > self.limit
        rows = rows[:self.limit]
        self.next_token = self._encode(rows[-1]) if self.has_next and rows else None
        return rows

    @staticmethod
    def _encode(row: Any) -> str:
        raw = json.dumps({"t": row.created_at.isoformat(), "id": row.id}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode(token: str) -> tuple[datetime, int]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            stamp = datetime.fromisoformat(data["t"])
            last_id = int(data["id"])
            if stamp.tzinfo is None:
                raise ValueError("naive")
        except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
            raise ValidationError({"cursor": ["Not a valid cursor: use the cursor from a previous response's "
                                              "next link, or an empty cursor= to start."]}) from None
        return stamp, last_id

    # -- response -------------------------------------------------------------------------------------
    def get_paginated_response(self, data: list) -> Response:
        url = self.request.build_absolute_uri()
        if self.cursor_mode:
            next_url = replace_query_param(url, self.cursor_query_param, self.next_token) if self.has_next else None
            return Response({"next": next_url, "limit": self.limit, "results": data})
        next_url = replace_query_param(url, "page", self.page + 1) if self.has_next else None
        if self.page > 1:
            previous = (replace_query_param(url, "page", self.page - 1) if self.page > 2
                        else remove_query_param(url, "page"))
        else:
            previous = None
        return Response({"count": self.count, "count_capped": self.count_capped, "page": self.page,
                         "limit": self.limit, "next": next_url, "previous": previous, "results": data})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["results"],
            "properties": {
                "count": {"type": "integer", "description": f"Matching rows, counted up to {COUNT_LIMIT} "
                                                            f"({SEARCH_COUNT_LIMIT} with search)."},
                "count_capped": {"type": "boolean"},
                "page": {"type": "integer"},
                "limit": {"type": "integer"},
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        params = [
            {"name": "page", "required": False, "in": "query", "schema": {"type": "integer", "minimum": 1},
             "description": f"Page number (page mode reaches the first {COUNT_LIMIT} rows, "
                            f"{SEARCH_COUNT_LIMIT} with search)."},
            {"name": "limit", "required": False, "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
             "description": f"Rows per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})."},
        ]
        if getattr(view, "cursor_pagination", False):
            params.append({"name": "cursor", "required": False, "in": "query", "schema": {"type": "string"},
                           "description": "Keyset mode for walking large tables: empty to start, then the "
                                          "value from the previous response's next link."})
        return params

"""Building blocks of the job-record admins: read-only base, cheap counts on big tables, CSV export, JSON display.

A Django changelist over millions of rows is slow for three reasons: ``COUNT(*)`` of the whole table (and of
every filtered set), ``DISTINCT`` scans to build list filters and the date hierarchy, and ``LIKE`` searches over
text columns. The pieces here avoid each: the paginator estimates or caps counts, filters take their choices
from indexed loose scans, the date hierarchy derives its choices from ``MIN``/``MAX`` (two index probes), and
the admins restrict search to indexed lookups.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote as url_quote

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Max, Min, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import dateformat, timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import RFC3986_SUBDELIMS, url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _

from .. import conf, search


class ReadOnlyAdmin(admin.ModelAdmin):
    """No add, change or delete: records are written by workers and services only."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- counting -------------------------------------------------------------------------------------------

def table_estimate(queryset: QuerySet) -> int | None:
    """The planner's row estimate of the queryset's table (PostgreSQL ``pg_class.reltuples``), or None."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                       [queryset.model._meta.db_table])
        row = cursor.fetchone()
    # -1 means never analysed: no estimate.
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


class EstimatedCountPaginator(Paginator):
    """Counts without scanning: the table estimate when unfiltered, at most ``ADMIN_COUNT_CAP`` rows otherwise.

    ``approximate`` tells the template to say "about N" (an estimate) or "more than N" (capped).
    """

    approximate: str = ""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        cap = conf.get("ADMIN_COUNT_CAP")
        if isinstance(queryset, QuerySet) and not queryset.query.where:
            estimate = table_estimate(queryset)
            if estimate is not None and estimate > cap:
                self.approximate = "estimate"
                return estimate
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        if search.is_search(queryset):
            # The jobs API's count of a search: a task-name or exception-type branch over the cap decides it on
            # its own index, without reading a heap row per match of the whole condition (0.03-0.05 s at 10M
            # rows for a task-name prefix).
            counted = search.capped_count(queryset, cap)
        else:
            # COUNT(*) over a LIMITed subquery: stops after cap + 1 index entries however many rows match.
            counted = queryset.order_by()[:cap + 1].count()
        if counted > cap:
            self.approximate = "capped"
            return cap
        return counted


class BigTableAdmin(ReadOnlyAdmin):
    """A read-only admin for a table of millions of rows (estimated counts, no full count)."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    # Columns the changelist reads (the detail page reads the whole row); set by subclasses.
    list_only: Sequence[str] = ()

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type:
        base = super().get_changelist(request, **kwargs)
        only = self.list_only

        class LeanChangeList(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                # Django's row rendering resolve()s every row link to decide whether the list's filters
                # belong in it (a third of a filtered page): a row always links to its change page, so the
                # links carry them from url_for_result and the per-row step gets nothing to resolve.
                self.row_query, self.preserved_filters = self.preserved_filters, ""

            def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
                queryset = super().get_queryset(request, exclude_parameters)
                return queryset.only(*only) if only else queryset

            @cached_property
            def change_url_pattern(self) -> str:
                return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=("__pk__",),
                               current_app=self.model_admin.admin_site.name)

            def url_for_result(self, result: Any) -> str:
                # One reverse() per page, not per row; the pk escaped as reverse() would escape it.
                pk = url_quote(str(quote(getattr(result, self.pk_attname))), safe=RFC3986_SUBDELIMS + "/~:@")
                url = self.change_url_pattern.replace("__pk__", pk, 1)
                return f"{url}?{self.row_query}" if self.row_query else url

        return LeanChangeList

    def action_checkbox(self, obj: Any) -> str:
        """The row's selection checkbox, formatted directly: Django renders a widget template per row
        (a sixth of a 50-row changelist's server time)."""
        label = format_html(_("Select this object for an action - {}"), str(obj))
        return format_html('<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
                           helpers.ACTION_CHECKBOX_NAME, str(obj.pk), label)


# --- date hierarchy -------------------------------------------------------------------------------------

def cheap_date_hierarchy(changelist: Any) -> dict[str, Any] | None:
    """Date drill-down choices from ``MIN``/``MAX`` of the filtered rows, never ``SELECT DISTINCT`` of dates.

    Django's own tag lists the years, months or days that have rows with ``QuerySet.dates()``, a scan of
    every matching row. Here every year/month/day between the first and the last row is offered (a period
    with no rows shows an empty page); the bounds come from the date column's index.
    """
    field = changelist.date_hierarchy
    if not field:
        return None
    params = changelist.params
    year, month, day = (params.get(f"{field}__{part}") for part in ("year", "month", "day"))
    year, month, day = (_single(value) for value in (year, month, day))

    def link(filters: dict[str, Any]) -> str:
        return changelist.get_query_string(filters, [f"{field}__"])

    if year and month and day:
        moment = date(int(year), int(month), int(day))
        return {"show": True, "back": {"link": link({f"{field}__year": year, f"{field}__month": month}),
                                       "title": moment.strftime("%B %Y")},
                "choices": [{"title": moment.strftime("%B %-d")}]}
    bounds = changelist.queryset.order_by().aggregate(first=Min(field), last=Max(field))
    first, last = bounds["first"], bounds["last"]
    if first is None or last is None:
        return {"show": True, "back": None, "choices": []}
    first, last = (timezone.localtime(v) if isinstance(v, datetime) and timezone.is_aware(v) else v
                   for v in (first, last))
    if year and month:
        y, m = int(year), int(month)
        days = [d for d in range(1, 32) if _valid(y, m, d) and first.date() <= date(y, m, d) <= last.date()]
        return {"show": True, "back": {"link": link({f"{field}__year": year}), "title": str(y)},
                "choices": [{"link": link({f"{field}__year": y, f"{field}__month": m, f"{field}__day": d}),
                             "title": date(y, m, d).strftime("%B %-d")} for d in days]}
    if year:
        y = int(year)
        months = [m for m in range(1, 13) if (first.year, first.month) <= (y, m) <= (last.year, last.month)]
        return {"show": True, "back": {"link": link({}), "title": _("All dates")},
                "choices": [{"link": link({f"{field}__year": y, f"{field}__month": m}),
                             "title": date(y, m, 1).strftime("%B %Y")} for m in months]}
    return {"show": True, "back": None,
            "choices": [{"link": link({f"{field}__year": y}), "title": str(y)}
                        for y in range(first.year, last.year + 1)]}


def _single(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[-1] if value else None
    return value or None


def _valid(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


# --- display --------------------------------------------------------------------------------------------

def pretty_json(value: Any) -> str:
    """``value`` as indented JSON in a ``<pre>`` block (escaped), or a dash when empty."""
    if value in (None, "", [], {}):
        return "-"
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre class="jm-json">{}</pre>', text)


def compact_time(value: datetime | None) -> str:
    """A timestamp in the current time zone as 2026-12-05 17:07:54 (the locale's "Dec. 5, 2026, 5:07 p.m." takes
    three lines of a changelist column and does not sort by eye)."""
    return "-" if value is None else dateformat.format(timezone.localtime(value), "Y-m-d H:i:s")


def money(value: Decimal | None) -> str:
    """A dollar amount, exact: the cents, then as many places as it has ($1.50, $0.00060875), never rounded."""
    if value is None:
        return "-"
    sign, digits = ("-", -value) if value < 0 else ("", value)
    whole, _, fraction = f"{digits.normalize():f}".partition(".")
    return f"{sign}${whole}.{fraction.ljust(2, '0')}"


def preformatted(text: str) -> str:
    """Multi-line text (a traceback, a result) in a ``<pre>`` block, or a dash when empty."""
    return format_html('<pre class="jm-pre">{}</pre>', text) if text else "-"


def safe_next(request: HttpRequest, default: str) -> str:
    """The ``next`` URL of the request when it points to this site, else ``default``."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


# --- CSV export -----------------------------------------------------------------------------------------

class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_response(filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> StreamingHttpResponse:
    """Stream ``rows`` as a CSV attachment (nothing is held in memory)."""
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow(["" if value is None else _cell(value) for value in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


class CsvExportMixin:
    """Export the selected rows (an action) or the whole filtered list (a link on the changelist) as CSV."""

    csv_fields: Sequence[str] = ()

    def export_rows(self, queryset: QuerySet) -> Iterator[Sequence[Any]]:
        cap = conf.get("ADMIN_EXPORT_MAX_ROWS")
        yield from queryset.values_list(*self.csv_fields)[:cap].iterator(chunk_size=2_000)

    def export_response(self, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        opts = self.model._meta  # type: ignore[attr-defined]
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        return csv_response(f"{opts.model_name}-{stamp}.csv", self.csv_fields, self.export_rows(queryset))

    @admin.action(permissions=["view"], description=_("Export selected rows as CSV"))
    def export_selected_csv(self, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        return self.export_response(request, queryset)

    def get_urls(self) -> list[Any]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"  # type: ignore[attr-defined]
        view = self.admin_site.admin_view(self.export_filtered_view)  # type: ignore[attr-defined]
        return [path("export/", view, name=f"{prefix}_export"), *super().get_urls()]  # type: ignore[misc]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        opts = self.opts  # type: ignore[attr-defined]
        export = reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_export")  # type: ignore[attr-defined]
        return super().changelist_view(request, {**(extra_context or {}), "export_url": export})  # type: ignore[misc]

    def export_filtered_view(self, request: HttpRequest) -> StreamingHttpResponse:
        """The changelist's current filters and search, as CSV (``ADMIN_EXPORT_MAX_ROWS`` rows at most)."""
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)  # type: ignore[attr-defined]
        return self.export_response(request, changelist.get_queryset(request))

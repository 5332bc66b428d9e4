"""The jobs dashboard: an admin page over ``monitoring.metrics``, with queue and error-group actions.

Every figure comes from a service in ``monitoring.metrics``; every action calls ``monitoring.control`` with
the admin's actor, behind a confirmation page that states what will be touched. The page is served by the
``JobRunAdmin`` (``get_urls``), so it needs no change to the host's URLconf and follows custom admin sites.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import alerts, conf, control, metrics, rollups
from ..api.permissions import can_act
from ..audit import Actor
from ..models import AuditSource, JobRun
from .base import safe_next

DASHBOARD_TEMPLATE = "monitoring/admin/jobs_dashboard.html"
BODY_TEMPLATE = "monitoring/admin/_jobs_dashboard_body.html"
CONFIRM_TEMPLATE = "monitoring/admin/confirm_action.html"

RANGE_CHOICES = [("1h", _("Last hour")), ("6h", _("Last 6 hours")), ("24h", _("Last 24 hours")),
                 ("7d", _("Last 7 days")), ("30d", _("Last 30 days")), ("custom", _("Custom range"))]
TREND_CHOICES = [("24h", _("24 hours")), ("7d", _("7 days")), ("30d", _("30 days"))]
REFRESH_CHOICES = [("0", _("Off")), ("30", _("Every 30 s")), ("60", _("Every minute")), ("300", _("Every 5 minutes"))]
QUEUE_ACTIONS = ("pause", "resume", "purge", "clear")
MAX_CUSTOM_RANGE = timedelta(days=90)
LIST_SIZE = 20


class DashboardControls(forms.Form):
    """The dashboard's controls, read from the query string (bad values fall back to the defaults)."""

    range = forms.ChoiceField(label=_("Time range"), choices=RANGE_CHOICES, required=False)
    since = forms.DateTimeField(label=_("From"), required=False,
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(label=_("To"), required=False,
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    task = forms.ChoiceField(label=_("Job type"), required=False)
    trend = forms.ChoiceField(label=_("Trend period"), choices=TREND_CHOICES, required=False)
    refresh = forms.ChoiceField(label=_("Auto refresh"), choices=REFRESH_CHOICES, required=False)

    def __init__(self, *args: Any, task_names: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["task"].choices = [("", _("All job types")), *((name, name) for name in task_names)]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("range") == "custom":
            since, until = data.get("since"), data.get("until")
            if not since or not until:
                raise forms.ValidationError(_("A custom range needs both a start and an end."))
            if since >= until:
                raise forms.ValidationError(_("The start of the range must be before its end."))
            if until - since > MAX_CUSTOM_RANGE:
                raise forms.ValidationError(_("A custom range can span at most 90 days."))
        return data

    def window(self, now: datetime) -> tuple[str, datetime, datetime]:
        """The chosen range name and its ``(since, until)``; the last 24 hours when the input is invalid."""
        data = self.cleaned_data if self.is_valid() else {}
        name = data.get("range") or "24h"
        if name == "custom":
            return name, data["since"], data["until"]
        since, until = metrics.range_window(name, now)
        return name, since, until

    def value(self, name: str, default: str) -> str:
        data = self.cleaned_data if self.is_valid() else {}
        return data.get(name) or default


class ClearForm(forms.Form):
    type = forms.ChoiceField(label=_("Records to delete"), choices=[
        ("completed", _("Completed (succeeded)")), ("failed", _("Failed and lost")), ("all", _("All finished"))])


def change(current: float | None, previous: float | None, *, points: bool = False,
           lower_is_better: bool = False) -> dict[str, Any]:
    """A card's value with its change against the previous period (percent, or points for rates)."""
    card: dict[str, Any] = {"value": current, "previous": previous, "delta": None, "trend": "flat"}
    if current is None or previous is None:
        return card
    delta = current - previous
    if points:
        card["delta"] = f"{delta:+.1f} pt"
    elif previous:
        card["delta"] = f"{100 * delta / previous:+.0f}%"
    elif current:
        card["delta"] = _("new")
    if delta:
        better = (delta < 0) if lower_is_better else (delta > 0)
        card["trend"] = "better" if better else "worse"
    return card


def _figures(stats: dict[str, Any], task: str) -> dict[str, Any]:
    """Totals of a stats answer: the whole summary, or one job type's row when a type is chosen."""
    if not task:
        summary = stats["summary"]
        return {"total": summary["total"], "success_rate": summary["success_rate"],
                "average_duration": summary["average_duration"], "running": summary["running"],
                "failed": sum(row["failed"] for row in stats["job_types"])}
    row = next((r for r in stats["job_types"] if r["task_name"] == task), None)
    if row is None:
        return {"total": 0, "success_rate": None, "average_duration": None, "running": 0, "failed": 0}
    return {"total": row["total_runs"], "success_rate": row["success_rate"],
            "average_duration": row["average_duration"], "running": row["running"], "failed": row["failed"]}


class JobsDashboardMixin:
    """Adds the dashboard, queue actions and error-group retry to the job-run admin."""

    admin_site: Any
    opts: Any

    def dashboard_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("dashboard/", view(self.dashboard_view), name=f"{prefix}_dashboard"),
            path("dashboard/queues/<str:queue>/<str:action>/", view(self.queue_action_view),
                 name=f"{prefix}_queue_action"),
            path("dashboard/errors/retry/", view(self.retry_error_group_view), name=f"{prefix}_retry_group"),
        ]

    def _url(self, name: str, *args: Any) -> str:
        return reverse(f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_{name}", args=args)

    # --- the page ---------------------------------------------------------------------------------------

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        now = timezone.now()
        controls = DashboardControls(request.GET or None, task_names=metrics.distinct_values("task_name", limit=200))
        range_name, since, until = controls.window(now)
        task = controls.value("task", "")
        trend_period = controls.value("trend", "24h" if range_name in ("1h", "6h", "24h") else
                                      "7d" if range_name == "7d" else "30d")
        span = until - since

        # The cards, tables and charts read the same ranges: the rollup coverage is read once for the page.
        with rollups.shared_reads():
            stats = metrics.stats(since, until, now=now)
            trend_series = metrics.trend_series(trend_period, task_name=task or None, now=now)
            before = metrics.totals(since - span, since, task_name=task or None)
            errors = [group for group in metrics.error_groups(since, until)
                      if not task or task in group["task_names"]][:LIST_SIZE]
        current = _figures(stats, task)
        queues = metrics.queue_overview(now=now)
        timeline, overlaps = metrics.timeline_with_overlaps(since, until, task_name=task or None, now=now)
        stuck = [metrics.describe_stuck(job, now=now) | {"pk": job.pk}
                 for job in metrics.stuck_jobs(now=now).filter(**({"task_name": task} if task else {}))[:LIST_SIZE]]
        recent = JobRun.objects.only("id", "task_id", "task_name", "queue", "state", "worker", "created_at",
                                     "started_at", "finished_at", "runtime").order_by("-created_at", "-id")
        if task:
            recent = recent.filter(task_name=task)

        cards = [
            {"key": "total", "label": _("Total runs"), "unit": "", **change(current["total"], before["total"])},
            {"key": "success_rate", "label": _("Success rate"), "unit": "%",
             **change(current["success_rate"], before["success_rate"], points=True)},
            {"key": "average_duration", "label": _("Average duration"), "unit": "s",
             **change(current["average_duration"], before["average_duration"], lower_is_better=True)},
            {"key": "running", "label": _("Running now"), "unit": "", "value": current["running"], "delta": None,
             "trend": "flat", "note": _("now")},
            {"key": "waiting", "label": _("Waiting"), "unit": "", "value": queues["waiting"], "delta": None,
             "trend": "flat", "note": _("in the broker now")},
            {"key": "failed", "label": _("Failed"), "unit": "",
             **change(current["failed"], before["failed"], lower_is_better=True)},
        ]
        job_types = [row for row in stats["job_types"] if not task or row["task_name"] == task]
        can_operate_queues = can_act(request.user, "monitoring.operate_queue")
        can_operate_jobs = can_act(request.user, "monitoring.operate_jobrun")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Jobs dashboard"),
            "controls": controls,
            "range_name": range_name, "since": since, "until": until, "task": task, "trend_period": trend_period,
            "refresh": controls.value("refresh", "0"),
            "cards": cards,
            "queues": queues["queues"], "broker": queues["broker"], "workers_available": queues["workers_available"],
            "workers": queues["workers"],
            "trend_series": trend_series,
            "job_types": job_types,
            "timeline": timeline, "overlap_groups": overlaps["groups"],
            "open_alerts": alerts.open_alerts(limit=LIST_SIZE),
            "stuck": stuck, "stuck_after": conf.get("STUCK_AFTER"),
            "errors": errors,
            "recent": list(recent[:LIST_SIZE]),
            "can_operate_queues": can_operate_queues, "can_operate_jobs": can_operate_jobs,
            "live_url": self._live_url(),
            "next": request.get_full_path(),
        }
        template = BODY_TEMPLATE if request.GET.get("fragment") else DASHBOARD_TEMPLATE
        return TemplateResponse(request, template, context)

    @staticmethod
    def _live_url() -> str | None:
        try:
            return reverse("monitoring-api:live")
        except Exception:  # the host did not mount the API: the page polls instead
            return None

    # --- queue actions ----------------------------------------------------------------------------------

    def queue_action_view(self, request: HttpRequest, queue: str, action: str) -> HttpResponse:
        if action not in QUEUE_ACTIONS:
            raise Http404(f"Unknown queue action {action!r}; use one of {', '.join(QUEUE_ACTIONS)}.")
        if not can_act(request.user, "monitoring.operate_queue"):
            raise PermissionDenied
        if not metrics.queue_exists(queue):
            raise Http404(f"Unknown queue {queue!r}.")
        back = safe_next(request, self._url("dashboard"))
        data = request.POST if request.method == "POST" else request.GET
        form = ClearForm(data if "type" in data else None, initial={"type": "all"}) if action == "clear" else None
        kind = form.cleaned_data["type"] if form is not None and form.is_bound and form.is_valid() else "all"
        if request.method == "POST":
            actor = Actor.from_request(request, AuditSource.ADMIN)
            try:
                if action == "pause":
                    result = control.pause(actor, queue)
                elif action == "resume":
                    result = control.resume(actor, queue)
                elif action == "purge":
                    result = control.purge(actor, queue)
                else:
                    result = control.clear(actor, queue, kind)
            except control.ControlError as exc:
                self.message_user(request, exc.message, messages.ERROR)  # type: ignore[attr-defined]
            else:
                self.message_user(request, result.message, messages.SUCCESS)  # type: ignore[attr-defined]
            return HttpResponseRedirect(back)
        return TemplateResponse(request, CONFIRM_TEMPLATE, {
            **self.admin_site.each_context(request), "opts": self.opts, "title": _("Confirm"),
            **self._queue_statement(queue, action, kind), "get_form": form, "next": back, "cancel_url": back,
            "hidden": {"type": kind} if action == "clear" else {}})

    def _queue_statement(self, queue: str, action: str, kind: str) -> dict[str, Any]:
        row = next((q for q in metrics.queues()["queues"] if q["name"] == queue), {})
        if action == "pause":
            # Asked now, not from the cached report: these are exactly the workers the pause will stop.
            try:
                consumers = len(control.consumers_of(queue))
            except control.ControlError:
                consumers = row.get("consumers") or 0
            statement = ngettext("Pause queue %(queue)s? %(count)d worker consuming it will stop taking its jobs.",
                                 "Pause queue %(queue)s? %(count)d workers consuming it will stop taking its jobs.",
                                 consumers) % {"queue": queue, "count": consumers}
            note = _("Its messages stay in the broker until it is resumed.")
            label = _("Yes, pause %(queue)s") % {"queue": queue}
        elif action == "resume":
            statement = _("Resume queue %(queue)s?") % {"queue": queue}
            note, label = "", _("Yes, resume %(queue)s") % {"queue": queue}
        elif action == "purge":
            waiting = row.get("depth")
            count = waiting or 0
            statement = ngettext("Purge %(count)d waiting message from queue %(queue)s?",
                                 "Purge %(count)d waiting messages from queue %(queue)s?", count) % {
                "count": count, "queue": queue}
            note = _("The messages are deleted from the broker and their jobs will never run.") if waiting is not None \
                else _("The broker could not be asked for the queue's depth.")
            label = _("Yes, purge %(queue)s") % {"queue": queue}
        else:
            count = control.clearable_jobs(queue, kind).count()
            statement = ngettext("Delete %(count)d finished job record of queue %(queue)s?",
                                 "Delete %(count)d finished job records of queue %(queue)s?", count) % {
                "count": count, "queue": queue}
            note = _("Only the records are deleted; nothing is sent to the workers.")
            label = ngettext("Yes, delete %(count)d record", "Yes, delete %(count)d records", count) % {"count": count}
        return {"statement": statement, "note": note, "submit_label": label}

    # --- error groups -----------------------------------------------------------------------------------

    def retry_error_group_view(self, request: HttpRequest) -> HttpResponse:
        """Freeze the failures of one error group as a bulk retry preview, then confirm it (states the count)."""
        if not can_act(request.user, "monitoring.operate_jobrun"):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseRedirect(self._url("dashboard"))
        field = forms.DateTimeField()
        try:
            since, until = field.clean(request.POST.get("since")), field.clean(request.POST.get("until"))
        except forms.ValidationError:
            self.message_user(request, _("The error group's time range is missing or invalid."),  # type: ignore
                              messages.ERROR)
            return HttpResponseRedirect(safe_next(request, self._url("dashboard")))
        jobs = metrics.error_group_jobs(since, until, request.POST.get("exception_type", ""),
                                        request.POST.get("message", ""))
        cap = conf.get("BULK_MAX_ITEMS")
        ids = list(jobs.order_by("created_at", "id").values_list("task_id", flat=True)[:cap + 1])
        if not ids:
            self.message_user(request, _("This error group has no failed jobs left to retry."),  # type: ignore
                              messages.WARNING)
            return HttpResponseRedirect(safe_next(request, self._url("dashboard")))
        try:
            operation = control.preview_bulk(Actor.from_request(request, AuditSource.ADMIN), "retry", ids=ids)
        except control.ControlError as exc:
            self.message_user(request, exc.message, messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(safe_next(request, self._url("dashboard")))
        return HttpResponseRedirect(self._url("bulk_confirm", operation.pk))

"""``/metrics``: the Prometheus exposition of ``metrics.prometheus_snapshot`` (same auth as the API)."""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.utils import OpenApiResponse, OpenApiTypes, extend_schema
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from .. import metrics
from ..models import HISTOGRAM_BOUNDS, OUTCOME_FIELDS
from .views import ReadView


class PrometheusRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "prometheus"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if isinstance(data, bytes):
            return data
        return json.dumps(data).encode()  # errors (401/403/429) keep their JSON body


class AlwaysPrometheus(BaseContentNegotiation):
    """Scrapers send varied Accept headers; the exposition format is the only one we serve."""

    def select_renderer(self, request: Any, renderers: list, format_suffix: str | None = None) -> tuple:
        return renderers[0], "text/plain; version=0.0.4; charset=utf-8"

    def select_parser(self, request: Any, parsers: list) -> Any:
        return parsers[0] if parsers else None


class _Snapshot:
    """A one-shot collector over a snapshot dict."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Any:
        snap = self.snapshot
        jobs = CounterMetricFamily("jobmonitor_jobs_finished", "Finished jobs by outcome (from the rollups).",
                                   labels=["task_name", "queue", "outcome"])
        runtime = HistogramMetricFamily("jobmonitor_job_runtime_seconds", "Runtime of finished jobs.",
                                        labels=["task_name", "queue"])
        for (task_name, queue), figures in sorted(snap["jobs"].items()):
            for outcome in OUTCOME_FIELDS:
                jobs.add_metric([task_name, queue, outcome], getattr(figures, outcome))
            cumulative, buckets = 0, []
            for bound, count in zip((*HISTOGRAM_BOUNDS, float("inf")), figures.histogram, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
            runtime.add_metric([task_name, queue], buckets, figures.runtime_sum)
        yield jobs
        yield runtime
        depth = GaugeMetricFamily("jobmonitor_queue_depth", "Messages waiting in the broker.", labels=["queue"])
        active = GaugeMetricFamily("jobmonitor_queue_active", "Jobs held by workers.", labels=["queue"])
        paused = GaugeMetricFamily("jobmonitor_queue_paused", "1 when an operator paused the queue.",
                                   labels=["queue"])
        for queue in snap["queues"]:
            if queue["depth"] is not None:
                depth.add_metric([queue["queue"]], queue["depth"])
            active.add_metric([queue["queue"]], queue["active"])
            paused.add_metric([queue["queue"]], 1 if queue["paused"] else 0)
        yield depth
        yield active
        yield paused
        yield GaugeMetricFamily("jobmonitor_broker_up", "1 when the broker answered.", value=int(snap["broker_up"]))
        if snap["workers_online"] is not None:
            yield GaugeMetricFamily("jobmonitor_workers_online", "Workers that replied to inspect.",
                                    value=snap["workers_online"])
        yield GaugeMetricFamily("jobmonitor_jobs_stuck", "Jobs active longer than STUCK_AFTER.", value=snap["stuck"])


@extend_schema(tags=["metrics"], responses={200: OpenApiResponse(OpenApiTypes.STR,
                                                                 description="Prometheus text exposition"),
                                            403: OpenApiResponse(description="Not a job monitor viewer.")})
class PrometheusView(ReadView):
    """Prometheus exposition of job counters, runtime histograms, queue depths and workers."""

    throttle_scope = "monitoring-scrape"
    renderer_classes = [PrometheusRenderer]
    content_negotiation_class = AlwaysPrometheus

    def get(self, request: Request) -> Response:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(metrics.prometheus_snapshot()))
        return Response(generate_latest(registry), content_type="text/plain; version=0.0.4; charset=utf-8")

"""Routes of the monitoring API (the host mounts them under ``/api/v1/``)."""

from django.urls import path

from . import live, views

app_name = "monitoring-api"

urlpatterns = [
    path("jobs/", views.JobListView.as_view(), name="job-list"),
    # ``path``: a task id may hold "/" (Celery accepts any string as a custom task id).
    path("jobs/<path:task_id>/", views.JobDetailView.as_view(), name="job-detail"),
    path("metrics/", views.MetricsView.as_view(), name="metrics"),
    path("trends/", views.TrendsView.as_view(), name="trends"),
    path("stats/", views.StatsView.as_view(), name="stats"),
    path("timeline/", views.TimelineView.as_view(), name="timeline"),
    path("overlaps/", views.OverlapsView.as_view(), name="overlaps"),
    path("stuck/", views.StuckView.as_view(), name="stuck"),
    path("errors/", views.ErrorGroupsView.as_view(), name="errors"),
    path("queues/", views.QueueListView.as_view(), name="queue-list"),
    path("queues/<str:name>/", views.QueueDetailView.as_view(), name="queue-detail"),
    path("queues/<str:name>/live/", live.LiveQueueView.as_view(), name="queue-live"),
    path("live/", live.LiveMetricsView.as_view(), name="live"),
    path("health/", views.HealthView.as_view(), name="health"),
]

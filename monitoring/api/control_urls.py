"""Control endpoints (include under ``api/v1/`` before the read API, so ``jobs/bulk/`` is not a task id)."""

from django.urls import path

from . import control_views as views

app_name = "monitoring-control"

urlpatterns = [
    path("jobs/bulk/", views.BulkView.as_view(), name="bulk"),
    path("jobs/bulk/<int:pk>/", views.BulkDetailView.as_view(), name="bulk-detail"),
    # ``path``: a task id may hold "/". These routes come before the read API's ``jobs/<path:task_id>/`` (see the
    # host's urls.py), so ``jobs/a/b/retry/`` is the retry of "a/b"; a task id that itself ends in "/retry" or
    # "/cancel" is reached through ``jobs/?search=`` instead of its detail URL.
    path("jobs/<path:task_id>/retry/", views.JobRetryView.as_view(), name="job-retry"),
    path("jobs/<path:task_id>/cancel/", views.JobCancelView.as_view(), name="job-cancel"),
    path("queues/<str:name>/pause/", views.QueuePauseView.as_view(), name="queue-pause"),
    path("queues/<str:name>/resume/", views.QueueResumeView.as_view(), name="queue-resume"),
    path("queues/<str:name>/purge/", views.QueuePurgeView.as_view(), name="queue-purge"),
    path("queues/<str:name>/clear/", views.QueueClearView.as_view(), name="queue-clear"),
    path("audit/", views.AuditEventListView.as_view(), name="audit-list"),
]

"""URLs of the host project: the admin and the monitoring and batches APIs."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("monitoring.api.control_urls")),
    path("api/v1/", include("batches.api.urls")),
]

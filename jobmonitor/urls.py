"""URLs of the host project: the admin, the monitoring and batches APIs, their schema and docs."""

from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from monitoring.api.prometheus import PrometheusView

# The admin site's names, which every admin page (the apps' dashboards included) puts in its title and header.
admin.site.site_title = admin.site.site_header = "jobmonitor"
admin.site.index_title = _("Job monitor")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # The control routes come first: POST jobs/bulk/ would otherwise match the read API's jobs/<task_id>/.
    path("api/v1/", include("monitoring.api.control_urls")),
    path("api/v1/", include("monitoring.api.urls")),
    path("api/v1/", include("batches.api.urls")),
    path("api/v1/", include("monitoring.api.alerts_urls")),
    path("metrics", PrometheusView.as_view(), name="prometheus-metrics"),
]

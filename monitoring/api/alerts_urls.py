"""Alert routes (the host mounts them under ``/api/v1/``): ``alert-rules/`` and ``alerts/``."""

from rest_framework.routers import SimpleRouter

from . import alerts_views as views

app_name = "monitoring-alerts"

router = SimpleRouter()
router.register("alert-rules", views.AlertRuleViewSet, basename="alert-rule")
router.register("alerts", views.AlertViewSet, basename="alert")
urlpatterns = router.urls

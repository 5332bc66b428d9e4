"""Routes of the batches API: ``batches/`` and ``requests/`` (mounted under ``/api/v1/``)."""

from rest_framework.routers import SimpleRouter

from .views import AIProcessingRequestViewSet, BatchJobViewSet

app_name = "batches-api"

router = SimpleRouter()
router.register("batches", BatchJobViewSet, basename="batch")
router.register("requests", AIProcessingRequestViewSet, basename="request")
urlpatterns = router.urls

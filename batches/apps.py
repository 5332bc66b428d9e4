"""AI processing requests collected into provider batches (OpenAI Batch API), with costs and savings."""
from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext_lazy as _


class BatchesConfig(AppConfig):
    name = "batches"
    verbose_name = _("AI batches")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import alerts, checks  # noqa: F401 - checks register themselves on import
        from .models import Company
        from .pipeline import forget_active_companies

        # The create step caches the active companies; a change to any company invalidates it.
        post_save.connect(forget_active_companies, sender=Company, dispatch_uid="batches-company-saved")
        post_delete.connect(forget_active_companies, sender=Company, dispatch_uid="batches-company-deleted")
        alerts.register()  # batch metrics for monitoring's alert rules

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = _("Job monitoring")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import alerts, capture, checks, control  # noqa: F401 - checks register themselves on import

        capture.connect_signals()
        # Also registers the background bulk task (monitoring.control.run_bulk_operation) in workers.
        control.connect_worker_hooks()
        # Job metrics and scopes for alert rules; other apps (batches) add theirs in their own ready().
        alerts.register_builtin()

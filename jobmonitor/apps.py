from django.apps import AppConfig


class JobmonitorConfig(AppConfig):
    """The host project as an app: its system checks, demo tasks and demo command."""

    name = "jobmonitor"
    verbose_name = "jobmonitor host project"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - checks register themselves on import

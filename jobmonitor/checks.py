"""System checks for the host project's environment settings (ids ``jobmonitor.E00x``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

DATABASE_URL_EXAMPLE = "postgres://postgres@127.0.0.1:5432/jobmonitor (or sqlite:////absolute/path/db.sqlite3)"
BROKER_URL_EXAMPLE = "redis://127.0.0.1:6379/0, amqp://guest:guest@127.0.0.1:5672//, or filesystem://"


@register()
def check_database_url(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    error = getattr(settings, "DATABASE_URL_ERROR", "")
    if not error:
        return []
    return [Error(f"The DATABASE_URL environment variable cannot be parsed ({error}).",
                  hint=f"Set it to a URL like {DATABASE_URL_EXAMPLE}, or unset it for the SQLite default.",
                  id="jobmonitor.E001")]


@register()
def check_broker_url(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from kombu.transport import resolve_transport
    from kombu.utils.url import url_to_parts

    url = settings.CELERY_BROKER_URL
    try:
        scheme = url_to_parts(url).scheme
        if not scheme:
            raise ValueError("no scheme")
        resolve_transport(scheme)
    except Exception as exc:
        return [Error(f"The CELERY_BROKER_URL environment variable {url!r} is not a usable broker URL ({exc}).",
                      hint=f"Set it to a URL like {BROKER_URL_EXAMPLE}, or unset it for the embedded default.",
                      id="jobmonitor.E002")]
    return []

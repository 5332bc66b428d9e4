"""Settings of the jobmonitor host project, read from the environment.

Everything has a default that needs no server: SQLite and kombu's filesystem transport, so the demo runs
with nothing but Python. Production and CI set ``DATABASE_URL`` and ``CELERY_BROKER_URL``.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("JOBMONITOR_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-demo-key-change-me-in-production")
DEBUG = env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally (no CDN)
    "django_celery_results",
    "monitoring",
    "batches",
    "jobmonitor",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "jobmonitor.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "jobmonitor.wsgi.application"
ASGI_APPLICATION = "jobmonitor.asgi.application"

# An unparseable DATABASE_URL must not crash at import time with a traceback: we keep the error and
# report it as the system-check error jobmonitor.E001 (with a valid example), which stops every command.
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASE_URL_ERROR = ""
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
except Exception as exc:  # dj-database-url raises several types for bad input
    DATABASE_URL_ERROR = f"{type(exc).__name__}: {exc}"
    DATABASES = {"default": dj_database_url.parse(f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat write to the same file in the demo: wait for the lock instead of failing.
    # WAL lets the web server read while the worker writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "jobmonitor",
    }
}
if os.environ.get("CACHE_URL", "").startswith("redis://"):
    CACHES["default"] = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["CACHE_URL"]}

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

# --- Celery -------------------------------------------------------------------------------------------
# The default broker is kombu's filesystem transport: no server, and (with a control folder) it answers
# ping/inspect/cancel_consumer/add_consumer, so pause and resume work in the demo too.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "django-db")
CELERY_RESULT_EXTENDED = True
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TASK_ROUTES = {
    "jobmonitor.tasks.send_email": {"queue": "emails"},
    "jobmonitor.tasks.generate_report": {"queue": "reports"},
    "jobmonitor.tasks.resize_image": {"queue": "media"},
}
CELERY_BEAT_SCHEDULE: dict = {
    # The batches pipeline (intervals in seconds; defaults documented in batches/conf.py).
    "batches-create": {"task": "batches.create_batches", "schedule": 300.0},
    "batches-check": {"task": "batches.check_batches", "schedule": 120.0},
    "batches-process": {"task": "batches.process_results", "schedule": 60.0},
    "batches-retry": {"task": "batches.retry_failed", "schedule": 600.0},
    "batches-expire": {"task": "batches.expire_batches", "schedule": 600.0},
    # Job monitoring housekeeping (monitoring/tasks.py).
    "monitoring-roll-up": {"task": "monitoring.tasks.roll_up", "schedule": 60.0},
    "monitoring-sweep": {"task": "monitoring.tasks.sweep", "schedule": 60.0},
    "monitoring-prune": {"task": "monitoring.tasks.prune", "schedule": 3_600.0},
    "monitoring-evaluate-alerts": {"task": "monitoring.tasks.evaluate_alerts", "schedule": 60.0},
}
DEMO_MODE = env_bool("JOBMONITOR_DEMO", False)
if DEMO_MODE:
    # The demo keeps publishing a mix of tasks and AI requests so the dashboards move.
    CELERY_BEAT_SCHEDULE["demo-traffic"] = {"task": "jobmonitor.tasks.produce_demo_traffic", "schedule": 5.0}
    CELERY_BEAT_SCHEDULE["batches-demo-requests"] = {"task": "batches.submit_demo_requests", "schedule": 30.0}
    # Faster pipeline steps than production defaults, so a visitor sees batches go through in minutes.
    for _step, _seconds in (("create", 60.0), ("check", 20.0), ("process", 20.0), ("retry", 60.0)):
        CELERY_BEAT_SCHEDULE[f"batches-{_step}"]["schedule"] = _seconds

# --- REST framework -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "jobmonitor API",
    "DESCRIPTION": "Monitor and control Celery jobs and OpenAI batch jobs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- The apps' own settings (defaults and documentation in monitoring/conf.py and batches/conf.py) -----
MONITORING: dict = {"CAPTURE_ENABLED": env_bool("MONITORING_CAPTURE", True)}
# The demo batches small groups after 2 minutes instead of 30, so new requests go through quickly.
BATCHES: dict = {"MAX_WAIT": 120, "BACKOFF": 30} if DEMO_MODE else {}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "monitoring": {"handlers": ["console"], "level": os.environ.get("MONITORING_LOG_LEVEL", "INFO")},
        "batches": {"handlers": ["console"], "level": "INFO"},
    },
}

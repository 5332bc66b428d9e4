"""Test settings: the host settings on PostgreSQL and Redis (override with TEST_DATABASE_URL/TEST_BROKER_URL)."""

import os

import dj_database_url

from jobmonitor.settings import *  # noqa: F403

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/jobmonitor"), conn_max_age=0
    )
}
CELERY_BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/15")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_RESULT_BACKEND = "cache+memory://"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MONITORING = {"FLUSH_INTERVAL": 0.2}

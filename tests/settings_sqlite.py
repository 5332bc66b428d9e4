"""The SQLite pass: the embedded defaults (SQLite file, filesystem broker) stay honest."""

import os
import tempfile
from pathlib import Path

from jobmonitor.settings import *  # noqa: F403

_TMP = Path(os.environ.get("TEST_SQLITE_DIR") or tempfile.mkdtemp(prefix="jobmonitor-sqlite-"))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_TMP / "db.sqlite3"),
        "TEST": {"NAME": str(_TMP / "test.sqlite3")},
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}
for _sub in ("queue", "processed", "control"):
    (_TMP / "broker" / _sub).mkdir(parents=True, exist_ok=True)
CELERY_BROKER_URL = "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "data_folder_in": str(_TMP / "broker" / "queue"),
    "data_folder_out": str(_TMP / "broker" / "queue"),
    "processed_folder": str(_TMP / "broker" / "processed"),
    "control_folder": str(_TMP / "broker" / "control"),
}
CELERY_RESULT_BACKEND = "cache+memory://"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MONITORING = {"FLUSH_INTERVAL": 0.2}

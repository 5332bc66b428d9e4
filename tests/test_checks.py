"""Bad settings are system-check errors with stable ids and a hint, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent


def errors_by_id(**settings) -> dict[str, list]:
    with override_settings(**settings):
        found: dict[str, list] = {}
        for error in run_checks():
            found.setdefault(error.id, []).append(error)
        return found


@pytest.mark.sqlite
def test_default_settings_pass_every_check():
    assert errors_by_id() == {}


@pytest.mark.sqlite
def test_unknown_monitoring_key_is_named_with_the_valid_keys():
    errors = errors_by_id(MONITORING={"STUCK_AFTRE": 5})["monitoring.E001"]
    assert "'STUCK_AFTRE'" in errors[0].msg
    assert "STUCK_AFTER" in errors[0].hint


def test_unknown_batches_key_is_an_error():
    errors = errors_by_id(BATCHES={"NOPE": 1})["batches.E001"]
    assert "'NOPE'" in errors[0].msg and "PROVIDER" in errors[0].hint


@pytest.mark.parametrize("key,value", [("BUFFER_SIZE", 0), ("FLUSH_INTERVAL", "1s"), ("STUCK_AFTER", -5),
                                       ("RETENTION_DAYS", -1), ("IGNORE_TASKS", "celery.*")])
def test_invalid_monitoring_values_are_errors_with_an_example(key, value):
    errors = errors_by_id(MONITORING={key: value})["monitoring.E002"]
    assert key in errors[0].msg and errors[0].hint


def test_masking_hook_that_cannot_be_imported_is_an_error():
    errors = errors_by_id(MONITORING={"MASKING_HOOK": "nowhere.mask"})["monitoring.E003"]
    assert "nowhere.mask" in errors[0].msg
    assert "monitoring.masking.mask_sensitive" in errors[0].hint


def test_capture_database_alias_must_exist():
    errors = errors_by_id(MONITORING={"DATABASE_ALIAS": "jobs"})["monitoring.E004"]
    assert "'jobs'" in errors[0].msg and "default" in errors[0].hint


def run_check(**env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    environ.update(env, DJANGO_SETTINGS_MODULE="jobmonitor.settings", JOBMONITOR_VAR_DIR=str(ROOT / "var" / "check"))
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.sqlite
def test_unparseable_database_url_stops_commands_with_an_example():
    result = run_check(DATABASE_URL="postgres://user:pass@host:notaport/db")
    assert result.returncode != 0
    assert "jobmonitor.E001" in result.stderr and "DATABASE_URL" in result.stderr
    assert "postgres://postgres@127.0.0.1:5432/jobmonitor" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.sqlite
@pytest.mark.parametrize("url", ["nosuchbroker://localhost", "localhost:6379"])
def test_unusable_broker_url_stops_commands_with_an_example(url):
    result = run_check(CELERY_BROKER_URL=url)
    assert result.returncode != 0
    assert "jobmonitor.E002" in result.stderr and "CELERY_BROKER_URL" in result.stderr
    assert "redis://127.0.0.1:6379/0" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.sqlite
@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672//", "filesystem://"])
def test_supported_broker_urls_pass(url):
    result = run_check(CELERY_BROKER_URL=url)
    assert result.returncode == 0, result.stderr

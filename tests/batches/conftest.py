"""Fixtures of the batches tests: a real stand-in Batch API server and settings pointing the SDK at it."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.test import override_settings

from batches.standin import StandinServer, start_in_thread


@pytest.fixture(scope="session")
def standin_server() -> Iterator[StandinServer]:
    server = start_in_thread(step_seconds=0.05)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def standin(standin_server: StandinServer) -> Iterator[StandinServer]:
    """The stand-in server, emptied and at normal pace, with BATCHES pointing the real SDK at it."""
    control(standin_server, "reset")
    control(standin_server, "control", step_seconds=0.05)
    cache.clear()
    with override_settings(BATCHES={"OPENAI_BASE_URL": standin_server.url, "OPENAI_API_KEY": "sk-test",
                                    "OPENAI_MAX_RETRIES": 0, "OPENAI_TIMEOUT": 10.0, "CONCURRENCY": 2}):
        yield standin_server
    cache.clear()


def control(server: StandinServer, action: str, **payload) -> dict:
    """Drive the stand-in over HTTP like any client would (reset, control, advance)."""
    request = urllib.request.Request(f"{server.url}/_standin/{action}", data=json.dumps(payload).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())

"""Alert test helpers: a fixed clock, rule factory, and a loopback HTTP server standing in for a webhook."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from monitoring.models import AlertRule
from tests.factories import aware

# The fixed clock of the alert tests.
NOW = aware(2026, 11, 22, 12, 7, 31)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def make_rule(**fields: Any) -> AlertRule:
    """An enabled rule with defaults that suit the seeded data; any field can be overridden."""
    values: dict[str, Any] = {"name": fields.get("metric", "rule"), "scope": "all", "window": 3_600,
                              "severity": "high", "cooldown": 0, "channels": []}
    values.update(fields)
    return AlertRule.objects.create(**values)


@pytest.fixture
def only_test_rules(db) -> None:
    """Remove the default rules the migrations create, so a test sees only the rules it makes."""
    AlertRule.objects.all().delete()


@dataclass
class Hook:
    """Requests received by the stand-in webhook, and the status codes it answers with, in order."""

    url: str
    answers: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # Seconds to wait before answering (to exceed the delivery timeout).
    delay: float = 0.0


@pytest.fixture
def webhook() -> Iterator[Hook]:
    """A JSON webhook on 127.0.0.1 in a thread; answers the queued codes, then 200."""
    hook = Hook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if hook.delay:
                time.sleep(hook.delay)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hook.received.append(json.loads(body))
            hook.headers.append(dict(self.headers))
            code = hook.answers.pop(0) if hook.answers else 200
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"ok" if code < 400 else b"upstream broke")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nobody-home"

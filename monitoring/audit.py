"""The audit trail: every operator action, from any face, is recorded with who, where from and outcome."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .models import AuditEvent, AuditSource


@dataclass(frozen=True)
class Actor:
    """Who acts and from where; built by each face and passed to the service functions."""

    user: Any = None
    source: str = AuditSource.SYSTEM
    client_address: str | None = None

    @classmethod
    def from_request(cls, request: Any, source: str) -> Actor:
        """The signed-in user and client address of an API or admin request."""
        address = request.META.get("REMOTE_ADDR") or None
        return cls(user=request.user if request.user.is_authenticated else None, source=source,
                   client_address=address)

    @classmethod
    def from_command(cls, username: str | None = None) -> Actor:
        """A management command run by the OS user (or a named Django user)."""
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(username=username).first() if username else None
        return cls(user=user, source=AuditSource.COMMAND)

    @property
    def name(self) -> str:
        if self.user is not None:
            return self.user.get_username()
        if self.source == AuditSource.COMMAND:
            try:
                return f"os:{getpass.getuser()}"
            except Exception:
                return "os:unknown"
        return self.source


def storable_json(value: Any) -> Any:
    """Return ``value`` as plain JSON that PostgreSQL accepts: other types as strings, NUL characters replaced.

    Audit records keep what a client sent, and a client can send anything (jsonb and text reject NUL).
    """
    text = json.dumps(value, cls=DjangoJSONEncoder, default=str).replace("\\u0000", "\\ufffd")
    return json.loads(text)


def record_action(actor: Actor, action: str, *, targets: Iterable[Any] = (), parameters: dict | None = None,
                  outcome: str = "ok", detail: str = "", new_task_ids: Iterable[str] = ()) -> AuditEvent:
    """Write one AuditEvent (never updated afterwards)."""
    return AuditEvent.objects.create(
        actor=actor.user, actor_name=actor.name[:150], source=actor.source, client_address=actor.client_address,
        action=action[:64], targets=storable_json([str(t) for t in targets]),
        parameters=storable_json(parameters or {}), outcome=outcome, detail=detail.replace("\x00", "\ufffd"),
        new_task_ids=list(new_task_ids),
    )

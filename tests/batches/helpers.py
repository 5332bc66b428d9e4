"""Small factories for the batches tests."""

from __future__ import annotations

import itertools
from typing import Any

from batches.models import Company
from batches.submit import RequestSpec, submit_requests

_names = itertools.count()


def company(**fields: Any) -> Company:
    return Company.objects.create(name=fields.pop("name", f"Company {next(_names)}"), **fields)


def chat_body(text: str, *, model: str = "gpt-4o-mini", max_tokens: int = 20, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, **extra}


def submit(owner: Company, texts: list[str], *, job_type: str = "sentiment", model: str = "gpt-4o-mini",
           max_tokens: int = 20, **extra: Any) -> list:
    """Submit one chat request per text and return them in order."""
    return submit_requests([RequestSpec(company=owner, job_type=job_type,
                                        body=chat_body(text, model=model, max_tokens=max_tokens, **extra))
                            for text in texts])

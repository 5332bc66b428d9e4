"""The public API for host code: validate and submit AI processing requests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from . import conf, pricing
from .models import AIProcessingRequest, Company, Endpoint

# The key each endpoint needs in its body, and what it must hold.
_REQUIRED = {
    Endpoint.CHAT_COMPLETIONS: ("messages", "a non-empty list of {role, content} objects"),
    Endpoint.RESPONSES: ("input", "a string or a non-empty list of input items"),
    Endpoint.EMBEDDINGS: ("input", "a string or a non-empty list of strings"),
    Endpoint.COMPLETIONS: ("prompt", "a string or a list of strings"),
    Endpoint.MODERATIONS: ("input", "a string or a list of strings"),
}
_ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass
class RequestSpec:
    """One request to submit (see ``submit_request`` for the meaning of each field)."""

    company: Company | int
    job_type: str
    body: dict[str, Any]
    model: str | None = None
    endpoint: str = Endpoint.CHAT_COMPLETIONS
    custom_id: str | None = None
    priority: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


def line_size(custom_id: str, endpoint: str, body: dict[str, Any]) -> int:
    """Bytes of the request's JSONL line in the input file (newline included)."""
    return len(json.dumps({"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body},
                          separators=(",", ":"), ensure_ascii=False).encode()) + 1


def _validate(spec: RequestSpec, company: Company | None) -> AIProcessingRequest:
    """Check one spec and build its unsaved request; raise ValidationError naming the field."""
    if company is None:
        raise ValidationError({"company": f"Company {spec.company!r} does not exist."})
    if not company.is_active:
        raise ValidationError({"company": f"Company {company.pk} ({company.name}) is inactive; activate it first."})
    if not isinstance(spec.job_type, str) or not spec.job_type.strip() or len(spec.job_type) > 64:
        raise ValidationError({"job_type": "Give a job type of 1 to 64 characters, e.g. 'sentiment'."})
    if spec.endpoint not in Endpoint.values:
        raise ValidationError({"endpoint": f"Unknown endpoint {spec.endpoint!r}; allowed: "
                                           f"{', '.join(Endpoint.values)}."})
    body = spec.body
    if not isinstance(body, dict):
        raise ValidationError({"body": f"The request body must be a JSON object, not {type(body).__name__}."})
    model = spec.model or body.get("model")
    if not model or not isinstance(model, str):
        raise ValidationError({"model": "Give the model, as the 'model' argument or body['model']."})
    if body.get("model") not in (None, model):
        raise ValidationError({"model": f"body['model'] is {body['model']!r} but model is {model!r}."})
    if pricing.price_for(model) is None:
        raise ValidationError({"model": f"No price for model {model!r}; add it to BATCHES['PRICES'] or use one "
                                        f"of: {', '.join(pricing.known_models())}."})
    key, shape = _REQUIRED[Endpoint(spec.endpoint)]
    value = body.get(key)
    if spec.endpoint == Endpoint.CHAT_COMPLETIONS:
        if not isinstance(value, list) or not value:
            raise ValidationError({"body": f"body['messages'] must be {shape}."})
        for index, message in enumerate(value):
            if not isinstance(message, dict) or message.get("role") not in _ROLES or "content" not in message:
                raise ValidationError({"body": f"body['messages'][{index}] must be an object with 'role' (one of "
                                               f"{', '.join(_ROLES)}) and 'content'."})
    elif not value or not isinstance(value, str | list):
        raise ValidationError({"body": f"body[{key!r}] must be {shape}."})
    if body.get("stream"):
        raise ValidationError({"body": "The Batch API does not stream; remove body['stream']."})
    custom_id = spec.custom_id or None
    if custom_id is not None and (not isinstance(custom_id, str) or not 0 < len(custom_id) <= 64):
        raise ValidationError({"custom_id": "custom_id must be a string of 1 to 64 characters."})
    if not isinstance(spec.metadata, dict):
        raise ValidationError({"metadata": "metadata must be a JSON object."})
    full_body = {**body, "model": model}
    request = AIProcessingRequest(company=company, job_type=spec.job_type.strip(), model=model,
                                  endpoint=spec.endpoint, body=full_body, priority=int(spec.priority),
                                  metadata=spec.metadata, requested_at=timezone.now())
    if custom_id:
        request.custom_id = custom_id
    request.line_bytes = line_size(request.custom_id, spec.endpoint, full_body)
    if request.line_bytes > conf.get("MAX_FILE_BYTES"):
        raise ValidationError({"body": f"The request is {request.line_bytes} bytes, over the input file limit of "
                                       f"{conf.get('MAX_FILE_BYTES')} bytes."})
    return request


def submit_requests(specs: Iterable[RequestSpec]) -> list[AIProcessingRequest]:
    """Validate every spec, then store them all or none (ValidationError names the first bad one)."""
    specs = list(specs)
    company_ids = {s.company.pk if isinstance(s.company, Company) else s.company for s in specs}
    companies = Company.objects.in_bulk([c for c in company_ids if isinstance(c, int)])
    requests = []
    for index, spec in enumerate(specs):
        company = spec.company if isinstance(spec.company, Company) else companies.get(spec.company)
        try:
            requests.append(_validate(spec, company))
        except ValidationError as exc:
            if len(specs) == 1:
                raise
            raise ValidationError({f"requests[{index}].{k}": v for k, v in exc.message_dict.items()}) from exc
    custom_ids = [r.custom_id for r in requests]
    if len(set(custom_ids)) != len(custom_ids):
        raise ValidationError({"custom_id": "custom_id values must be unique."})
    taken = set(AIProcessingRequest.objects.filter(custom_id__in=custom_ids).values_list("custom_id", flat=True))
    if taken:
        raise ValidationError({"custom_id": f"custom_id already used: {', '.join(sorted(taken)[:5])}."})
    with transaction.atomic():
        return AIProcessingRequest.objects.bulk_create(requests)


def submit_request(company: Company | int, job_type: str, body: dict[str, Any], *, model: str | None = None,
                   endpoint: str = Endpoint.CHAT_COMPLETIONS, custom_id: str | None = None, priority: int = 0,
                   metadata: dict[str, Any] | None = None) -> AIProcessingRequest:
    """Validate and store one request; the pipeline batches it. Raise ValidationError naming the problem."""
    return submit_requests([RequestSpec(company=company, job_type=job_type, body=body, model=model,
                                        endpoint=endpoint, custom_id=custom_id, priority=priority,
                                        metadata=metadata or {})])[0]

"""The OpenAI Batch API on the official ``openai`` SDK (honours BATCHES / env base URL and API key)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import openai

from .. import conf
from .base import BatchProvider, ProviderBatch, ProviderError

T = TypeVar("T")

# Typed SDK errors to our error kinds (classified on type, never on message text).
_ERROR_KINDS: tuple[tuple[type[Exception], str], ...] = (
    (openai.APITimeoutError, "timeout"),
    (openai.APIConnectionError, "network"),
    (openai.AuthenticationError, "auth"),
    (openai.PermissionDeniedError, "auth"),
    (openai.RateLimitError, "rate_limit"),
    (openai.NotFoundError, "not_found"),
    (openai.InternalServerError, "server"),
    (openai.BadRequestError, "bad_request"),
    (openai.UnprocessableEntityError, "bad_request"),
    (openai.ConflictError, "conflict"),
)


def _to_batch(batch: Any) -> ProviderBatch:
    counts = batch.request_counts
    errors = batch.errors.data if batch.errors and batch.errors.data else []
    return ProviderBatch(
        id=batch.id, status=batch.status, endpoint=batch.endpoint, input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id, error_file_id=batch.error_file_id, created_at=batch.created_at,
        in_progress_at=batch.in_progress_at, expires_at=batch.expires_at, finalizing_at=batch.finalizing_at,
        completed_at=batch.completed_at, failed_at=batch.failed_at, expired_at=batch.expired_at,
        cancelling_at=batch.cancelling_at, cancelled_at=batch.cancelled_at,
        total=counts.total if counts else 0, completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        errors=[{"code": e.code, "message": e.message, "line": e.line, "param": e.param} for e in errors],
        metadata=dict(batch.metadata or {}),
    )


class OpenAIProvider(BatchProvider):
    """Files and batches through ``openai.OpenAI``."""

    name = "openai"

    def __init__(self) -> None:
        self.client = openai.OpenAI(
            api_key=conf.openai_api_key() or "missing-api-key", base_url=conf.openai_base_url(),
            timeout=conf.get("OPENAI_TIMEOUT"), max_retries=conf.get("OPENAI_MAX_RETRIES"))

    def _call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except openai.APIError as exc:
            for error_type, kind in _ERROR_KINDS:
                if isinstance(exc, error_type):
                    raise ProviderError(kind, str(exc), getattr(exc, "status_code", None)) from exc
            status = getattr(exc, "status_code", None)
            kind = "server" if status and status >= 500 else "bad_request"
            raise ProviderError(kind, str(exc), status) from exc

    def upload_file(self, filename: str, content: bytes) -> str:
        return self._call(self.client.files.create, file=(filename, content, "application/jsonl"),
                          purpose="batch").id

    def create_batch(self, input_file_id: str, endpoint: str, metadata: dict[str, str]) -> ProviderBatch:
        return _to_batch(self._call(self.client.batches.create, input_file_id=input_file_id, endpoint=endpoint,
                                    completion_window="24h", metadata=metadata))

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        return _to_batch(self._call(self.client.batches.retrieve, batch_id))

    def cancel_batch(self, batch_id: str) -> ProviderBatch:
        return _to_batch(self._call(self.client.batches.cancel, batch_id))

    def list_batches(self, limit: int = 100) -> Iterator[ProviderBatch]:
        page = self._call(self.client.batches.list, limit=limit)
        # Auto-pagination fetches further pages lazily; errors there are provider errors too.
        iterator = iter(page)
        while True:
            try:
                batch = self._call(next, iterator)
            except StopIteration:
                return
            yield _to_batch(batch)

    def file_content(self, file_id: str) -> bytes:
        return self._call(self.client.files.content, file_id).content

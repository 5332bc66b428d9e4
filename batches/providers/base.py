"""The provider interface: speaks a Batch API and returns plain data; the pipeline maps it onto models."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class ProviderError(Exception):
    """A provider call failed (``kind``: auth, network, timeout, rate_limit, server, bad_request, not_found...)."""

    RETRYABLE_KINDS = frozenset({"network", "timeout", "rate_limit", "server"})

    def __init__(self, kind: str, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status_code = status_code

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE_KINDS

    def __str__(self) -> str:
        code = f" HTTP {self.status_code}" if self.status_code else ""
        return f"{self.kind}{code}: {self.args[0]}"


@dataclass
class ProviderBatch:
    """A provider batch as plain data (timestamps in Unix seconds, as the Batch API reports them)."""

    id: str
    status: str
    endpoint: str = ""
    input_file_id: str = ""
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


class BatchProvider:
    """Base class of Batch API providers; subclasses implement every method."""

    name = "base"

    def upload_file(self, filename: str, content: bytes) -> str:
        """Upload a JSONL input file (purpose ``batch``) and return its file id."""
        raise NotImplementedError

    def create_batch(self, input_file_id: str, endpoint: str, metadata: dict[str, str]) -> ProviderBatch:
        """Create a batch over an uploaded input file with a 24 h completion window."""
        raise NotImplementedError

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        """Return the current state of one batch."""
        raise NotImplementedError

    def cancel_batch(self, batch_id: str) -> ProviderBatch:
        """Ask the provider to cancel a batch and return its new state."""
        raise NotImplementedError

    def list_batches(self, limit: int = 100) -> Iterator[ProviderBatch]:
        """Yield batches, newest first (the provider paginates)."""
        raise NotImplementedError

    def file_content(self, file_id: str) -> bytes:
        """Return the content of an output or error file."""
        raise NotImplementedError

"""An OpenAI-compatible Batch API stand-in server for the demo and the tests (stdlib only, in memory).

It serves what the batches app uses (``/v1/files``, ``/v1/files/{id}``, ``/v1/files/{id}/content``,
``/v1/batches`` create/list, ``/v1/batches/{id}``, ``/v1/batches/{id}/cancel``) in the Batch API's shapes,
so the official SDK talks to it over HTTP. Batches move ``validating -> in_progress -> finalizing ->
completed`` one step every ``step_seconds``.

Failure injection, deterministic and visible in the input:
- a marker in a request body, e.g. ``"[[standin:rate_limit_exceeded]]"`` in a message: that line fails with
  ``rate_limit_exceeded`` (429), ``token_limit_exceeded`` (400), ``server_error`` (500) or ``invalid_request``
  (400); ``[[standin:malformed]]`` writes a broken output line for it;
- ``[[standin:batch_failed]]`` anywhere in the file fails the batch in validation;
- ``[[standin:batch_expired]]`` expires the batch instead of finishing it; ``[[standin:slow]]`` keeps it
  in progress until its 24 h window passes (``POST /_standin/advance {"seconds": N}`` moves the clock);
  either way lines marked ``[[standin:unfinished]]`` go to the error file as ``batch_expired``;
- ``POST /_standin/control {"fail_next": {"status": 500, "count": 2}}`` fails the next API calls with that
  HTTP status (401 for auth errors); ``{"step_seconds": 0.1}`` changes the pace.

Token usage: prompt tokens = characters of the message/input text; completion tokens = ``max_tokens``
(or ``max_completion_tokens``/``max_output_tokens``, default 16); cached tokens = half the prompt tokens
(rounded down) when the body has a ``prompt_cache_key``; reasoning tokens = half the completion tokens for
``o*`` models.
"""

from __future__ import annotations

from .server import StandinProcess, StandinServer, start_in_process, start_in_thread

__all__ = ["StandinProcess", "StandinServer", "start_in_process", "start_in_thread"]

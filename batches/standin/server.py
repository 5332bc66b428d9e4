"""The stand-in server: in-memory files and batches behind a ThreadingHTTPServer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

MARKER = re.compile(r"\[\[standin:([a-z_]+)\]\]")
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')
_PART_NAME = re.compile(r'name="([^"]*)"')
_PART_FILENAME = re.compile(r'filename="([^"]*)"')
LINE_ERRORS = {
    "rate_limit_exceeded": (429, "Rate limit reached for requests."),
    "token_limit_exceeded": (400, "This model's maximum context length was exceeded."),
    "server_error": (500, "The server had an error while processing your request."),
    "invalid_request": (400, "Invalid request body."),
}
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions", "/v1/moderations")
TERMINAL = ("completed", "failed", "expired", "cancelled")
WINDOW = 24 * 3600


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _text_of(body: dict[str, Any]) -> str:
    """The prompt text of a request body (messages, input or prompt)."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for key in ("content", "text", "input"):
                if key in value:
                    walk(value[key])

    for key in ("messages", "input", "prompt"):
        if key in body:
            walk(body[key])
    return "".join(parts)


class StandinServer(ThreadingHTTPServer):
    """An OpenAI-compatible Batch API in memory, with a movable clock and failure injection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], step_seconds: float = 1.0, api_key: str | None = None) -> None:
        super().__init__(address, _Handler)
        self.step_seconds = step_seconds
        self.api_key = api_key
        self.offset = 0.0
        self.lock = threading.Lock()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.fail_next: list[int] = []
        self.calls: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}/v1"

    def now(self) -> float:
        return time.time() + self.offset

    # --- state ----------------------------------------------------------------------------------------
    def add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file = {"id": _new_id("file"), "object": "file", "bytes": len(content), "created_at": int(self.now()),
                "filename": filename, "purpose": purpose, "status": "processed", "content": content}
        self.files[file["id"]] = file
        return file

    def create_batch(self, payload: dict[str, Any]) -> dict[str, Any]:
        now = self.now()
        batch = {
            "id": _new_id("batch"), "object": "batch", "endpoint": payload["endpoint"], "errors": None,
            "input_file_id": payload["input_file_id"], "completion_window": payload.get("completion_window", "24h"),
            "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": int(now),
            "in_progress_at": None, "expires_at": int(now) + WINDOW, "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": payload.get("metadata") or {},
            "model": None, "usage": None, "_t0": now, "_lines": [], "_markers": set(), "_errors": None,
        }
        self.batches[batch["id"]] = batch
        return batch

    def _validate(self, batch: dict[str, Any]) -> None:
        """Read the input file's lines (the real API does this while the batch is ``validating``, not in the
        create call, which answers at once: so the create call here costs no per-line work either)."""
        content = self.files[batch["input_file_id"]]["content"]
        errors, lines, seen, models = [], [], set(), set()
        for number, raw in enumerate(content.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                custom_id, body = line["custom_id"], line["body"]
            except (ValueError, KeyError, TypeError):
                errors.append({"code": "invalid_json_line", "line": number, "message": "Line is not valid JSON."})
                continue
            if custom_id in seen:
                errors.append({"code": "duplicate_custom_id", "line": number,
                               "message": f"custom_id {custom_id!r} is used more than once."})
            if line.get("url") != batch["endpoint"]:
                errors.append({"code": "invalid_url", "line": number,
                               "message": f"url must be {batch['endpoint']!r}."})
            seen.add(custom_id)
            models.add(body.get("model"))
            markers = set(MARKER.findall(raw.decode("utf-8", "replace")))
            batch["_markers"] |= markers
            lines.append({"custom_id": custom_id, "body": body, "markers": markers})
        if len(models) > 1:
            errors.append({"code": "mixed_models", "line": None, "message": "One model per input file."})
        if "batch_failed" in batch["_markers"]:
            errors.append({"code": "invalid_request", "line": 1, "message": "Injected validation failure."})
        batch["_lines"] = lines
        batch["model"] = next(iter(models), None)
        batch["_errors"] = [{"param": None, **e} for e in errors]

    def advance(self, batch: dict[str, Any]) -> None:
        """Move a batch along its status progression up to the current (stand-in) time."""
        now = self.now()
        step = self.step_seconds
        elapsed = now - batch["_t0"]
        if batch["status"] in TERMINAL:
            return
        if batch["status"] == "cancelling":
            if now - batch["cancelling_at"] >= step:
                self._finish(batch, "cancelled", now)
            return
        if batch["status"] == "validating" and elapsed >= step:
            if batch["_errors"] is None:
                self._validate(batch)
            if batch["_errors"]:
                batch.update(status="failed", failed_at=int(now),
                             errors={"object": "list", "data": batch["_errors"]})
                return
            batch.update(status="in_progress", in_progress_at=int(now))
            batch["request_counts"]["total"] = len(batch["_lines"])
        if batch["status"] == "in_progress":
            if now >= batch["expires_at"] or ("batch_expired" in batch["_markers"] and elapsed >= 2 * step):
                self._finish(batch, "expired", now)
                return
            if "slow" not in batch["_markers"] and elapsed >= 2 * step:
                batch.update(status="finalizing", finalizing_at=int(now))
        if batch["status"] == "finalizing" and elapsed >= 3 * step:
            self._finish(batch, "completed", now)

    def _finish(self, batch: dict[str, Any], status: str, now: float) -> None:
        """Write the output and error files and move the batch to a terminal status."""
        partial = status in ("expired", "cancelled")
        started = batch["in_progress_at"] is not None
        output, errors = [], []
        completed = failed = 0
        for line in batch["_lines"]:
            unfinished = partial and (not started or "unfinished" in line["markers"])
            if unfinished:
                if status == "expired":
                    errors.append(json.dumps({"id": _new_id("batch_req"), "custom_id": line["custom_id"],
                                              "response": None, "error": {"code": "batch_expired", "message":
                                              "This request could not be executed before the completion "
                                              "window expired."}}))
                    failed += 1
                continue
            code = next((m for m in line["markers"] if m in LINE_ERRORS), None)
            if code:
                status_code, message = LINE_ERRORS[code]
                errors.append(json.dumps({"id": _new_id("batch_req"), "custom_id": line["custom_id"], "response": {
                    "status_code": status_code, "request_id": uuid.uuid4().hex,
                    "body": {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                       "code": code}}}, "error": None}))
                failed += 1
                continue
            text = json.dumps({"id": _new_id("batch_req"), "custom_id": line["custom_id"], "response": {
                "status_code": 200, "request_id": uuid.uuid4().hex,
                "body": self._response_body(batch["endpoint"], line, now)}, "error": None})
            if "malformed" in line["markers"]:
                text = text[: len(text) // 2]
            output.append(text)
            completed += 1
        batch["request_counts"] = {"total": len(batch["_lines"]), "completed": completed, "failed": failed}
        if output:
            batch["output_file_id"] = self.add_file(("\n".join(output) + "\n").encode(), "output.jsonl",
                                                    "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self.add_file(("\n".join(errors) + "\n").encode(), "errors.jsonl",
                                                   "batch_output")["id"]
        if status == "completed":
            batch["finalizing_at"] = batch["finalizing_at"] or int(now)
        batch.update(status=status, **{f"{status}_at": int(now)})

    def _response_body(self, endpoint: str, line: dict[str, Any], now: float) -> dict[str, Any]:
        body = line["body"]
        model = body.get("model", "")
        prompt = len(_text_of(body))
        completion = int(body.get("max_tokens") or body.get("max_completion_tokens")
                         or body.get("max_output_tokens") or 16)
        cached = prompt // 2 if body.get("prompt_cache_key") else 0
        reasoning = completion // 2 if model.startswith("o") else 0
        reply = f"Stand-in analysis of {line['custom_id']}."
        if endpoint == "/v1/embeddings":
            return {"object": "list", "model": model, "data": [{"object": "embedding", "index": 0,
                                                                "embedding": [0.0, 0.1, 0.2]}],
                    "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
        if endpoint == "/v1/responses":
            return {"id": _new_id("resp"), "object": "response", "created_at": int(now), "model": model,
                    "status": "completed", "output": [{"type": "message", "role": "assistant", "content": [
                        {"type": "output_text", "text": reply}]}],
                    "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
                              "output_tokens": completion,
                              "output_tokens_details": {"reasoning_tokens": reasoning},
                              "total_tokens": prompt + completion}}
        return {"id": _new_id("chatcmpl"), "object": "chat.completion", "created": int(now), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion,
                          "prompt_tokens_details": {"cached_tokens": cached},
                          "completion_tokens_details": {"reasoning_tokens": reasoning}}}

    def public(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}


class _Headers(dict[str, str]):
    """Request headers by lower-cased name."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


class _Handler(BaseHTTPRequestHandler):
    server: StandinServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes on a kept-alive connection: with Nagle's algorithm on, the body
    # waits for the client's delayed ACK (~40 ms per call on Linux).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def parse_request(self) -> bool:
        """Read the request line and headers without the email package.

        ``http.server`` parses headers with ``email.feedparser``: ~0.3 ms of this process's CPU per call, a third of
        the stand-in's work per upload or batch create (the bench makes 2,000 of them on the same 2 cores as the
        pipeline and PostgreSQL). What the SDK sends (HTTP/1.1, no ``Expect``) needs only this.
        """
        self.command = None  # type: ignore[assignment]
        self.requestline = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.request_version, self.close_connection = "HTTP/1.0", True
            self.send_error(400, f"Bad request line {self.requestline!r}")
            return False
        self.command, self.path, self.request_version = words
        headers = _Headers()
        while (line := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("iso-8859-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (self.request_version == "HTTP/1.0"
                                                          and connection != "keep-alive")
        return True

    def _send(self, status: int, payload: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None, kind: str = "invalid_request_error") -> None:
        self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path.removeprefix("/v1")
        body = self._body() if method == "POST" else b""
        server = self.server
        if path.startswith("/_standin/"):
            self._control(path, body)
            return
        with server.lock:
            server.calls.append((method, path))
            if server.fail_next:
                status = server.fail_next.pop(0)
                self._error(status, f"Injected HTTP {status}.", code="injected",
                            kind="authentication_error" if status == 401 else "server_error")
                return
        if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
            self._error(401, "Incorrect API key provided.", code="invalid_api_key", kind="authentication_error")
            return
        try:
            self._dispatch(method, path, parse_qs(parts.query), body)
        except Exception as exc:  # a stand-in bug must answer 500, not hang the client
            self._error(500, f"stand-in error: {exc}", kind="server_error")

    def _dispatch(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        server = self.server
        segments = [s for s in path.split("/") if s]
        with server.lock:
            if method == "POST" and segments == ["files"]:
                fields = _parse_multipart(self.headers.get("Content-Type", ""), body)
                if "file" not in fields or fields.get("purpose", (None, b""))[1] != b"batch":
                    self._error(400, "Expected a 'file' part and purpose=batch.")
                    return
                file = server.add_file(fields["file"][1], fields["file"][0] or "input.jsonl", "batch")
                self._send(200, {k: v for k, v in file.items() if k != "content"})
            elif method == "GET" and len(segments) == 2 and segments[0] == "files":
                file = server.files.get(segments[1])
                if file is None:
                    self._error(404, f"No such File object: {segments[1]}")
                else:
                    self._send(200, {k: v for k, v in file.items() if k != "content"})
            elif method == "GET" and len(segments) == 3 and segments[0] == "files" and segments[2] == "content":
                file = server.files.get(segments[1])
                if file is None:
                    self._error(404, f"No such File object: {segments[1]}")
                else:
                    self._send(200, None, raw=file["content"])
            elif method == "POST" and segments == ["batches"]:
                payload = json.loads(body or b"{}")
                if payload.get("input_file_id") not in server.files:
                    self._error(400, f"Invalid input_file_id: {payload.get('input_file_id')!r}.")
                elif payload.get("endpoint") not in ENDPOINTS:
                    self._error(400, f"Invalid endpoint: {payload.get('endpoint')!r}.")
                elif payload.get("completion_window") != "24h":
                    self._error(400, "completion_window must be '24h'.")
                else:
                    self._send(200, server.public(server.create_batch(payload)))
            elif method == "GET" and segments == ["batches"]:
                ordered = sorted(server.batches.values(), key=lambda b: (b["_t0"], b["id"]), reverse=True)
                after = (query.get("after") or [None])[0]
                if after:
                    ids = [b["id"] for b in ordered]
                    ordered = ordered[ids.index(after) + 1:] if after in ids else []
                limit = max(1, min(100, int((query.get("limit") or ["20"])[0])))
                page = ordered[:limit]
                for batch in page:
                    server.advance(batch)
                data = [server.public(b) for b in page]
                self._send(200, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                 "last_id": data[-1]["id"] if data else None, "has_more": len(ordered) > limit})
            elif len(segments) >= 2 and segments[0] == "batches":
                batch = server.batches.get(segments[1])
                if batch is None:
                    self._error(404, f"No such Batch object: {segments[1]}")
                    return
                server.advance(batch)
                if method == "POST" and segments[2:] == ["cancel"]:
                    if batch["status"] in TERMINAL:
                        self._error(409, f"Cannot cancel a batch with status {batch['status']!r}.")
                        return
                    if batch["status"] != "cancelling":
                        batch.update(status="cancelling", cancelling_at=int(server.now()))
                    self._send(200, server.public(batch))
                elif method == "GET" and len(segments) == 2:
                    self._send(200, server.public(batch))
                else:
                    self._error(404, f"Unknown route {method} {path}")
            else:
                self._error(404, f"Unknown route {method} {path}")

    def _control(self, path: str, body: bytes) -> None:
        server = self.server
        payload = json.loads(body or b"{}")
        with server.lock:
            if path == "/_standin/advance":
                server.offset += float(payload.get("seconds", 0))
            elif path == "/_standin/control":
                if "step_seconds" in payload:
                    server.step_seconds = float(payload["step_seconds"])
                if "fail_next" in payload:
                    spec = payload["fail_next"]
                    server.fail_next.extend([int(spec.get("status", 500))] * int(spec.get("count", 1)))
            elif path == "/_standin/reset":
                server.files.clear()
                server.batches.clear()
                server.fail_next.clear()
                server.calls.clear()
                server.offset = 0.0
            self._send(200, {"ok": True, "batches": len(server.batches), "files": len(server.files),
                             "offset": server.offset})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Parse multipart/form-data into {name: (filename, value)} (enough for the SDK's file upload)."""
    match = _BOUNDARY.search(content_type)
    if not match:
        return {}
    boundary = b"--" + match.group(1).encode()
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        disposition = head.decode("utf-8", "replace")
        name = _PART_NAME.search(disposition)
        filename = _PART_FILENAME.search(disposition)
        if name:
            fields[name.group(1)] = (filename.group(1) if filename else None, value.removesuffix(b"\r\n"))
    return fields


def start_in_thread(host: str = "127.0.0.1", port: int = 0, **options: Any) -> StandinServer:
    """Start a stand-in server on a background daemon thread and return it (``server.url`` is its base URL)."""
    server = StandinServer((host, port), **options)
    thread = threading.Thread(target=server.serve_forever, name="batches-standin", daemon=True)
    thread.start()
    return server


class StandinProcess:
    """A stand-in server running in a child process (``python -m batches.standin``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, step_seconds: float = 1.0,
                 api_key: str | None = None) -> None:
        command = [sys.executable, "-m", "batches.standin", "--host", host, "--port", str(port),
                   "--step-seconds", str(step_seconds)]
        if api_key:
            command += ["--api-key", api_key]
        # The child imports this package from the same checkout, whatever the caller's working directory.
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
        banner = self.process.stdout.readline() if self.process.stdout else ""
        match = re.search(r"(http://\S+/v1)", banner)
        if not match:
            self.process.kill()
            raise RuntimeError(f"the stand-in server did not start (it printed {banner!r})")
        self.url = match.group(1)

    def stop(self) -> None:
        """Stop the child process and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_in_process(host: str = "127.0.0.1", port: int = 0, **options: Any) -> StandinProcess:
    """Start a stand-in server in its own process (no GIL shared with the caller); ``.url``, ``.stop()``."""
    return StandinProcess(host, port, **options)

"""The stand-in server also runs in its own process (bench, demo), and the real SDK reaches it there."""

from __future__ import annotations

from django.test import override_settings

from batches.providers.openai import OpenAIProvider
from batches.standin import start_in_process


def test_stand_in_in_its_own_process_accepts_files_and_batches():
    server = start_in_process(step_seconds=0.05)
    try:
        with override_settings(BATCHES={"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "sk-test",
                                        "OPENAI_MAX_RETRIES": 0}):
            provider = OpenAIProvider()
            line = b'{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini"}}\n'
            file_id = provider.upload_file("in.jsonl", line)
            batch = provider.create_batch(file_id, "/v1/chat/completions", {"jobmonitor_batch": "7"})
            assert file_id.startswith("file_") and batch.input_file_id == file_id
            assert batch.status == "validating" and batch.metadata == {"jobmonitor_batch": "7"}
            assert provider.retrieve_batch(batch.id).id == batch.id
    finally:
        server.stop()
    assert server.process.returncode is not None


def test_stand_in_reads_headers_by_any_case_and_answers_a_bad_request_line():
    import http.client
    import socket

    from batches.standin import start_in_thread

    server = start_in_thread(api_key="sk-test")
    try:
        host, port = server.server_address[:2]
        client = http.client.HTTPConnection(host, port, timeout=5)
        body = b'{"input_file_id": "file_missing", "endpoint": "/v1/chat/completions", "completion_window": "24h"}'
        client.request("POST", "/v1/batches", body=body, headers={"AUTHORIZATION": "Bearer sk-test",
                                                                  "content-type": "application/json"})
        answer = client.getresponse()
        assert answer.status == 400 and b"Invalid input_file_id" in answer.read()  # authorised, body read
        client.request("GET", "/v1/batches", headers={"Authorization": "Bearer wrong"})
        answer = client.getresponse()
        assert answer.status == 401
        answer.read()
        client.close()
        with socket.create_connection((host, port), timeout=5) as raw:
            raw.sendall(b"GET /v1/batches HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received = b""
            while chunk := raw.recv(4096):  # the server closes the connection after answering
                received += chunk
            assert received.startswith(b"HTTP/1.1 401")
        with socket.create_connection((host, port), timeout=5) as raw:
            raw.sendall(b"NONSENSE\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.1 400 Bad request line")
    finally:
        server.shutdown()
        server.server_close()

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

"""AI processing requests collected into provider batches (OpenAI Batch API), with costs and savings."""

"""Models of the batches app (AI processing requests, provider batches, companies)."""

"""Durable records, metrics and control for Celery jobs and other background work."""

"""The batches REST API (mounted by the host at ``/api/v1/``)."""

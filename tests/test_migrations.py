"""Migrations stay in sync with the models."""

import pytest
from django.core.management import call_command


@pytest.mark.sqlite
@pytest.mark.django_db
def test_no_missing_migrations():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)

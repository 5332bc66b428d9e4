"""Admin test fixtures: logged-in clients per role (role groups recreated after transactional flushes)."""

from __future__ import annotations

import pytest
from django.test import Client

from tests import factories


@pytest.fixture
def viewer(db):
    factories.ensure_roles()
    return factories.user("viewer")


@pytest.fixture
def operator(db):
    factories.ensure_roles()
    return factories.user("operator")


def logged_in(account) -> Client:
    """A client of its own per role, so one test can act as two users."""
    client = Client()
    client.force_login(account)
    return client


@pytest.fixture
def viewer_client(viewer):
    return logged_in(viewer)


@pytest.fixture
def operator_client(operator):
    return logged_in(operator)


@pytest.fixture
def admin_client_(superuser):
    return logged_in(superuser)

"""Viewers read, operators act: two groups backed by explicit model permissions."""

import pytest
from django.contrib.auth.models import Group

from monitoring.roles import OPERATORS, VIEWERS


@pytest.mark.sqlite
@pytest.mark.django_db
def test_viewers_can_read_every_monitoring_record_but_not_act():
    perms = set(Group.objects.get(name=VIEWERS).permissions.values_list("content_type__app_label", "codename"))
    expected = {("monitoring", "view_jobrun"), ("monitoring", "view_queuestate"), ("monitoring", "view_auditevent")}
    assert expected <= perms
    assert not any(codename.startswith(("operate_", "add_", "change_", "delete_")) for _, codename in perms)


@pytest.mark.sqlite
@pytest.mark.django_db
def test_operators_can_read_and_act(operator, viewer):
    assert operator.has_perm("monitoring.view_jobrun")
    assert operator.has_perm("monitoring.operate_jobrun") and operator.has_perm("monitoring.operate_queue")
    assert viewer.has_perm("monitoring.view_jobrun") and not viewer.has_perm("monitoring.operate_jobrun")
    assert Group.objects.filter(name__in=[VIEWERS, OPERATORS]).count() == 2

"""The admin pages work on a host's own AdminSite: every link stays on the site the page was served by."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring.models import JobState
from tests.factories import job_run

pytestmark = pytest.mark.urls("tests.admin.custom_site_urls")

PAGES = ["monitoring_jobrun_dashboard", "batches_batchjob_dashboard", "monitoring_jobrun_changelist",
         "batches_batchjob_changelist", "batches_aiprocessingrequest_changelist", "index"]
LINK = re.compile(r'(?:href|action|data-[a-z-]*url)="(/[^"]*)"')


@pytest.mark.parametrize("page", PAGES)
def test_pages_of_a_second_admin_site_link_only_inside_it(admin_client_, page):
    now = timezone.now()
    job_run(state=JobState.FAILURE, exception_type="SMTPError", created_at=now, started_at=now, finished_at=now)
    job_run(state=JobState.STARTED, created_at=now, started_at=now - timedelta(hours=2))
    url = reverse(f"ops:{page}")
    assert url.startswith("/ops/")
    response = admin_client_.get(url)
    assert response.status_code == 200
    links = LINK.findall(response.content.decode())
    admin_links = [link for link in links if link.startswith(("/admin/", "/ops/"))]
    assert admin_links, "the page should link to other admin pages"
    assert [link for link in admin_links if link.startswith("/admin/")] == []

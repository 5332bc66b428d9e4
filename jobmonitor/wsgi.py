"""WSGI entry point of the host project."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobmonitor.settings")
application = get_wsgi_application()

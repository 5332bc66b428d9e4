"""ASGI entry point of the host project (production: ``uvicorn jobmonitor.asgi:application``).

Under ASGI the live streams (Server-Sent Events) do not hold a worker thread per open connection.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobmonitor.settings")
application = get_asgi_application()

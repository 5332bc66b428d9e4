"""A host that serves the apps' admins on an admin site of its own ("ops"), besides the default one."""

from django.contrib import admin
from django.urls import path

from jobmonitor.urls import urlpatterns as host_urlpatterns

ops_site = admin.AdminSite(name="ops")
# The same ModelAdmin classes the apps register on the default site, on the second site.
for model, model_admin in admin.site._registry.items():
    ops_site.register(model, type(model_admin))

urlpatterns = [path("ops/", ops_site.urls), *host_urlpatterns]

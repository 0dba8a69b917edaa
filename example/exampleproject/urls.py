from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("catalog.urls")),
    # The operations side: taskmill's job, batch and worker pages, and the live dashboard.
    # Both need a staff login (scripts/demo creates one; never keep it in production).
    path("admin/", admin.site.urls),
    path("taskmill/", include("taskmill.urls")),
]

"""URLs of the dashboard and the metrics endpoint.

Include them in the project::

    path("taskmill/", include("taskmill.urls")),
"""

from django.urls import path

from . import metrics
from .dashboard import views

app_name = "taskmill"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("dashboard.json", views.dashboard_data, name="dashboard-data"),
    path("metrics", metrics.metrics_view, name="metrics"),
]

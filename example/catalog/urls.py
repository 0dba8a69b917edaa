from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("rebuilds/<str:result_id>/", views.rebuild, name="rebuild"),
    path("rebuilds/<str:result_id>/status.json", views.rebuild_status, name="rebuild-status"),
    path("jobs/publish/", views.publish, name="publish"),
    path("jobs/import-feed/", views.import_feed, name="import-feed"),
    path("jobs/refresh-prices/", views.refresh, name="refresh-prices"),
]

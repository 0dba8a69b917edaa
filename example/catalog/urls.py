from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("rebuilds/<str:result_id>/", views.rebuild, name="rebuild"),
    path("rebuilds/<str:result_id>/status.json", views.rebuild_status, name="rebuild-status"),
]

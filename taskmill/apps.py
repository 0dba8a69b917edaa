from django.apps import AppConfig


class TaskmillConfig(AppConfig):
    name = "taskmill"
    verbose_name = "taskmill"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

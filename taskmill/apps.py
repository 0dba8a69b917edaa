from django.apps import AppConfig


class TaskmillConfig(AppConfig):
    name = "taskmill"
    verbose_name = "taskmill"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: checks import models, which Django's app loading
        # allows only once every app is registered (that is, in ready()).
        from . import checks, deploy, sharedcache  # noqa: F401  (checks register themselves)

        sharedcache.install()  # Threads sharing Django's in-memory test database.

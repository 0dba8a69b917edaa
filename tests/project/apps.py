from django.apps import AppConfig


class ProjectConfig(AppConfig):
    name = "tests.project"
    label = "project"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from taskmill import compat

        compat.task_started.connect(refuse_poisoned_start, dispatch_uid="tests.refuse")


class StartRefused(RuntimeError):
    """Raised by a task_started receiver, outside the task body."""


def refuse_poisoned_start(sender, task_result, **kwargs) -> None:
    if task_result.task.module_path == "tests.project.poison_tasks.refused_at_start":
        raise StartRefused(f"receiver refused job {task_result.id}")

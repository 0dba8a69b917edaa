"""Django's task signals, and tasks defined with either framework's decorator."""

import pytest

from taskmill import compat
from taskmill.backend import TaskmillTask
from taskmill.context import JobRuntime
from taskmill.store import get_store
from taskmill.worker.executor import announce_finished, execute
from tests.project.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


def test_enqueued_started_and_finished_signals_are_sent():

    seen = []

    def receiver(signal_name):
        def handle(sender, task_result, **kwargs):
            seen.append((signal_name, task_result.status))
        return handle

    handlers = {name: receiver(name) for name in ("enqueued", "started", "finished")}
    compat.task_enqueued.connect(handlers["enqueued"])
    compat.task_started.connect(handlers["started"])
    compat.task_finished.connect(handlers["finished"])
    try:
        add.enqueue(2, 2)
        store = get_store("default")
        (job,) = store.claim(["default"], 1, "host:1:sig")
        outcome, result = execute(job, JobRuntime(job, "host:1:sig", None))
        store.complete([outcome], "host:1:sig")
        announce_finished(result, outcome)
    finally:
        compat.task_enqueued.disconnect(handlers["enqueued"])
        compat.task_started.disconnect(handlers["started"])
        compat.task_finished.disconnect(handlers["finished"])
    assert seen == [("enqueued", "READY"), ("started", "RUNNING"), ("finished", "SUCCESSFUL")]


def test_taskmill_task_decorator_is_the_frameworks():
    assert isinstance(add, TaskmillTask) and isinstance(add, compat.Task)


@pytest.mark.skipif(not compat.NATIVE, reason="both frameworks side by side exist on Django 6")
def test_a_task_defined_with_the_backport_runs_through_taskmill_on_django_6(start_worker):
    from tests.project.backport_tasks import multiply

    assert isinstance(multiply, TaskmillTask)  # the backport built it with our task_class
    result = multiply.enqueue(6, 7)
    worker = start_worker("--burst", "--processes", "1")
    assert worker.wait(timeout=60) == 0, worker.output
    assert compat.default_task_backend.get_result(result.id).return_value == 42

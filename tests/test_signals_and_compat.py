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


@pytest.mark.skipif(not compat.NATIVE, reason="the backport is what Django 5.2 runs on")
def test_on_django_6_a_worker_does_not_import_the_backport_no_app_uses():
    """Its package monkeypatches Django's generic classes on import, which loads the
    admin, the sitemaps and the feeds into every worker process: 1.9 MB of each."""
    import subprocess
    import sys

    from tests.conftest import database_env

    probe = ("import sys, django; django.setup(); "
             "import taskmill.cli.worker, taskmill.worker.supervisor, taskmill.backend; "
             "from tests.project.tasks import add; "
             "from taskmill import compat; assert compat.is_task(add); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django_tasks'))")
    found = subprocess.run([sys.executable, "-c", probe], env=database_env(),
                           capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


@pytest.mark.skipif(not compat.NATIVE, reason="on Django 5.2 the backport's signals are the ones")
def test_on_django_6_the_backports_signals_reach_an_app_that_listens_to_them():
    from django_tasks import signals as backport_signals

    seen = []

    def handle(sender, task_result, **kwargs):
        seen.append(task_result.status)

    backport_signals.task_enqueued.connect(handle)
    try:
        add.enqueue(1, 2)
    finally:
        backport_signals.task_enqueued.disconnect(handle)
    assert seen == ["READY"]

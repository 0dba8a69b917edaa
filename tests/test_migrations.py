"""Every migration goes down and up again, on every database."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

from taskmill.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def indexes(table: str) -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, table)
    return {name: info["columns"] for name, info in found.items() if info["index"]}


def test_taskmill_migrates_down_to_nothing_and_up_again():
    before = indexes("taskmill_job")
    try:
        call_command("migrate", "taskmill", "0001", verbosity=0)
        call_command("migrate", "taskmill", verbosity=0)  # every migration goes up again
        assert indexes("taskmill_job") == before
        call_command("migrate", "taskmill", "zero", verbosity=0)
        assert "taskmill_job" not in connection.introspection.table_names()
    finally:
        call_command("migrate", "taskmill", verbosity=0)
    assert indexes("taskmill_job") == before
    from tests.project.tasks import add

    assert add.get_result(add.enqueue(1, 2).id).status == "READY"
    assert Job.objects.count() == 1


def test_finished_batches_are_pruned_by_an_index():
    assert ["finished_at"] in indexes("taskmill_batch").values()

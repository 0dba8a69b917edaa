"""`manage.py check --deploy [--database ALIAS]`: each of taskmill's deployment checks
fires on a bad configuration and is silent on a good one."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from taskmill.deploy import check_deployment, check_lease
from tests.jobrows import make_worker

pytestmark = pytest.mark.django_db(transaction=True)


def ids(messages) -> list[str]:
    return sorted(message.id for message in messages)


def serving(*queues: str, hostname: str = "web-1", threads: int = 2, count: int = 1) -> None:
    from taskmill.models import Worker

    for i in range(count):
        make_worker(f"{hostname}:{i}:{'-'.join(queues)}", hostname=hostname)
    Worker.objects.filter(hostname=hostname).update(queues=list(queues), threads=threads)


def test_a_short_lease_is_a_warning(settings):
    assert ids(check_lease()) == ["taskmill.W104"]  # the tests run with LEASE_SECONDS 3
    tasks = {**settings.TASKS, "default": {**settings.TASKS["default"], "OPTIONS": {
        **settings.TASKS["default"]["OPTIONS"], "LEASE_SECONDS": 30}}}
    with override_settings(TASKS=tasks):
        assert check_lease() == []


def test_queues_no_live_worker_serves_are_named():
    serving("default")
    (message,) = check_deployment(databases=["default"])
    assert message.id == "taskmill.W105" and "['other']" in message.msg
    serving("default", "other", hostname="web-1")
    assert check_deployment(databases=["default"]) == []
    assert check_deployment() == []  # Without --database it asks the database nothing.


def test_workers_of_several_hosts_on_sqlite_are_a_warning():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's file")
    serving("default", "other", hostname="web-1")
    assert check_deployment(databases=["default"]) == []
    serving("default", "other", hostname="web-2")
    assert ids(check_deployment(databases=["default"])) == ["taskmill.W102"]


def test_more_connections_than_the_server_has_is_a_warning():
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no connection limit")
    serving("default", "other", threads=2)
    assert check_deployment(databases=["default"]) == []
    serving("default", "other", hostname="busy", threads=16, count=60)
    (message,) = check_deployment(databases=["default"])
    assert message.id == "taskmill.W101" and "max_connections" in message.msg


def test_missing_migrations_are_named():
    serving("default", "other")
    call_command("migrate", "taskmill", "0005", verbosity=0)
    try:
        (message,) = check_deployment(databases=["default"])
        assert message.id == "taskmill.W106" and "0006_service_and_database_clock" in message.msg
    finally:
        call_command("migrate", "taskmill", verbosity=0)
    assert check_deployment(databases=["default"]) == []

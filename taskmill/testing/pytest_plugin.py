"""pytest plugin registered through the ``pytest11`` entry point: taskmill fixtures.

* ``taskmill_run_pending`` — :func:`taskmill.testing.run_pending`, with the test's
  database enabled (pytest-django's ``db``): call it after enqueueing, inside the
  test's transaction.
* ``taskmill_worker`` — a real worker in threads of the test process for the whole
  test (:func:`taskmill.testing.worker`); makes the test transactional
  (pytest-django's ``transactional_db``) so the worker sees committed data.

Loaded in every pytest run where taskmill is installed, so nothing here touches Django
until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def taskmill_run_pending(request: pytest.FixtureRequest) -> Callable[..., int]:
    """``taskmill_run_pending(queues=None)`` runs every due job now; returns how many."""
    request.getfixturevalue("db")  # Transactional too when the test asks for that.
    # Imported here: pytest loads this plugin before Django is set up, and the helpers
    # import models, which Django's app loading allows only afterwards.
    from .pending import run_pending

    return run_pending


@pytest.fixture
def taskmill_worker(transactional_db: Any) -> Iterator[Any]:
    """A running in-process worker serving every queue; ``.wait(result)``, ``.drain()``."""
    from .threaded import worker  # Here, not at the top: see taskmill_run_pending.

    with worker() as running:
        yield running

"""The test settings plus ``TASKMILL_SCHEDULE`` from ``TASKMILL_TEST_SCHEDULE`` (JSON)."""

import json
import os

from .settings import *  # noqa: F403

TASKMILL_SCHEDULE = json.loads(os.environ.get("TASKMILL_TEST_SCHEDULE", "{}"))

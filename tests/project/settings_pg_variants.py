"""The test settings with PostgreSQL reached another way, for tests that start processes.

``TASKMILL_PG_POOL=1``: Django's psycopg connection pool (``OPTIONS: {"pool": ...}``);
``TASKMILL_PG_POOL=defaults``: the pool at its size by default (four connections), giving
up on a connection after 2 s rather than 30.
``TASKMILL_PG_BOUNCER=1``: behind PgBouncer in transaction mode (no server-side cursors).
``TASKMILL_JOBS_DB=name``: the job tables in database ``name`` (alias "jobs").
Host and port come from ``TASKMILL_PG_HOST``/``TASKMILL_PG_PORT`` as usual.
"""

import os

from .settings import *  # noqa: F403
from .settings import DATABASES, TASKS

if os.environ.get("TASKMILL_PG_POOL") == "defaults":
    DATABASES["default"]["OPTIONS"] = {"pool": {"timeout": 2}}
elif os.environ.get("TASKMILL_PG_POOL"):
    DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 1, "max_size": 8, "timeout": 20}}
if os.environ.get("TASKMILL_PG_BOUNCER"):
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
if os.environ.get("TASKMILL_JOBS_DB"):
    # The job tables in a database of their own; the tasks' data stays in "default".
    DATABASES["jobs"] = {**DATABASES["default"], "NAME": os.environ["TASKMILL_JOBS_DB"]}
    TASKS["default"]["OPTIONS"]["DATABASE"] = "jobs"

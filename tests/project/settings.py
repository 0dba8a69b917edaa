"""Settings for taskmill's own tests. ``TASKMILL_TEST_DB`` picks the database:
``sqlite`` (default), ``postgresql`` or ``mysql``."""

import os
import tempfile
from pathlib import Path

VENDOR = os.environ.get("TASKMILL_TEST_DB", "sqlite")
SECRET_KEY = "taskmill-tests"
DEBUG = bool(os.environ.get("TASKMILL_TEST_DEBUG"))  # --reload is for DEBUG only
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_SQLITE_DIR = Path(os.environ.get("TASKMILL_SQLITE_DIR", tempfile.gettempdir()))

if VENDOR == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("TASKMILL_PG_NAME", "taskmill"),
            "USER": os.environ.get("TASKMILL_PG_USER", "postgres"),
            "HOST": os.environ.get("TASKMILL_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("TASKMILL_PG_PORT", "5432"),
            "TEST": {"NAME": os.environ.get("TASKMILL_PG_TEST_NAME", "test_taskmill")},
        }
    }
elif VENDOR == "mysql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": os.environ.get("TASKMILL_MYSQL_NAME", "taskmill"),
            "USER": os.environ.get("TASKMILL_MYSQL_USER", "root"),
            "HOST": os.environ.get("TASKMILL_MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("TASKMILL_MYSQL_PORT", "3306"),
            "OPTIONS": {"charset": "utf8mb4",
                        # A statement waiting on a table's metadata lock (a flush or a
                        # migration behind a connection a failed test left open) fails in
                        # a minute, not MariaDB's default day: a C-level wait that the
                        # test timeout's signal cannot interrupt would hang the run.
                        "init_command": "SET SESSION lock_wait_timeout = 60",
                        # MySQL's own default, which projects set: TASKMILL_MYSQL_ISOLATION.
                        "isolation_level": os.environ.get("TASKMILL_MYSQL_ISOLATION",
                                                          "read committed")},
            "TEST": {"NAME": os.environ.get("TASKMILL_MYSQL_TEST_NAME", "test_taskmill"),
                     "CHARSET": "utf8mb4"},
        }
    }
else:
    _name = os.environ.get("TASKMILL_SQLITE_NAME", str(_SQLITE_DIR / "taskmill-tests.sqlite3"))
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _name,
            # A file, not memory, so worker processes started by the tests share it.
            "TEST": {"NAME": os.environ.get("TASKMILL_SQLITE_TEST_NAME", _name + ".test")},
            "OPTIONS": {"timeout": 30},
        }
    }

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "taskmill",
    "tests.project",
]
if VENDOR != "native":
    try:
        import django

        if django.VERSION < (6, 0):
            INSTALLED_APPS.insert(0, "django_tasks")
    except ImportError:  # pragma: no cover
        pass

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": [
            "django.template.context_processors.request",
            "django.contrib.auth.context_processors.auth",
            "django.contrib.messages.context_processors.messages",
        ]},
    }
]
STATIC_URL = "/static/"

TASKS = {
    "default": {
        "BACKEND": "taskmill.backend.TaskmillBackend",
        "QUEUES": ["default", "other"],
        "OPTIONS": {
            "MAX_ATTEMPTS": 3,
            "RETRY_BACKOFF": 0.05,
            "LEASE_SECONDS": float(os.environ.get("TASKMILL_TEST_LEASE", "3")),
            # Off unless a test's worker is started with it (tests/test_priority_aging.py).
            "PRIORITY_AGING": (float(os.environ["TASKMILL_TEST_PRIORITY_AGING"])
                               if os.environ.get("TASKMILL_TEST_PRIORITY_AGING") else None),
        },
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"taskmill": {"handlers": ["console"], "level": "INFO"}},
}

# Tests of structured logs run workers with TASKMILL_TEST_LOG_FORMAT=json.
if os.environ.get("TASKMILL_TEST_LOG_FORMAT") == "json":
    LOGGING["formatters"] = {"json": {"()": "taskmill.logging.JSONFormatter"}}
    LOGGING["handlers"]["console"]["formatter"] = "json"

# Tests of hosts whose clocks disagree shift a worker's or an enqueuer's wall clock.
if os.environ.get("TASKMILL_TEST_CLOCK_SHIFT"):
    from .clock import shift_wall_clock

    shift_wall_clock(float(os.environ["TASKMILL_TEST_CLOCK_SHIFT"]))

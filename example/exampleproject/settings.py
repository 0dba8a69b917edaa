"""Settings of the example site: a catalog whose search index is rebuilt in the background.

SQLite by default (``example/db.sqlite3``, or ``EXAMPLE_SQLITE``); ``EXAMPLE_DB=postgresql``
or ``mysql`` with ``EXAMPLE_DB_NAME`` (and ``EXAMPLE_DB_HOST``/``PORT``/``USER``) to try
it on a server.
"""

import os
import tempfile
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("EXAMPLE_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "taskmill",
    "catalog",
]
if django.VERSION < (6, 0):  # The Tasks framework comes from the django-tasks backport.
    INSTALLED_APPS.insert(0, "django_tasks")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "exampleproject.urls"
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
WSGI_APPLICATION = "exampleproject.wsgi.application"

_vendor = os.environ.get("EXAMPLE_DB", "sqlite")
if _vendor == "postgresql":
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("EXAMPLE_DB_NAME", "taskmill_example"),
        "USER": os.environ.get("EXAMPLE_DB_USER", "postgres"),
        "HOST": os.environ.get("EXAMPLE_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("EXAMPLE_DB_PORT", "5432"),
    }}
elif _vendor == "mysql":
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": os.environ.get("EXAMPLE_DB_NAME", "taskmill_example"),
        "USER": os.environ.get("EXAMPLE_DB_USER", "root"),
        "HOST": os.environ.get("EXAMPLE_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("EXAMPLE_DB_PORT", "3306"),
        "OPTIONS": {"charset": "utf8mb4"},
    }}
else:
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_SQLITE", str(BASE_DIR / "db.sqlite3")),
        # Several processes write at once (the site, the worker, the rebuild's children):
        # wait for the lock rather than fail. IMMEDIATE: every transaction takes the write
        # lock when it begins, so one that reads and then writes (get_or_create,
        # update_or_create) waits its turn instead of failing with "database is locked"
        # when another process wrote in between.
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        # Tests use a file, not Django's default in-memory database: the rebuild's child
        # processes and the test worker's threads open connections of their own, and an
        # in-memory database is private to one process.
        "TEST": {"NAME": os.path.join(tempfile.gettempdir(),
                                      f"taskmill-example-test-{os.getpid()}.sqlite3")},
    }}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"

TASKS = {
    "default": {
        "BACKEND": "taskmill.backend.TaskmillBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"LEASE_SECONDS": 15},
    },
}

#: Seconds between two refreshes of the live dashboard (/taskmill/).
TASKMILL_DASHBOARD_POLL_INTERVAL = float(os.environ.get("EXAMPLE_DASHBOARD_POLL", "2"))

#: Periodic tasks, enqueued by the workers' scheduler (each tick exactly once). The
#: digest is weekly in spirit; the demo sends it every 30 seconds so that it shows.
TASKMILL_SCHEDULE = {
    "weekly-digest": {
        "task": "catalog.tasks.send_weekly_digest",
        "every": float(os.environ.get("CATALOG_DIGEST_EVERY", "30")),
    },
}

#: Child processes one rebuild splits its work over.
CATALOG_REBUILD_PROCESSES = int(os.environ.get("CATALOG_REBUILD_PROCESSES", "4"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)-7s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"taskmill": {"handlers": ["console"], "level": "INFO"}},
}

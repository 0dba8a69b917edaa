"""Settings for the benchmarks: ``BENCH_DB`` = postgresql (default) | sqlite | mysql."""

import os
import tempfile

VENDOR = os.environ.get("BENCH_DB", "postgresql")
SECRET_KEY = "taskmill-bench"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "taskmill", "bench"]
if os.environ.get("BENCH_ADMIN"):  # bench/scale.py times the admin's job list
    INSTALLED_APPS += ["django.contrib.admin", "django.contrib.messages"]

if VENDOR == "postgresql":
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": os.environ.get("BENCH_PG_NAME", "taskmill_bench"),
        "USER": "postgres", "HOST": "127.0.0.1", "PORT": "5432",
    }}
    if os.environ.get("BENCH_NO_PREPARE"):  # the worker then prepares nothing (see RESULTS.md)
        DATABASES["default"]["OPTIONS"] = {"prepare_threshold": None}
elif VENDOR == "mysql":
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": os.environ.get("BENCH_MYSQL_NAME", "taskmill_bench"), "USER": "root",
        "HOST": "127.0.0.1", "PORT": "3306", "OPTIONS": {"charset": "utf8mb4"},
    }}
else:
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_SQLITE_NAME",
                               os.path.join(tempfile.gettempdir(), "taskmill-bench.sqlite3")),
        "OPTIONS": {"timeout": 30},
    }}

TASKS = {"default": {"BACKEND": "taskmill.backend.TaskmillBackend", "QUEUES": ["default", "elsewhere"],
                     "OPTIONS": {"MAX_ATTEMPTS": 1}}}
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "loggers": {"taskmill": {"level": "WARNING"}}}

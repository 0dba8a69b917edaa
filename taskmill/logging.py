"""Log formatters a log system can parse: one JSON object (or logfmt line) per record.

Use them from ``LOGGING``::

    LOGGING = {
        "version": 1,
        "formatters": {"json": {"()": "taskmill.logging.JSONFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "loggers": {"taskmill": {"handlers": ["console"], "level": "INFO"}},
    }

Fields passed with ``extra=`` (taskmill's worker adds ``job_id``, ``task``, ``queue``,
``attempt``, ``worker_id`` and ``event`` where it knows them) become top-level keys.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record as flat, JSON-ready fields: time, level, logger, message, extras."""
    fields: dict[str, Any] = {
        "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
            timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
        "process": record.process,
        "thread": record.threadName,
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["exception"] = logging.Formatter().formatException(record.exc_info)
    if record.stack_info:
        fields["stack"] = record.stack_info
    return fields


class JSONFormatter(logging.Formatter):
    """One JSON object per line; values that are not JSON are written as ``str()``."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record), default=str, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    """``key=value`` pairs (logfmt), values quoted when they hold spaces or quotes."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}"
                        for key, value in record_fields(record).items())


def _logfmt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else (
        str(value) if isinstance(value, (int, float)) else json.dumps(value, default=str))
    if text == "" or any(c in text for c in ' ="\n\t\\'):
        return json.dumps(text, ensure_ascii=False)
    return text

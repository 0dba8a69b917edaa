"""``taskmill status``: queues by state, oldest waiting job, live workers."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from ..reporting import status_report
from .common import get_backend

HELP = "Show queues with job counts by state and the live workers."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--backend", help="Alias in TASKS (default: the taskmill backend).")
    parser.add_argument("--json", action="store_true", help="Print JSON for scripts.")


def handle(command: Any, options: dict[str, Any]) -> None:
    backend = get_backend(options.get("backend"))
    report = status_report(backend.database)
    if options["json"]:
        command.stdout.write(json.dumps(report, indent=2))
        return
    write = command.stdout.write
    states = ["READY", "RUNNING", "SUCCESSFUL", "FAILED"]
    write(f"{'QUEUE':<20} " + " ".join(f"{s:>10}" for s in states) + f" {'OLDEST WAITING':>15}")
    for q in report["queues"]:
        age = "-" if q["oldest_waiting_age"] is None else _age(q["oldest_waiting_age"])
        write(f"{q['queue']:<20} " + " ".join(f"{q['counts'][s]:>10}" for s in states)
              + f" {age:>15}")
    if not report["queues"]:
        write("(no jobs)")
    write("")
    write(f"{'HOST':<24} {'WORKER':<40} {'THREADS':>7} {'LAST HEARTBEAT':>15}")
    for w in report["workers"]:
        write(f"{w['hostname']:<24} {w['id']:<40} {w['threads']:>7} "
              f"{_age(w['heartbeat_age']) + ' ago':>15}")
    if not report["workers"]:
        write("(no live workers)")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"

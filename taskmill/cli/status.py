"""``taskmill status``: queues by state, oldest waiting job, live workers by host.

Finished jobs are counted over the last hour only, and the table's size is the planner's
estimate: the job table is also the history, and counting all of it would read it all.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from collections.abc import Sequence
from typing import Any

from ..flow import paused
from ..models import describe_pause
from ..reporting import status_report
from ..services.snapshots import WARN_AFTER
from ..store.rows import HeldSnapshot
from .common import get_backend

HELP = ("Show queues with job counts by state (finished ones: the last hour) and the "
        "live workers.")

STATES = ["READY", "RUNNING", "SUCCESSFUL", "FAILED"]
#: Counted inside the report's window only.
FINISHED = {"SUCCESSFUL", "FAILED"}


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--backend", help="Alias in TASKS (default: the taskmill backend).")
    parser.add_argument("--json", action="store_true", help="Print JSON for scripts.")


def handle(command: Any, options: dict[str, Any]) -> None:
    backend = get_backend(options.get("backend"))
    report = status_report(backend.database)
    report["paused"] = [{"queue": p.queue_name or None, "task": p.task_path or None,
                         "since": p.since.isoformat() if p.since else None}
                        for p in paused() if p.database == backend.database]
    if options["json"]:
        command.stdout.write(json.dumps(report, indent=2))
        return
    write = command.stdout.write
    write(f"Backend {backend.alias!r}, database {report['database']!r}, at {report['time']}")
    write("")
    minutes = report["finished_window_minutes"]
    capped = any(q["capped"] for q in report["queues"])
    if report["queues"]:
        rows = [[q["queue"], *(f"{q['counts'][s]:,}" + ("+" if q["capped"] and s == "READY"
                                                          else "") for s in STATES),
                 "-" if q["oldest_waiting_age"] is None else _age(q["oldest_waiting_age"])]
                for q in report["queues"]]
        if len(rows) > 1:
            rows.append(["(all)", *(f"{sum(q['counts'][s] for q in report['queues']):,}"
                                    + ("+" if capped and s == "READY" else "")
                                    for s in STATES), ""])
        window = _minutes(minutes)
        headers = [f"{s} ({window})" if s in FINISHED else s for s in STATES]
        write(table(["QUEUE", *headers, "OLDEST WAITING"], rows, right=range(1, 6)))
    else:
        write(f"No jobs waiting or running, and none finished in the last {minutes} minutes.")
    estimate = report["estimated_job_rows"]
    if capped:
        write(f"+: more wait. READY is counted up to {report['ready_counted_up_to']:,} a "
              "queue, and past that as a worker counted it in the last minute, up to "
              f"{report['ready_counted_by_a_worker_up_to']:,} (counting them all would read "
              "them all).")
    write(f"Finished counts cover the last {minutes} minutes"
          + ("." if estimate is None
             else f"; the job table holds about {estimate:,} rows (planner's estimate)."))
    held = report["oldest_transaction"]
    if held is not None and held["age"] >= WARN_AFTER:
        write(f"A transaction has been open for {_age(held['age'])} "
              f"({HeldSnapshot(**held).describe()}): until it ends, vacuum cannot remove "
              "the job rows replaced since, and claims slow down (docs/scaling.md).")
    write("")
    lease = backend.config.lease_seconds
    if report["workers"]:
        rows = [[w["hostname"], w["id"], str(w["threads"]), ",".join(w["queues"]),
                 _age(w["heartbeat_age"]) + " ago"
                 + ("" if w["heartbeat_age"] <= lease else "  (stale: past its lease)")]
                for w in report["workers"]]
        hosts = len({w["hostname"] for w in report["workers"]})
        write(table(["HOST", "WORKER", "THREADS", "QUEUES", "LAST HEARTBEAT"], rows,
                    right=[2]))
        write(f"{len(report['workers'])} worker process(es) on {hosts} host(s).")
    else:
        write("No live workers.")
    if report["paused"]:
        write("")
        write("Paused: " + ", ".join(
            describe_pause(p["queue"] or "", p["task"] or "") for p in report["paused"])
            + " (nothing new of it starts; `taskmill resume` to lift).")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          right: Sequence[int] | range = ()) -> str:
    """Columns as wide as their widest cell; ``right`` lists right-aligned columns."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows,
                                                                       strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(cell).rjust(w) if i in right else str(cell).ljust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def _minutes(minutes: int) -> str:
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"

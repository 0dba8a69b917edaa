"""``taskmill health``: is the worker alive? For Kubernetes and systemd probes.

Reads the file a worker started with ``--health-file`` keeps touching while every one
of its processes renews its lease and claims; no database round trip per probe. Exits
0 if it was touched within ``--max-age`` seconds, 1 (with one line saying why) if not.
"""

from __future__ import annotations

import sys
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

HELP = "Exit 0 if the worker's --health-file is fresh, 1 if not (for liveness probes)."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--file", required=True, metavar="PATH",
                        help="The worker's --health-file.")
    parser.add_argument("--max-age", type=float, default=60.0, metavar="S",
                        help="Seconds since the last touch that still count as alive "
                             "(default: %(default)s; keep it above LEASE_SECONDS).")


def handle(command: Any, options: dict[str, Any]) -> None:
    path = Path(options["file"])
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        command.stderr.write(f"{path} does not exist: no worker with --health-file {path} "
                             "has all its processes up yet.")
        sys.exit(1)
    if age > options["max_age"]:
        command.stderr.write(f"{path} was last touched {age:.0f}s ago (more than "
                             f"{options['max_age']:g}s): a worker process is hung, cut off "
                             "from the database, or gone.")
        sys.exit(1)
    if options.get("verbosity", 1) >= 2:
        command.stdout.write(f"{path} touched {age:.1f}s ago: alive.")

"""``manage.py wait_for_db``: block until the database answers, for start-up scripts.

Exit 0 once a fresh connection can run ``SELECT 1``; otherwise, when ``--timeout`` runs
out, exit 1 with one line naming the database, its host and port, and what failed in
plain words. Each attempt opens a direct connection (never a pooled one) with a connect
timeout bounded by the time left, so a server that does not answer cannot hold it up.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from ...db import describe_database, explain_connection_error, try_connect


class Command(BaseCommand):
    help = ("Wait until the database answers. Exits 0 once it does; 1, with one line saying "
            "what failed, if it does not within --timeout.")
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                            help="Database alias to wait for (default: %(default)s).")
        parser.add_argument("--timeout", type=float, default=30.0,
                            help="Seconds to wait before giving up (default: %(default)s).")

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["database"]
        timeout = max(0.0, options["timeout"])
        if alias not in connections.settings:
            raise CommandError(f"No database {alias!r} in DATABASES "
                               f"(there are: {', '.join(connections.settings)}).")
        deadline = time.monotonic() + timeout
        delay = 0.25
        while True:
            error = try_connect(alias, max(1.0, deadline - time.monotonic()))
            if error is None:
                if options["verbosity"] >= 1:
                    self.stdout.write(f"Database {describe_database(alias)} is available.")
                return
            left = deadline - time.monotonic()
            if left <= 0:
                self.stderr.write(f"Database {describe_database(alias)} is not available after "
                                  f"{timeout:g}s: {explain_connection_error(error)}")
                sys.exit(1)
            if options["verbosity"] >= 2:
                self.stdout.write(f"Waiting for database {describe_database(alias)}: "
                                  f"{explain_connection_error(error)}")
            time.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)

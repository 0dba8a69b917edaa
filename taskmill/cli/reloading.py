"""``taskmill worker --reload``: restart the worker when project code changes.

Development only (the command refuses without ``DEBUG = True``). This process runs
the worker as a child (the same command without ``--reload``) and watches the Python
files of the project and of every module it imported, tasks modules included, as
``runserver`` does; on a change it stops the child as SIGTERM would (running jobs
finish first) and starts a fresh one. Ctrl-C or SIGTERM stops both.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType

from django.conf import settings
from django.utils import autoreload
from django.utils.module_loading import autodiscover_modules

logger = logging.getLogger("taskmill.worker")

#: Seconds between two looks at the files.
TICK = 1.0


def run_reloading() -> int:
    """Run the worker, restarting it on every change, until told to stop."""
    autodiscover_modules("tasks")  # Watched from here on, like every imported module.
    reloader = autoreload.StatReloader()
    root = Path(getattr(settings, "BASE_DIR", Path.cwd()))
    reloader.watch_dir(root, "**/*.py")
    arguments = [a for a in autoreload.get_child_arguments() if a != "--reload"]
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    seen = dict(reloader.snapshot_files())
    while True:
        logger.info("taskmill worker --reload: starting the worker; watching %d file(s).",
                    len(seen))
        child = subprocess.Popen(arguments)
        changed: list[Path] = []
        while not stopping and not changed and child.poll() is None:
            time.sleep(TICK)
            now = dict(reloader.snapshot_files())
            changed = sorted(path for path, mtime in now.items() if seen.get(path) != mtime)
            seen = now
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)  # Running jobs finish (--shutdown-timeout).
        code = child.wait()
        if stopping:
            return 0
        if not changed:  # The worker ended on its own (--burst, or it failed to start).
            return code
        logger.info("taskmill worker --reload: %s changed; restarting the worker.",
                    changed[0] if len(changed) == 1 else f"{len(changed)} files")

"""Private database servers for tests that stop, restart or proxy one.

The shared servers are never touched: a test that needs to take PostgreSQL down gets
its own (``initdb`` in a temporary directory, as the ``postgres`` OS user, on a free
port); a test that needs PgBouncer starts one on a free port in front of the shared one.

Both listen on 127.0.0.1 only unless asked for more addresses: ``tests/hosts.py`` has
them listen on a bridge too, for worker "hosts" in network namespaces.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PGBOUNCER = Path("/usr/sbin/pgbouncer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _as_postgres(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True,
                          text=True, check=check, timeout=timeout)


def _private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(path, "postgres", "postgres")
    return path


def can_run() -> str | None:
    """Why these servers cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root to run the servers as the postgres OS user"
    if not (PG_BIN / "initdb").exists():
        return f"{PG_BIN / 'initdb'} is not installed"
    return None


class PrivatePostgres:
    """A throw-away PostgreSQL 15 cluster on a free port.

    ``extra_addresses``: addresses to listen on besides 127.0.0.1 (they must exist on
    this machine when :meth:`start` runs); ``trusted_networks``: client networks (CIDR)
    let in without a password, besides the local ones ``initdb -A trust`` allows.
    """

    def __init__(self, extra_addresses: Sequence[str] = (),
                 trusted_networks: Sequence[str] = ()) -> None:
        self.dir = _private_dir("taskmill-pg-")
        self.data = self.dir / "data"
        self.port = free_port()
        self.addresses = ("127.0.0.1", *extra_addresses)
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                     "postgres", "-E", "UTF8", "--no-sync", "--no-instructions")
        if trusted_networks:
            hba = self.data / "pg_hba.conf"
            with hba.open("a") as f:  # The file belongs to postgres; root may append.
                for network in trusted_networks:
                    f.write(f"host all all {network} trust\n")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses={','.join(self.addresses)} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                     "-w", "-t", "30", "-o", options, "start")

    def stop(self) -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop",
                     check=False)

    def createdb(self, name: str) -> None:
        _as_postgres(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), name)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncer:
    """PgBouncer in transaction mode on a free port, in front of the shared PostgreSQL
    (or the server at ``server_host:server_port``), listening on 127.0.0.1 and any
    ``extra_addresses``; ``pool_size`` server connections per database and user."""

    def __init__(self, server_port: int = 5432, *, server_host: str = "127.0.0.1",
                 extra_addresses: Sequence[str] = (), pool_size: int = 8,
                 idle_transaction_timeout: float | None = None) -> None:
        self.dir = _private_dir("taskmill-pgbouncer-")
        self.port = free_port()
        listen = ",".join(("127.0.0.1", *extra_addresses))
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={server_host} port={server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {listen}\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir}/users.txt\n"
            f"pool_mode = transaction\nmax_client_conn = 200\ndefault_pool_size = {pool_size}\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.dir}/pgbouncer.log\n"
            + (f"idle_transaction_timeout = {idle_transaction_timeout:g}\n"
               if idle_transaction_timeout is not None else "")
        )
        for name in ("users.txt", "pgbouncer.ini"):
            shutil.chown(self.dir / name, "postgres", "postgres")
        self.process = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(PGBOUNCER), str(self.dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:  # Nothing to save: stop it at once.
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

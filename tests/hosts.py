"""Real "hosts" for tests and benchmarks of several worker machines on one PostgreSQL.

Each host is a Linux network namespace with an address of its own and a host name of
its own; all of them reach one private PostgreSQL (and, if asked, a PgBouncer) over a
bridge, as machines on a LAN reach their database server::

    root namespace                                   host namespaces
    ┌──────────────────────────────────────┐        ┌───────────────────────────┐
    │ PrivatePostgres  127.0.0.1 + 10.77.k.1│        │ tmhost1-<run>  eth0       │
    │ PgBouncer        127.0.0.1 + 10.77.k.1│  veth  │   10.77.k.11, hostname    │
    │ bridge tmbr-<run>  10.77.k.1/24 ──────┼────────┤   "tmhost1"               │
    │   ports tmv<run>-1, tmv<run>-2, ...   │        ├───────────────────────────┤
    └──────────────────────────────────────┘        │ tmhost2-<run> ... .12     │
                                                     └───────────────────────────┘

Everything stays on this machine: the bridge has no uplink, nothing is routed or
forwarded, and the namespaces have no route but the bridge's subnet. Tests in the root
namespace reach the same servers on 127.0.0.1.

Usage::

    with HostNetwork(3) as net:
        db = net.start_postgres("taskmill_hosts")       # listens on net.gateway too
        env = worker_env(net.gateway, db.port, "taskmill_hosts")
        worker = HostWorker(net, net.hosts[0], ["--processes", "2"], env, log_dir)
        net.cut(net.hosts[0])       # the bridge drops its frames, silently
        net.restore(net.hosts[0])
    # namespaces, bridge, servers and every process in the namespaces are gone here

Hazards, and what this module does about them:

* **Two runs at once** (two pytest sessions, a benchmark next to a test): every name
  carries a random run id, and each run takes a /24 of 10.77.0.0/16 that no interface
  or route of this machine uses, under a lock (:data:`STATE_DIR`). The first free one is
  10.77.0.0/24, so a lone run has the addresses 10.77.0.1 and 10.77.0.11, .12, ...
* **A crashed run** (SIGKILL, a power cut of the test machine's process, a
  ``KeyboardInterrupt`` during teardown) leaves namespaces, a bridge, processes and
  servers behind. Each run writes what it creates to a state file *before* creating
  it, with its owner's pid and start time; every new run first tears down what runs
  whose owner is gone left behind (:func:`sweep_stale`), and :meth:`HostNetwork.close`
  runs from ``__exit__`` whatever failed.
* **Host names**: taskmill builds worker ids from the host name
  (``taskmill/ids.py``: ``host:pid:random``). Network namespaces share the root's UTS
  namespace, so commands run in a host get a UTS namespace of their own
  (``unshare --uts``) named after the host: worker ids then say which host ran a job.
* **A cut is silent**: :meth:`HostNetwork.cut` makes the bridge drop every frame of
  the host's port, both ways, with no RST and no ICMP, as a failed switch or a host
  that lost power would: open connections hang in TCP retransmission rather than fail,
  on the host and on the server alike (PostgreSQL keeps the host's sessions, and any
  transaction they had open, with its locks). Nothing changes on the interfaces, so
  TCP backs off as it does over a real network, and after :meth:`HostNetwork.restore`
  a connection resumes at its next retransmission (about as long after the restore as
  the cut lasted, at most). ``how="carrier"`` takes the bridge's end of the veth down
  instead (``ip link set ... down``): the host sees its carrier go, as with a pulled
  cable, and its kernel retries every half second or so rather than backing off.
  ``how="unreachable"`` takes both ends down: the host's route goes too, and new
  connections fail at once (``Network is unreachable``), as on a host whose NIC died.
* **The bridge's MAC address** is fixed at creation: a Linux bridge otherwise takes the
  lowest MAC of its ports and changes it as ports come and go, which would leave hosts'
  ARP entries stale for a while after a restore.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from tests import servers

ROOT = Path(__file__).resolve().parent.parent

#: Where runs record what they created (tmpfs: gone with the namespaces on reboot).
STATE_DIR = Path("/run/taskmill-hosts")
#: Each run takes one /24 of this /16 (the bridge is .1, host i is .(10 + i)).
SPACE = ipaddress.ip_network("10.77.0.0/16")
IP = shutil.which("ip") or "/usr/sbin/ip"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
BRIDGE = shutil.which("bridge") or "/usr/sbin/bridge"

#: How :meth:`HostNetwork.cut` cuts a host off (see "A cut is silent" above).
CutKind = Literal["partition", "carrier", "unreachable"]


def can_run() -> str | None:
    """Why hosts cannot run here (None: they can)."""
    if sys.platform != "linux":
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in (IP, UNSHARE, BRIDGE):
        if not os.path.exists(tool):
            return f"{tool} is not installed"
    return servers.can_run()


def _sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command of the harness (never a worker); raise with its stderr if it fails."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (None: no such process, or a dead
    one not yet reaped): with the pid it names a process for good, though pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


@dataclass(frozen=True)
class Host:
    """One host: a network namespace, its address, and its end of the bridge."""

    index: int
    hostname: str  #: what socket.gethostname() says in it, e.g. "tmhost1"
    netns: str  #: the namespace's name, e.g. "tmhost1-3fa2"
    address: str  #: its address on the bridge, e.g. "10.77.0.11"
    outer: str  #: the veth end in the root namespace, a port of the bridge


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    """Serialize allocation and sweeping between runs on this machine."""
    STATE_DIR.mkdir(mode=0o755, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _owner_alive(state: Mapping[str, Any]) -> bool:
    pid, started = state.get("owner_pid"), state.get("owner_start")
    return isinstance(pid, int) and _start_time(pid) == started


def _netns_list() -> list[str]:
    out = _sh(IP, "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(netns: str) -> list[int]:
    out = _sh(IP, "netns", "pids", netns, check=False).stdout
    return [int(pid) for pid in out.split()]


def _kill_netns_processes(netns: str) -> None:
    """SIGKILL every process in ``netns`` (they were all started by this harness), until
    none is left: a supervisor may fork a replacement between two looks."""
    for _ in range(50):
        pids = _netns_pids(netns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _stop_postgres(directory: str) -> None:
    data = Path(directory) / "data"
    if data.exists():
        subprocess.run(["runuser", "-u", "postgres", "--", str(servers.PG_BIN / "pg_ctl"), "-D",
                        str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                       timeout=60)
    shutil.rmtree(directory, ignore_errors=True)


def _stop_pgbouncer(pid: int | None, directory: str) -> None:
    """Kill a PgBouncer of a run if it is still the one (its command line names its
    directory's ini file: the pid may belong to someone else by now)."""
    if pid:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            cmdline = ""
        if directory and directory in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)


def _teardown(state: Mapping[str, Any]) -> None:
    """Remove everything a run's state names; each step tolerates what is already gone."""
    existing = set(_netns_list())
    for netns in state.get("netns", []):
        if netns in existing:
            _kill_netns_processes(netns)
            _sh(IP, "netns", "del", netns, check=False)  # takes its veth pair with it
    for link in [*state.get("links", []), state.get("bridge")]:
        if link:
            _sh(IP, "link", "del", link, check=False)
    for bouncer in state.get("pgbouncers", []):
        _stop_pgbouncer(bouncer.get("pid"), bouncer.get("dir", ""))
    for directory in state.get("postgres", []):
        _stop_postgres(directory)


def sweep_stale() -> list[str]:
    """Tear down what runs whose owner process is gone left behind; their run ids."""
    swept = []
    with _state_lock():
        for path in sorted(STATE_DIR.glob("*.json")):
            state = _read_state(path)
            if state is not None and _owner_alive(state):
                continue
            if state is not None:
                _teardown(state)
            path.unlink(missing_ok=True)
            swept.append(path.stem)
    return swept


def _used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks this machine's interfaces and routes use, and those runs claimed."""
    used: list[ipaddress.IPv4Network] = []
    addresses = _sh(IP, "-o", "-4", "addr", "show", check=False).stdout.split()
    routes = _sh(IP, "-4", "route", "show", "table", "all", check=False).stdout.split()
    for word in addresses + routes:
        with contextlib.suppress(ValueError):
            network = ipaddress.ip_network(word, strict=False)
            if isinstance(network, ipaddress.IPv4Network) and network.prefixlen > 0:
                used.append(network)
    for path in STATE_DIR.glob("*.json"):
        state = _read_state(path)
        if state and state.get("subnet"):
            used.append(ipaddress.IPv4Network(state["subnet"]))
    return used


class HostNetwork:
    """A bridge, ``count`` host namespaces on it, and the servers they share.

    A context manager: leaving it (normally or by an exception) kills every process in
    the namespaces, deletes the namespaces and the bridge, and stops the servers started
    through :meth:`start_postgres` and :meth:`start_pgbouncer`.
    """

    def __init__(self, count: int) -> None:
        if not 1 <= count <= 50:
            raise ValueError("between 1 and 50 hosts")
        self.count = count
        self.run_id = ""
        self.subnet: ipaddress.IPv4Network | None = None
        self.gateway = ""  #: the bridge's address: where hosts find the servers
        self.bridge = ""
        self.hosts: list[Host] = []
        self._state: dict[str, Any] = {}
        self._state_path: Path | None = None
        self._servers: list[servers.PrivatePostgres | servers.PgBouncer] = []

    # -- life cycle ----------------------------------------------------------------------

    def __enter__(self) -> HostNetwork:
        reason = can_run()
        if reason:
            raise RuntimeError(f"hosts cannot run here: {reason}")
        sweep_stale()
        try:
            self._allocate()
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _allocate(self) -> None:
        """Pick a run id and a free /24, and record them before anything exists."""
        with _state_lock():
            taken = {p.stem for p in STATE_DIR.glob("*.json")}
            netns = _netns_list()
            while True:
                run_id = secrets.token_hex(2)
                if run_id not in taken and not any(n.endswith(f"-{run_id}") for n in netns):
                    break
            used = _used_networks()
            subnet = next((net for net in SPACE.subnets(new_prefix=24)
                           if not any(net.overlaps(u) for u in used)), None)
            if subnet is None:
                raise RuntimeError(f"no free /24 left in {SPACE}")
            self.run_id, self.subnet = run_id, subnet
            self.gateway = str(subnet.network_address + 1)
            self.bridge = f"tmbr-{run_id}"
            self.hosts = [Host(index=i, hostname=f"tmhost{i}", netns=f"tmhost{i}-{run_id}",
                               address=str(subnet.network_address + 10 + i),
                               outer=f"tmv{run_id}-{i}")
                          for i in range(1, self.count + 1)]
            self._state_path = STATE_DIR / f"{run_id}.json"
            self._state = {
                "owner_pid": os.getpid(), "owner_start": _start_time(os.getpid()),
                "subnet": str(subnet), "bridge": self.bridge,
                "netns": [h.netns for h in self.hosts],
                "links": [h.outer for h in self.hosts] + [f"tmn{run_id}-{h.index}"
                                                         for h in self.hosts],
                "postgres": [], "pgbouncers": [],
            }
            self._save_state()

    def _save_state(self) -> None:
        assert self._state_path is not None
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state))
        tmp.replace(self._state_path)

    def _create(self) -> None:
        assert self.subnet is not None
        # A locally administered, fixed MAC: see "The bridge's MAC address" above.
        mac = "02:7e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4))
        _sh(IP, "link", "add", "name", self.bridge, "address", mac, "type", "bridge")
        _sh(IP, "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _sh(IP, "link", "set", self.bridge, "up")
        for host in self.hosts:
            inner = f"tmn{self.run_id}-{host.index}"
            _sh(IP, "netns", "add", host.netns)
            _sh(IP, "link", "add", host.outer, "type", "veth", "peer", "name", inner)
            _sh(IP, "link", "set", inner, "netns", host.netns)
            _sh(IP, "link", "set", host.outer, "master", self.bridge)
            _sh(IP, "link", "set", host.outer, "up")
            inside = (IP, "-n", host.netns)
            _sh(*inside, "link", "set", inner, "name", "eth0")
            _sh(*inside, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0")
            _sh(*inside, "link", "set", "eth0", "up")
            _sh(*inside, "link", "set", "lo", "up")
        self._check_reachable()

    def _check_reachable(self) -> None:
        """Each host opens a TCP connection to the bridge address (the bridge forwards at
        once, with STP off; this checks it rather than trusting it). bash's /dev/tcp: no
        ping needed."""
        with socket.create_server((self.gateway, 0)) as listener:
            port = listener.getsockname()[1]
            deadline = time.monotonic() + 10
            for host in self.hosts:
                probe = ["bash", "-c", f"exec 3<>/dev/tcp/{self.gateway}/{port}"]
                while self.run(host, probe, check=False, timeout=10).returncode != 0:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{host.hostname} cannot reach {self.gateway}")
                    time.sleep(0.1)

    def close(self) -> None:
        """Tear everything down; safe to call twice, and after a half-made start. The
        hosts' processes go first, so none sees its database vanish and starts retrying."""
        existing = set(_netns_list())
        for host in self.hosts:
            if host.netns in existing:
                _kill_netns_processes(host.netns)
        for server in reversed(self._servers):
            with contextlib.suppress(Exception):
                if isinstance(server, servers.PgBouncer):
                    server.stop()
                else:
                    server.destroy()
        self._servers.clear()
        if self._state:
            with _state_lock():
                _teardown(self._state)
                if self._state_path is not None:
                    self._state_path.unlink(missing_ok=True)
            self._state = {}

    # -- servers on the bridge -----------------------------------------------------------

    def start_postgres(self, *dbnames: str) -> servers.PrivatePostgres:
        """A private PostgreSQL listening on 127.0.0.1 and the bridge, trusting the
        hosts' subnet, with ``dbnames`` created; stopped by :meth:`close`."""
        server = servers.PrivatePostgres(extra_addresses=[self.gateway],
                                         trusted_networks=[str(self.subnet)])
        self._state["postgres"].append(str(server.dir))
        self._save_state()
        self._servers.append(server)
        server.start()
        for name in dbnames:
            server.createdb(name)
        return server

    def start_pgbouncer(self, server: servers.PrivatePostgres, pool_size: int = 20,
                        idle_transaction_timeout: float = 5.0) -> servers.PgBouncer:
        """PgBouncer in transaction mode in front of ``server``, on 127.0.0.1 and the
        bridge; stopped by :meth:`close` (or its own ``stop()``).

        With ``idle_transaction_timeout``, as docs/multiprocessing.md asks of a deployment
        whose hosts may vanish: a host cut inside a transaction otherwise keeps its row
        locks (a job's, the schedule's) until PgBouncer notices it is gone, hours later,
        and every other host's maintenance thread waits on them."""
        bouncer = servers.PgBouncer(server.port, extra_addresses=[self.gateway],
                                    pool_size=pool_size,
                                    idle_transaction_timeout=idle_transaction_timeout)
        self._state["pgbouncers"].append({"pid": bouncer.process.pid, "dir": str(bouncer.dir)})
        self._save_state()
        self._servers.append(bouncer)
        return bouncer

    # -- commands in a host --------------------------------------------------------------

    def command(self, host: Host, argv: Sequence[str]) -> list[str]:
        """``argv`` as run in ``host``: its network namespace, and a UTS namespace named
        after it. Every program in the chain execs the next, so the pid of the process
        started is the pid of ``argv[0]``'s process (signals reach it directly)."""
        return [IP, "netns", "exec", host.netns, UNSHARE, "--uts", "--", "sh", "-c",
                'hostname "$0" && exec "$@"', host.hostname, *argv]

    def run(self, host: Host, argv: Sequence[str], *, check: bool = True,
            timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(host, argv), capture_output=True, text=True,
                              check=check, timeout=timeout, **kwargs)

    def popen(self, host: Host, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(host, argv), text=True, **kwargs)

    def pids(self, host: Host) -> list[int]:
        """Every process in ``host`` right now."""
        return _netns_pids(host.netns)

    def host_named(self, hostname: str) -> Host:
        return next(h for h in self.hosts if h.hostname == hostname)

    # -- the link ------------------------------------------------------------------------

    def cut(self, host: Host, how: CutKind = "partition") -> None:
        """Cut ``host`` off the bridge (see the module's "A cut is silent")."""
        if how == "partition":  # Port state "disabled": the bridge drops its frames.
            _sh(BRIDGE, "link", "set", "dev", host.outer, "state", "0")
        elif how in ("carrier", "unreachable"):
            _sh(IP, "link", "set", host.outer, "down")
            if how == "unreachable":
                _sh(IP, "-n", host.netns, "link", "set", "eth0", "down")
        else:
            raise ValueError(f"unknown cut {how!r}")

    def restore(self, host: Host) -> None:
        """Put ``host`` back on the bridge, whichever way it was cut: both ends up, the
        port forwarding, the host's route to the bridge back."""
        assert self.subnet is not None
        _sh(IP, "-n", host.netns, "link", "set", "eth0", "up")
        _sh(IP, "link", "set", host.outer, "up")
        _sh(BRIDGE, "link", "set", "dev", host.outer, "state", "3")  # forwarding
        # Taking eth0 down removed its connected route; setting it up brings the route of
        # the address back, but check rather than trust it.
        routes = _sh(IP, "-n", host.netns, "-4", "route", "show", "dev", "eth0").stdout
        if str(self.subnet) not in routes:
            _sh(IP, "-n", host.netns, "route", "replace", str(self.subnet), "dev", "eth0")


def worker_env(db_host: str, db_port: int, db_name: str, *,
               settings: str = "tests.project.settings", lease: float | None = None,
               extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a ``django`` command (a worker, an enqueue) of the test project
    against the database at ``db_host:db_port`` (see tests/project/settings.py)."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE=settings,
               TASKMILL_TEST_DB="postgresql", TASKMILL_PG_HOST=db_host,
               TASKMILL_PG_PORT=str(db_port), TASKMILL_PG_NAME=db_name)
    if lease is not None:
        env["TASKMILL_TEST_LEASE"] = str(lease)
    env.update(extra or {})
    return env


class HostWorker:
    """``python -m django taskmill worker ...`` (a supervisor and its children) in a host,
    its output in ``log_dir/<hostname>-<n>.log``."""

    def __init__(self, network: HostNetwork, host: Host, args: Sequence[str],
                 env: Mapping[str, str], log_dir: Path) -> None:
        self.host = host
        log_dir.mkdir(parents=True, exist_ok=True)
        n = len(list(log_dir.glob(f"{host.hostname}-*.log")))
        self.log_path = log_dir / f"{host.hostname}-{n}.log"
        self._log: IO[str] = self.log_path.open("w")
        self._terminated = False
        self.process = network.popen(
            host, [sys.executable, "-m", "django", "taskmill", "worker", *args],
            env=dict(env), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        """Everything it printed so far (the worker writes to the file directly)."""
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM to the supervisor (it stops its children in order), once: a second one
        that lands while Python shuts down (its handlers reset) kills it by the signal."""
        if not self._terminated:
            self._terminated = True
            self.signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int | None:
        """:meth:`terminate`, then SIGKILL to the whole group if it has not exited in
        ``timeout`` seconds. The exit code, or None when it had to be killed."""
        self.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            self._log.close()

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._log.close()


def stop_all(workers: Sequence[HostWorker], timeout: float = 30) -> list[int | None]:
    """Stop several workers at once (SIGTERM to all, then wait for each): their exit
    codes, None for one that had to be killed."""
    for worker in workers:
        worker.terminate()
    return [worker.stop(timeout) for worker in workers]


def query(port: int, dbname: str, sql: str, params: Sequence[Any] | Mapping[str, Any] = (),
          host: str = "127.0.0.1") -> list[tuple[Any, ...]]:
    """Run one statement on the private server from the root namespace (autocommit)."""
    import psycopg

    with psycopg.connect(host=host, port=port, dbname=dbname, user="postgres",
                         autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(sql, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def manage(env: Mapping[str, str], *args: str, timeout: float = 120) -> str:
    """``python -m django ...`` in the root namespace; its stdout (raises if it fails)."""
    done = subprocess.run([sys.executable, "-m", "django", *args], env=dict(env), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"django {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


_SHELL = """
import contextlib, io, json, sys, traceback
import django
django.setup()
print(json.dumps({"ok": True, "out": "ready"}), flush=True)
scope = {}
for line in sys.stdin:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(json.loads(line), scope)
        reply = {"ok": True, "out": out.getvalue()}
    except BaseException:
        reply = {"ok": False, "out": out.getvalue() + traceback.format_exc()}
    sys.__stdout__.write(json.dumps(reply) + "\\n")
    sys.__stdout__.flush()
"""


class DjangoShell:
    """One root-namespace Python process with Django set up, running snippets sent to
    it (what an application server would do: enqueue, read results). Django's start-up
    costs seconds on a busy 2-core machine; paying it once per scenario rather than once
    per enqueue keeps the tests short. Names a snippet defines stay for the next one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _SHELL], env=dict(env), cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self._reply()

    def _reply(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        try:
            reply = json.loads(line)
        except ValueError:
            rest = line + (self.process.stdout.read() if self.process.poll() is not None else "")
            raise RuntimeError(f"the Django shell broke:\n{rest}") from None
        if not reply["ok"]:
            raise RuntimeError(f"the snippet failed:\n{reply['out']}")
        return str(reply["out"])

    def __call__(self, code: str) -> str:
        """Run ``code``; what it printed (raises with the traceback if it raised)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(code) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> DjangoShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DjangoShell", "Host", "HostNetwork", "HostWorker", "can_run", "manage", "query",
           "stop_all", "sweep_stale", "worker_env"]

"""PostgreSQL prepared statements for the worker's hot statements, safe behind poolers.

A claim is planned about as long as it runs. Planned once per session instead, an idle
worker starts a job sooner. Django turns psycopg's prepared statements off (a pooler in
transaction mode hands each transaction another server session, where psycopg's
``_pg3_N`` names may mean another client's statement), so this module prepares at the
SQL level under names that *are* the statement: ``taskmill_<name>_<hash of its text>``.
Whatever session a pooler picks, a statement found under that name is this very one, or
it is missing (SQLSTATE 26000), and then prepared statements are given up for plain ones.

Used only on a worker's own connections (:func:`taskmill.store.private_store`), and not
when the project set ``OPTIONS["prepare_threshold"] = None`` itself.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

#: The parameters of ``claim_ranges`` (postgresql.sql), the window's claims' FROM item.
_RANGES = {"range_queues": "text[]", "top": "smallint[]", "bottom": "smallint[]",
           "turn": "bigint[]", "due": "timestamptz[]"}
#: The statements a worker runs on every round, with the type of each parameter.
#: Not the round's completions (``complete_jobs``): its generic plan starts from the
#: worker's leased rows (the lease index, estimated at one row) and rescans the id arrays
#: for each, 2.5x slower than a fresh plan for 200 jobs, which fetches each id by key.
HOT: dict[str, dict[str, str]] = {
    "claim": {"worker": "text", "limit": "integer", "queues": "text[]"},
    # Every idle wait: planned afresh it took 1.0-1.7 ms, most of it planning.
    "next_wake": {"queues": "text[]"},
    # The same, while a held snapshot has claims start past the jobs claimed last.
    "claim_past_starts": {"worker": "text", "limit": "integer", **_RANGES},
    "next_wake_past_starts": _RANGES,
}
#: Session settings of a worker's own connection, made where the statements are
#: prepared; only such connections run nothing but the store's statements.
#:
#: ``plan_cache_mode``: plan each prepared statement once, for any parameters.
#: PostgreSQL's default replans a claim on every run (its plan for a given queue list
#: looks cheaper than the generic one), which is most of what preparing saves. The one
#: plan is also the same whatever the statistics say (none yet, after a large bulk
#: enqueue): an index scan in claim order, where a replan would switch to sorting the
#: whole backlog.
#:
#: ``jit``: a generic plan cannot know the LIMIT, so it assumes a tenth of the rows; once
#: jobs wait anywhere in the table (another queue's backlog will do), the claim's
#: estimate passes ``jit_above_cost`` and PostgreSQL compiles it on every execution:
#: 30-60 ms for a claim that runs in 0.8 ms (50,000 jobs waiting on a queue the worker
#: does not serve; ``bench/hotpath.py``). JIT pays off for long analytic queries, never
#: for a claim.
SESSION_SETTINGS = ("SET plan_cache_mode = force_generic_plan", "SET jit = off")
SESSION_RESETS = ("RESET plan_cache_mode", "RESET jit")
#: The prepared statement is not in this session: it moved (a pooler) or was dropped.
MISSING = "26000"
#: A statement of that name exists already: by its name, the same statement.
EXISTS = "42P05"

_PARAM = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True)
class Prepared:
    """One statement as ``PREPARE`` and ``EXECUTE`` (client-side parameters) run it."""

    name: str
    prepare: str
    execute: str


@functools.cache
def prepared_form(name: str, sql: str) -> Prepared:
    """``PREPARE`` and ``EXECUTE`` of statement ``name`` (built once per process: a store
    is made for every enqueue)."""
    types = HOT[name]
    order = list(dict.fromkeys(_PARAM.findall(sql)))
    if set(order) != set(types):
        raise ValueError(f"Statement {name!r} takes {order}, typed as {sorted(types)}.")
    digest = hashlib.sha1(sql.encode()).hexdigest()[:12]
    statement = f"taskmill_{name}_{digest}"
    body = _PARAM.sub(lambda m: f"${order.index(m.group(1)) + 1}", sql).replace("%%", "%")
    signature = ", ".join(types[param] for param in order)
    arguments = ", ".join(f"%({param})s" for param in order)
    return Prepared(statement, f"PREPARE {statement} ({signature}) AS {body}",
                    f"EXECUTE {statement}({arguments})")

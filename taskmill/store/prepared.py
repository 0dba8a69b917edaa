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

#: The statements a worker runs on every round, with the type of each parameter.
#: Not the round's completions (``complete_jobs``): its generic plan starts from the
#: worker's leased rows (the lease index, estimated at one row) and rescans the id arrays
#: for each, 2.5x slower than a fresh plan for 200 jobs, which fetches each id by key.
HOT: dict[str, dict[str, str]] = {
    "claim": {"worker": "text", "limit": "integer", "queues": "text[]"},
}
#: Plan each prepared statement once, for any parameters: PostgreSQL's default replans a
#: claim on every run (its plan for a given queue list looks cheaper than the generic
#: one), which is most of what preparing saves. The one plan is also the same whatever
#: the statistics say (none yet, after a large bulk enqueue): an index scan in claim
#: order, where a replan would switch to sorting the whole backlog. Session-wide, so only
#: on connections that run nothing but the store's statements.
GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"
CUSTOM_PLANS = "RESET plan_cache_mode"
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

"""The store's SQL: named, annotated statements, one file per database.

``common.sql`` holds the statements every database runs alike; ``postgresql.sql``,
``mysql.sql`` and ``sqlite.sql`` hold what differs (a vendor file may override a common
statement by name). Each statement is headed by its name, a line of purpose and the
state it expects::

    -- name: complete_job
    -- Record a successful attempt and its return value.
    -- expects: RUNNING, leased to %(worker)s for attempt %(attempt)s
    UPDATE taskmill_job SET ...

The ``expects`` line is the guard the statement's ``WHERE`` carries: a transition that
finds the job in another state, or leased to someone else, changes nothing.

Parameters are named (``%(worker)s``); a literal ``%`` is written ``%%``. ``${...}`` is
replaced when the file is loaded, by what each database spells its own way: the
database's clock (``${now}``, ``${now_plus:delay}``, ``${seconds_until:expr}``), list
parameters (``${in:ids}``: "is one of the list ``ids``"), the row lock of a claim
(``${skip_locked}``), a column no index may serve (``${unindexed:status}``), the
columns a claim returns (``${claim_columns}``), or the SQL of another statement (a shared
fragment such as ``${room_for_key}``). ``${statement|a=b,c=d}`` is that statement with
the fragments ``a`` and ``c`` it uses read as ``b`` and ``d``: one statement's shape for
two sets of rows (MySQL's ``next_wake_in_range``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from ..rows import CLAIM_COLUMNS

__all__ = ["Statement", "statements"]

_HEADER = re.compile(r"^-- name: (?P<name>\w+)[ \t]*$", re.MULTILINE)
_TOKEN = re.compile(r"\$\{(?P<token>\w+(?::[^}]+|\|[\w=,]+)?)\}")

#: How each database says "column is one of the values of list parameter {0}"; the
#: store passes the list as each expects (an array, a tuple, JSON text).
_IS_ONE_OF = {
    "postgresql": "= ANY(%({0})s)",
    "mysql": "IN %({0})s",
    "sqlite": "IN (SELECT value FROM json_each(%({0})s))",
}
#: Words each database spells its own way. ``now``: the database's clock, the only one
#: the store compares times with (Django stores UTC; SQLite's text keeps milliseconds).
#: ``skip_locked``: lock the rows a claim selects, passing over those another claim holds
#: (SQLite has one writer at a time: nothing to pass over).
_WORDS = {
    "postgresql": {"now": "statement_timestamp()", "skip_locked": "FOR UPDATE SKIP LOCKED"},
    "mysql": {"now": "UTC_TIMESTAMP(6)", "skip_locked": "FOR UPDATE SKIP LOCKED"},
    "sqlite": {"now": "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now')", "skip_locked": ""},
}
#: ``now_plus:p`` / ``now_minus:p``: the database's clock moved by the seconds in
#: parameter ``p``; ``seconds_until:expr``: seconds from now until a time, by that clock.
#: ``unindexed:column``: the column as an expression no index can serve, for statements
#: that find their jobs by id. PostgreSQL: while a snapshot is held, a partial index of
#: RUNNING jobs keeps an entry for every job run since, and the planner, which counts
#: live rows only, takes a scan of it as free (3.6 ms a round after 30,000 jobs, against
#: 0.25 by id). The others have no partial indexes, and their planners count entries.
_FUNCTIONS = {
    "postgresql": {
        "now_plus": "(statement_timestamp() + make_interval(secs => %({0})s))",
        "now_minus": "(statement_timestamp() - make_interval(secs => %({0})s))",
        "seconds_until": "EXTRACT(EPOCH FROM ({0}) - statement_timestamp())",
        "unindexed": "({0} || '')",
    },
    "mysql": {
        "now_plus": "(UTC_TIMESTAMP(6) + INTERVAL ROUND(%({0})s * 1000000) MICROSECOND)",
        "now_minus": "(UTC_TIMESTAMP(6) - INTERVAL ROUND(%({0})s * 1000000) MICROSECOND)",
        "seconds_until": "(TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), {0}) / 1000000)",
        "unindexed": "{0}",
    },
    "sqlite": {
        "now_plus": "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', "
                    "printf('%%+.6f seconds', %({0})s))",
        "now_minus": "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', "
                     "printf('%%+.6f seconds', -(%({0})s)))",
        "seconds_until": "((julianday({0}) - julianday('now')) * 86400.0)",
        "unindexed": "{0}",
    },
}


@dataclass(frozen=True, slots=True)
class Statement:
    name: str
    purpose: str
    expects: str
    sql: str


def _parse(text: str, source: str) -> dict[str, Statement]:
    found: dict[str, Statement] = {}
    heads = list(_HEADER.finditer(text))
    for head, following in zip(heads, [*heads[1:], None], strict=True):
        body = text[head.end():following.start() if following else len(text)]
        lines = body.strip("\n").splitlines()
        notes = [line[2:].strip() for line in lines if line.startswith("--")]
        sql = "\n".join(line for line in lines if not line.startswith("--")).strip()
        expects = [note.removeprefix("expects:").strip() for note in notes
                   if note.startswith("expects:")]
        purpose = " ".join(note for note in notes if note and not note.startswith("expects:"))
        name = head["name"]
        if not sql or not purpose or len(expects) != 1 or name in found:
            raise ValueError(f"{source}: statement {name!r} needs SQL, a line of purpose and "
                             "one 'expects:' line, and a name of its own.")
        found[name] = Statement(name, purpose, expects[0], sql.rstrip(";").rstrip())
    return found


def _expand(sql: str, vendor: str, known: dict[str, Statement], depth: int = 0) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match["token"]
        name, _, argument = token.partition(":")
        if name == "in":
            return _IS_ONE_OF[vendor].format(argument)
        if name in _FUNCTIONS[vendor]:
            return _FUNCTIONS[vendor][name].format(argument)
        if token in _WORDS[vendor]:
            return _WORDS[vendor][token]
        if token == "claim_columns":
            return ", ".join(CLAIM_COLUMNS)
        statement, _, overrides = token.partition("|")
        if overrides and depth < 6:  # ${statement|a=b,c=d}
            read_as = dict(pair.split("=", 1) for pair in overrides.split(","))
            if statement in known and read_as.keys() | read_as.values() <= known.keys():
                return _expand(known[statement].sql, vendor,
                               {**known, **{a: known[b] for a, b in read_as.items()}},
                               depth + 1)
        if token in known and depth < 6:
            return _expand(known[token].sql, vendor, known, depth + 1)
        raise ValueError(f"{vendor}: unknown ${{{token}}} in the store's SQL.")

    return _TOKEN.sub(replace, sql)


@cache
def statements(vendor: str) -> dict[str, str]:
    """The SQL of every statement this vendor runs, by name, ready to execute."""
    return {name: statement.sql for name, statement in annotated(vendor).items()}


@cache
def annotated(vendor: str) -> dict[str, Statement]:
    """Every statement with its purpose and guard: the common ones, then the vendor's."""
    folder = files(__name__)
    merged = _parse(folder.joinpath("common.sql").read_text(), "common.sql")
    merged.update(_parse(folder.joinpath(f"{vendor}.sql").read_text(), f"{vendor}.sql"))
    return {name: Statement(s.name, s.purpose, s.expects, _expand(s.sql, vendor, merged))
            for name, s in merged.items()}

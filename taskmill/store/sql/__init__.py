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

Parameters are named (``%(worker)s``); a literal ``%`` is written ``%%``. ``${name}``
is replaced when the file is loaded: ``${in:ids}`` by "is one of the list parameter
``ids``" in this database's words, ``${claim_columns}`` by the columns a claim returns, ``${skip_locked}`` by the row
lock of a claim,
and the name of another statement by its SQL (a shared fragment such as
``${room_for_key}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from ..rows import CLAIM_COLUMNS

__all__ = ["Statement", "statements"]

_HEADER = re.compile(r"^-- name: (?P<name>\w+)[ \t]*$", re.MULTILINE)
_TOKEN = re.compile(r"\$\{(?P<token>[\w:]+)\}")

#: How each database says "column is one of the values of list parameter {0}"; the
#: store passes the list as each expects (an array, a tuple, JSON text).
_IS_ONE_OF = {
    "postgresql": "= ANY(%({0})s)",
    "mysql": "IN %({0})s",
    "sqlite": "IN (SELECT value FROM json_each(%({0})s))",
}
#: Lock the rows a claim selects, passing over those another claim holds (SQLite has
#: one writer at a time: nothing to pass over).
_SKIP_LOCKED = {"postgresql": "FOR UPDATE SKIP LOCKED", "mysql": "FOR UPDATE SKIP LOCKED",
                "sqlite": ""}


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
        if token.startswith("in:"):
            return _IS_ONE_OF[vendor].format(token[3:])
        if token == "claim_columns":
            return ", ".join(CLAIM_COLUMNS)
        if token == "skip_locked":
            return _SKIP_LOCKED[vendor]
        if token in known and depth < 3:
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

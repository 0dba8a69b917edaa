"""Raw SQL steps of migrations, per database vendor (not a migration: Django's loader
skips modules whose name starts with an underscore)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run(statements: dict[str, list[str]]) -> Callable[[Any, Any], None]:
    """A ``RunPython`` function that executes the statements of the connection's vendor
    (none for a vendor not named)."""

    def apply(apps: Any, schema_editor: Any) -> None:
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return apply

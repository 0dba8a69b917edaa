"""Raw SQL steps of migrations, per database vendor (not a migration: Django's loader
skips modules whose name starts with an underscore)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import migrations, models


def run(statements: dict[str, list[str]]) -> Callable[[Any, Any], None]:
    """A ``RunPython`` function that executes the statements of the connection's vendor
    (none for a vendor not named)."""

    def apply(apps: Any, schema_editor: Any) -> None:
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return apply


def add_not_null_column(name: str, field: Callable[[], models.Field[Any, Any]],
                        sqlite_definition: str) -> migrations.SeparateDatabaseAndState:
    """``AddField`` of ``taskmill.Job.<name>``, except on SQLite, where the column is added
    with plain ``ALTER TABLE ... ADD COLUMN <sqlite_definition>``.

    Django's schema editor adds a NOT NULL column with a default on SQLite by rebuilding
    the table, and a rebuild drops what earlier migrations made in SQL: the partial
    indexes, the generated column's index, the triggers (0002, 0007, 0009, 0010).
    """

    def job_and_field(apps: Any) -> tuple[Any, models.Field[Any, Any]]:
        job = apps.get_model("taskmill", "Job")
        made = field()
        made.set_attributes_from_name(name)
        made.model = job
        return job, made

    def add(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "sqlite":
            schema_editor.execute(
                f"ALTER TABLE taskmill_job ADD COLUMN {name} {sqlite_definition}")
        else:
            schema_editor.add_field(*job_and_field(apps))

    def drop(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "sqlite":
            schema_editor.execute(f"ALTER TABLE taskmill_job DROP COLUMN {name}")
        else:
            schema_editor.remove_field(*job_and_field(apps))

    return migrations.SeparateDatabaseAndState(
        state_operations=[migrations.AddField(model_name="job", name=name, field=field())],
        database_operations=[migrations.RunPython(add, drop, elidable=False)],
    )

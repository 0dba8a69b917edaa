"""The rules of docs/architecture.md that a reader relies on, checked on the source."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from taskmill.store.sql import _expand, annotated

PACKAGE = Path(__file__).resolve().parent.parent / "taskmill"

#: Imports inside functions, each where Django's app loading requires it.
LOCAL_IMPORTS_ALLOWED = {
    ("apps.py", "ready"),  # checks import models: only once every app is registered
    ("testing/pytest_plugin.py", "taskmill_run_pending"),  # loaded before django.setup()
    ("testing/pytest_plugin.py", "taskmill_worker"),
}


def test_imports_point_down_the_layers():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is installed in the Django 5.2 environment")
    done = subprocess.run([str(lint), "--no-logo", "--no-cache"], cwd=PACKAGE.parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_function_local_imports_only_where_app_loading_requires_them():
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found.add((path.relative_to(PACKAGE).as_posix(), function.name))
    assert found == LOCAL_IMPORTS_ALLOWED


@pytest.mark.parametrize("vendor", ["postgresql", "mysql", "sqlite"])
def test_every_job_transition_names_the_state_it_expects(vendor):
    """Each statement has a purpose and a guard; each write to a job checks its state."""
    statements = annotated(vendor)
    assert {"insert_job", "complete_job", "fail_job", "requeue_orphan"} <= set(statements)
    for statement in statements.values():
        assert statement.purpose and statement.expects, statement.name
        sql = " ".join(statement.sql.split())
        writes_jobs = re.match(r"(UPDATE|DELETE FROM) taskmill_job\b", sql)
        if writes_jobs:
            where = sql.split(" WHERE ", 1)[1]
            assert re.search(r"\bstatus\b", where), f"{vendor}: {statement.name} has no guard"


def test_no_module_is_longer_than_one_reader_can_hold():
    lengths = {path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines())
               for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts}
    assert {name: n for name, n in lengths.items() if n > 400} == {}


def test_a_statement_read_with_other_fragments_is_the_same_shape_over_other_rows():
    """``${statement|a=b}``: MySQL's look at a range of the claim index is the look at a
    queue, over the range's rows (one shape, written once); an unknown name is refused."""
    mysql = annotated("mysql")
    over_a_queue, over_a_range = mysql["next_wake_in_queue"].sql, mysql["next_wake_in_range"].sql
    assert "${" not in over_a_range and "j.priority <= %(top)s" in over_a_range
    assert (over_a_range.replace(mysql["in_range"].sql, mysql["in_queue"].sql)
            # The due jobs' FROM; the deferred ones' (deferred_jobs_in_line) is the same.
            .replace(mysql["jobs_in_range"].sql, mysql["ready_jobs"].sql, 1)) == over_a_queue
    with pytest.raises(ValueError, match="unknown"):
        _expand("${next_wake_in_queue|in_queue=no_such_fragment}", "mysql", mysql)

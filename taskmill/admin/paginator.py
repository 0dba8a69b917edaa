"""Paging that never counts a whole job table."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property


class CappedPaginator(Paginator):
    """A paginator that never counts more than ``cap`` rows.

    Up to ``cap`` the count is exact (``SELECT COUNT(*) FROM (... LIMIT cap + 1)``,
    which reads at most ``cap + 1`` rows whatever the filter). Beyond it, an unfiltered
    list uses the planner's row estimate (PostgreSQL, MySQL) and a filtered one shows "more than ``cap``";
    ``approximate`` tells the template which.
    """

    cap = 10_000
    #: True once ``count`` is an estimate (or the cap) rather than an exact count.
    approximate = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        assert isinstance(queryset, QuerySet)  # The admin pages querysets.
        capped: int = queryset.order_by()[: self.cap + 1].count()
        if capped <= self.cap:
            return capped
        self.approximate = True
        estimate = _estimated_rows(queryset) if not queryset.query.where else None
        return max(estimate or 0, self.cap)


def _estimated_rows(queryset: QuerySet[Any]) -> int | None:
    """The planner's idea of the table's size: instant, and good enough for paging."""
    connection = connections[queryset.db]
    table = queryset.model._meta.db_table
    if connection.vendor == "postgresql":
        sql = "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass"
        params = [connection.ops.quote_name(table)]
    elif connection.vendor == "mysql":
        sql = ("SELECT table_rows FROM information_schema.tables "
               "WHERE table_schema = DATABASE() AND table_name = %s")
        params = [table]
    else:
        return None
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] and row[0] > 0 else None

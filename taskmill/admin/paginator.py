"""Paging that never counts a whole job table."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.utils.functional import cached_property

from ..reporting import estimated_rows


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
        table = queryset.model._meta.db_table
        estimate = estimated_rows(queryset.db, table) if not queryset.query.where else None
        return max(estimate or 0, self.cap)


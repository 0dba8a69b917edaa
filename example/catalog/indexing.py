"""The work of a rebuild: index a range of products. Runs in a child process.

``index_range`` is what ``parallel_map`` calls in each child: it reads its products and
writes their entries on the child's own database connection, and returns what it did.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from .models import IndexEntry, Product

WORD = re.compile(r"[a-z0-9]+")


class BadProduct(ValueError):
    """A product the index cannot take (the demo's "make it fail" switch)."""


@dataclass(frozen=True)
class Chunk:
    """Products ``first_pk..last_pk`` (inclusive), and how the demo wants them handled."""

    first_pk: int
    last_pk: int
    slowdown: float = 0.0  # seconds to linger, so a person can watch the progress bar
    fail_pk: int | None = None  # raise on this product, to show a failed rebuild


def terms_of(product: Product) -> list[str]:
    """The distinct lower-case words of a product's name and description, sorted."""
    return sorted(set(WORD.findall(f"{product.name} {product.description}".lower())))


def index_range(chunk: Chunk) -> tuple[int, int]:
    """Index one range of products; returns (products indexed, this process's pid)."""
    products = list(Product.objects.filter(pk__range=(chunk.first_pk, chunk.last_pk)))
    now = timezone.now()
    entries = []
    for product in products:
        if product.pk == chunk.fail_pk:
            raise BadProduct(f"Product #{product.pk} ({product.name!r}) cannot be indexed: "
                             "simulated bad data.")
        terms = terms_of(product)
        entries.append(IndexEntry(product=product, terms=" ".join(terms),
                                  word_count=len(terms), built_by_pid=os.getpid(), built_at=now))
    with transaction.atomic():
        IndexEntry.objects.filter(product__gte=chunk.first_pk,
                                  product__lte=chunk.last_pk).delete()
        IndexEntry.objects.bulk_create(entries)
    if chunk.slowdown:
        time.sleep(chunk.slowdown)
    return len(entries), os.getpid()

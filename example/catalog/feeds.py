"""Supplier feeds: the price lists suppliers send, as CSV. One of them has a bad row.

A real shop would download these; the demo keeps two in memory so that importing one
succeeds and importing the other fails the way bad data does, naming the culprit line.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

FEEDS = {
    "northwind": (
        "Northwind Supplies",
        "name,price,description\n"
        "Northwind enamel kettle,34.90,\"Enamel, 1.5 l, two-year warranty.\"\n"
        "Northwind reading lamp,48.00,\"Brass, dimmable, ships in two days.\"\n"
        "Northwind camp stool,19.50,\"Folding, fits in a drawer.\"\n",
    ),
    "borealis": (
        "Borealis Outdoor",
        "name,price,description\n"
        "Borealis trail tent,189.00,\"Two people, tested outdoors.\"\n"
        "Borealis sleeping mat,42.50,\"Self-inflating, recycled packaging.\"\n"
        "Borealis camp stove,12.9O,\"Compact, easy to clean.\"\n"
        "Borealis head torch,24.00,\"Waterproof, replacement parts available.\"\n",
    ),
}


class BadFeedRow(ValueError):
    """A row of a supplier feed that cannot be imported."""


@dataclass(frozen=True)
class FeedRow:
    name: str
    price_cents: int
    description: str


def supplier_name(supplier: str) -> str:
    return FEEDS[supplier][0]


def parse_feed(supplier: str) -> list[FeedRow]:
    """Every row of the supplier's feed, or :class:`BadFeedRow` naming the first bad one."""
    name, text = FEEDS[supplier]
    rows = []
    reader = csv.DictReader(io.StringIO(text), restkey="extra")
    for row in reader:
        line = reader.line_num
        if "extra" in row or None in row.values():
            raise BadFeedRow(f"{name} feed, line {line}: expected {len(reader.fieldnames)} "
                             "fields (name, price, description)")
        try:
            price = Decimal(row["price"])
        except InvalidOperation:
            raise BadFeedRow(f"{name} feed, line {line}: price {row['price']!r} is not a "
                             "number") from None
        rows.append(FeedRow(row["name"], int(price * 100), row["description"]))
    return rows

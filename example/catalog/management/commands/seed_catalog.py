"""``manage.py seed_catalog [--products N]``: fill the catalog with made-up products."""

from __future__ import annotations

import random
from typing import Any

from django.core.management.base import BaseCommand

from catalog.models import CATEGORIES, Product

ADJECTIVES = ["compact", "sturdy", "quiet", "bright", "folding", "wireless", "vintage",
              "waterproof", "heated", "modular", "portable", "organic", "ceramic", "steel"]
PHRASES = ["ships in two days", "made in small batches", "two-year warranty",
           "fits in a drawer", "easy to clean", "replacement parts available",
           "recycled packaging", "designed in Lyon", "tested outdoors"]


class Command(BaseCommand):
    help = "Create made-up products until the catalog has --products of them."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--products", type=int, default=3000)

    def handle(self, *args: Any, **options: Any) -> None:
        wanted = options["products"]
        have = Product.objects.count()
        rng = random.Random(have)
        new = []
        for number in range(have + 1, wanted + 1):
            name = f"{rng.choice(ADJECTIVES).title()} {rng.choice(CATEGORIES)} #{number}"
            description = ", ".join(rng.sample(PHRASES, 3)) + "."
            new.append(Product(name=name, description=description,
                               price_cents=rng.randrange(500, 50000)))
        Product.objects.bulk_create(new, batch_size=500)
        self.stdout.write(f"The catalog has {Product.objects.count()} products.")

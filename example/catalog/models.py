"""A product catalog and the search index rebuilt from it in the background."""

from django.db import models
from django.db.models import QuerySet

#: The kinds of product the catalog sells: its categories. A product's name says its
#: kind ("Sturdy kettle #12"), so the demo needs no category column.
CATEGORIES = ["kettle", "lamp", "backpack", "chair", "speaker", "notebook", "tent", "grinder",
              "bicycle bell", "desk", "blanket", "thermos", "toolbox", "planter"]


class Product(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField()
    price_cents = models.PositiveIntegerField()

    def __str__(self) -> str:
        return self.name


def products_in(category: str) -> QuerySet[Product]:
    """The products of one of :data:`CATEGORIES`."""
    return Product.objects.filter(name__contains=f" {category} #")


class IndexEntry(models.Model):
    """One product's search terms, written by whichever process indexed it."""

    product = models.OneToOneField(Product, on_delete=models.CASCADE, primary_key=True,
                                   related_name="index_entry")
    terms = models.TextField()
    word_count = models.PositiveIntegerField()
    #: The operating-system process that wrote the entry: shows the work was shared.
    built_by_pid = models.PositiveIntegerField()
    built_at = models.DateTimeField()


class Rebuild(models.Model):
    """A rebuild someone asked for; its state lives in the taskmill job (``result_id``)."""

    result_id = models.CharField(max_length=64, unique=True)
    requested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-requested_at"]

"""The catalog in the admin, next to taskmill's jobs, batches and workers."""

from django.contrib import admin

from .models import Product


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "price_cents")
    search_fields = ("name",)

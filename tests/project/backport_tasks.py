"""A task defined with the backport's decorator, as apps like Wagtail still do on Django 6."""

from django_tasks import task


@task()
def multiply(a: int, b: int) -> int:
    return a * b

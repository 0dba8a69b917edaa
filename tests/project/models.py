"""Tables the test tasks write to, so tests can assert on real rows."""

from django.db import models


class Execution(models.Model):
    """One row per execution of a test task: who ran it, and when."""

    label = models.CharField(max_length=200)
    pid = models.IntegerField()
    started = models.FloatField(null=True)
    finished = models.FloatField(null=True)
    value = models.JSONField(null=True)

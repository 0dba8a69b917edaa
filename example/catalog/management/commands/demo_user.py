"""``manage.py demo_user``: the demo's staff login, ``demo`` / ``demo``. Demo only.

``scripts/demo`` runs it so that a newcomer can open the admin and the dashboard at once.
It refuses to run with ``DEBUG`` off: a well-known password never belongs on a real site.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

USERNAME = PASSWORD = "demo"


class Command(BaseCommand):
    help = "Create (or reset) the demo's superuser demo/demo. For the demo only."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("Refusing to create a demo login with a known password on a "
                               "site with DEBUG off.")
        user, _ = get_user_model().objects.get_or_create(username=USERNAME)
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(PASSWORD)
        user.save()
        self.stdout.write(f"Demo login: {USERNAME} / {PASSWORD} "
                          "(for this demo only: never use this in production)")

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create an admin user if there is no superuser yet, and print its password once."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username="admin", email="", password=password)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created the admin user 'admin' with password {password}\n"
                "It is shown only this once: change it in the admin if you like."
            )
        )

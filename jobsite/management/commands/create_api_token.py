from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from jobsite.accounts import api_token_for


class Command(BaseCommand):
    help = "Print USER's API token (creating it if needed); send it as `Authorization: Bearer <token>`."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username: str, **options):
        try:
            self.stdout.write(api_token_for(username))
        except get_user_model().DoesNotExist:
            raise CommandError(f"no such user: {username!r}") from None

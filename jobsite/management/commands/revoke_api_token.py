from django.core.management.base import BaseCommand, CommandError

from jobsite.tokens import TokenError, revoke_tokens


class Command(BaseCommand):
    help = "Revoke an API token (give the token or its prefix as listed in the admin), or all of a user's tokens."

    def add_arguments(self, parser):
        parser.add_argument("token", nargs="?", help="the token, or its prefix")
        parser.add_argument("--user", help="revoke every live token of this user")

    def handle(self, *args, token: str | None, user: str | None, **options):
        try:
            revoked = revoke_tokens(token=token, username=user)
        except TokenError as error:
            raise CommandError(str(error)) from None
        if not revoked:
            raise CommandError("no live token matches")
        self.stdout.write(f"revoked {revoked} token{'s' if revoked != 1 else ''}")

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from jobsite.tokens import ALL_SCOPES, TokenError, issue_token


class Command(BaseCommand):
    help = (
        "Create an API token for USER and print it (once: only its hash is kept). Send it as "
        "`Authorization: Bearer <token>`. The token is the last line printed."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--scopes",
            nargs="+",
            metavar="SCOPE",
            help=f"any of {', '.join(ALL_SCOPES)} (default: every scope the user's role allows: "
            "all for staff, all but control for other users)",
        )
        parser.add_argument("--expires-in", type=int, metavar="DAYS", help="days until it expires (default: never)")

    def handle(self, *args, username: str, scopes: list[str] | None, expires_in: int | None, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no such user: {username!r} (create one with `manage.py create_user`)")
        if scopes is not None:
            scopes = [scope for value in scopes for scope in value.split(",") if scope]
        try:
            issued = issue_token(user, scopes, expires_in)
        except TokenError as error:
            raise CommandError(str(error)) from None
        expiry = issued.token.expires_at.isoformat() if issued.token.expires_at else "never"
        self.stderr.write(
            f"token {issued.token.prefix}… for {username}: scopes {' '.join(issued.token.scopes)}; "
            f"expires {expiry}. It is shown only now."
        )
        self.stdout.write(issued.plaintext)

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from jobsite.accounts import AccountError, create_account
from jobsite.tokens import ALL_SCOPES, TokenError, issue_token


class Command(BaseCommand):
    help = (
        "Create a client user (not staff: sees only its own jobs; the default) or, with --operator, a staff "
        "user without superuser who may operate every job and use the dashboard. No password: a client uses "
        "tokens (--token prints one, the last line); give an operator one with `manage.py changepassword`."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--operator", action="store_true", help="staff without superuser, for operators")
        parser.add_argument("--token", action="store_true", help="also create an API token and print it")
        parser.add_argument(
            "--scopes",
            nargs="+",
            metavar="SCOPE",
            help=f"the token's scopes, any of {', '.join(ALL_SCOPES)} (default: all the role allows)",
        )
        parser.add_argument("--expires-in", type=int, metavar="DAYS", help="days until the token expires")

    def handle(
        self,
        *args,
        username: str,
        operator: bool,
        token: bool,
        scopes: list[str] | None,
        expires_in: int | None,
        **options,
    ):
        if (scopes or expires_in) and not token:
            raise CommandError("--scopes and --expires-in describe the token: add --token")
        if scopes is not None:
            scopes = [scope for value in scopes for scope in value.split(",") if scope]
        try:
            with transaction.atomic():  # a token refused (a scope the role lacks) leaves no user behind
                user = create_account(username, operator=operator)
                issued = issue_token(user, scopes, expires_in) if token else None
        except (AccountError, TokenError) as error:
            raise CommandError(str(error)) from None
        role = "operator (staff, not superuser)" if operator else "client (not staff)"
        self.stderr.write(
            f"user {username} created: {role}, no password"
            + ("; set one for the admin with `manage.py changepassword " + username + "`" if operator else "")
        )
        if issued is not None:
            expiry = issued.token.expires_at.isoformat() if issued.token.expires_at else "never"
            self.stderr.write(
                f"token {issued.token.prefix}… for {username}: scopes {' '.join(issued.token.scopes)}; "
                f"expires {expiry}. It is shown only now."
            )
            self.stdout.write(issued.plaintext)

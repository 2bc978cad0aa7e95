"""What the caller of a write may change: passed into every save of `storage`, so that no path can skip it.

SearchParameters change what every later write indexes and start reindex jobs, so only callers that may manage
them may write one: the REST API, transaction bundles, `$import` and `$bulk-submit` all hand the storage layer
the caller's `WriteAuthority`, and `storage` refuses a SearchParameter write without it (403, or an error line
in an import). The shell's commands (`load_fhir`, `generate_fhir`) are the server's own: `SERVER`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fhirstore.exceptions import Forbidden

GUARDED_TYPES = frozenset({"SearchParameter"})  # resource types only a parameter manager may write
MANAGE_PERMISSION = "fhirstore.manage_search_parameters"


@dataclass(frozen=True)
class WriteAuthority:
    """The caller's standing, decided once at the edge (a request, an import's owner) and checked in storage."""

    manages_search_parameters: bool
    caller: str = ""  # named in the refusal, for the error line of an import

    def may_write(self, resource_type: str) -> bool:
        return resource_type not in GUARDED_TYPES or self.manages_search_parameters

    def check(self, resource_types: Iterable[str]) -> None:
        """Forbidden (403) when one of these types is not the caller's to write."""
        refused = sorted({resource_type for resource_type in resource_types if not self.may_write(resource_type)})
        if refused:
            raise Forbidden(f"Creating, changing or deleting a {', '.join(refused)} is for operators (a staff user's "
                            f"token with the 'control' scope) or users with the permission {MANAGE_PERMISSION}"
                            + (f"; {self.caller} is neither" if self.caller else ""))


SERVER = WriteAuthority(manages_search_parameters=True, caller="the server")  # shell commands, migrations, tests
CLIENT = WriteAuthority(manages_search_parameters=False)  # any caller without the permission

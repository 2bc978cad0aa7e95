"""What the caller of a write may change: passed into every save of `storage`, so that no path can skip it.

SearchParameters change what every later write indexes and start reindex jobs, so only callers that may manage
them may write one: the REST API, transaction bundles, `$import` and `$bulk-submit` all hand the storage layer
the caller's `WriteAuthority`, and `storage` refuses a SearchParameter write without it (403, or an error line
in an import). The shell's commands (`load_fhir`, `generate_fhir`) are the server's own: `SERVER`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fhirstore.exceptions import Forbidden

GUARDED_TYPES = frozenset({"SearchParameter"})  # resource types only a parameter manager may write
MANAGE_PERMISSION = "fhirstore.manage_search_parameters"


@dataclass(frozen=True)
class WriteAuthority:
    """The caller's standing, decided at the edge (a request, an import's owner) and checked in storage.

    `manages_search_parameters` may be a function, asked (once) only when a guarded type is written: a
    request's permission lookup costs two queries, which a write of a Patient need not pay."""

    manages_search_parameters: bool | Callable[[], bool]
    caller: str = ""  # named in the refusal, for the error line of an import
    _decided: list[bool] = field(default_factory=list, compare=False, repr=False)

    def manages(self) -> bool:
        """Whether the caller may write SearchParameters (the function asked at most once)."""
        if not self._decided:
            decide = self.manages_search_parameters
            self._decided.append(bool(decide() if callable(decide) else decide))
        return self._decided[0]

    def may_write(self, resource_type: str) -> bool:
        return resource_type not in GUARDED_TYPES or self.manages()

    def check(self, resource_types: Iterable[str]) -> None:
        """Forbidden (403) when one of these types is not the caller's to write."""
        refused = sorted({resource_type for resource_type in resource_types if not self.may_write(resource_type)})
        if refused:
            raise Forbidden(
                f"Creating, changing or deleting a {', '.join(refused)} is for operators (a staff user's "
                f"token with the 'control' scope) or users with the permission {MANAGE_PERMISSION}"
                + (f"; {self.caller} is neither" if self.caller else "")
            )


SERVER = WriteAuthority(manages_search_parameters=True, caller="the server")  # shell commands, migrations, tests
CLIENT = WriteAuthority(manages_search_parameters=False)  # any caller without the permission

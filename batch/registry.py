"""The job definitions this process can run, registered at start-up by the apps that own them."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from batch.exceptions import DuplicateJobDefinition, UnknownJobDefinition

if TYPE_CHECKING:  # registering needs no more than the object; batch.api's register() imports this module
    from batch.api import JobDefinition


class JobDefinitionRegistry:
    def __init__(self) -> None:
        self._definitions: dict[tuple[str, int], JobDefinition] = {}
        self._lock = threading.Lock()

    def register(self, definition: JobDefinition) -> None:
        key = (definition.id, definition.version)
        with self._lock:
            if key in self._definitions:
                raise DuplicateJobDefinition(
                    f"job definition {definition.id!r} version {definition.version} is registered twice"
                )
            self._definitions[key] = definition

    def unregister(self, definition_id: str, version: int) -> None:
        """Forget a definition (tests register throw-away jobs)."""
        with self._lock:
            self._definitions.pop((definition_id, version), None)

    def get(self, definition_id: str, version: int) -> JobDefinition:
        try:
            return self._definitions[(definition_id, version)]
        except KeyError:
            raise UnknownJobDefinition(f"unknown job definition {definition_id!r} version {version}") from None

    def latest(self, definition_id: str) -> JobDefinition:
        """The highest version: what a new job of this id runs."""
        versions = [version for (known, version) in self._definitions if known == definition_id]
        if not versions:
            known = ", ".join(self.ids()) or "none (is the app that defines it installed, or a setting off?)"
            raise UnknownJobDefinition(f"unknown job definition {definition_id!r}; known: {known}")
        return self._definitions[(definition_id, max(versions))]

    def definitions(self) -> list[JobDefinition]:
        """Every registered definition, every version, by id and version."""
        return [self._definitions[key] for key in sorted(self._definitions)]

    def ids(self) -> list[str]:
        return sorted({definition_id for definition_id, _ in self._definitions})


registry = JobDefinitionRegistry()

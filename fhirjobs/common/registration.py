"""What a FHIR job app declares once Django is ready: its job definitions, registered with the engine, and the
FHIR operations that start them (with any CapabilityStatement it implements), listed in /fhir/metadata.

Every app's `ready()` has the same shape: import its definitions (they need the app registry), then one call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # batch's modules need Django's app registry, which apps.py is read before
    from batch.api import JobDefinition


@dataclass(frozen=True)
class Operation:
    name: str  # without the `$`: "export"
    definition: str  # the canonical URL of its OperationDefinition
    resource_type: str | None = None  # None: at system level


def register_job_app(
    definitions: Iterable[JobDefinition], operations: Iterable[Operation] = (), instantiates: Iterable[str] = ()
) -> None:
    from batch.api import register
    from fhirstore.capability import register_instantiates, register_operation

    for definition in definitions:
        register(definition)
    for canonical in instantiates:
        register_instantiates(canonical)
    for operation in operations:
        register_operation(operation.name, operation.definition, resource_type=operation.resource_type)

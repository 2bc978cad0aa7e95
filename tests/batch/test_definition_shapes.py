"""A job definition that changes shape gets a new version: processes of two releases share jobs by (id, version).

In a rolling upgrade a job started on one release runs chunks on the other. If a definition's parameters or
steps changed under the same version, the other release runs them with a shape it does not know (a parameter
it never stored, a step it lacks). So each (id, version) has its shape recorded here, and a change of shape
without a new version fails. A new version, or a new definition, is recorded with
`RECORD_DEFINITION_SHAPES=1 pytest tests/batch/test_definition_shapes.py`.
"""

import json
import os
from pathlib import Path

from batch.registry import registry

RECORD = Path(__file__).with_name("definition_shapes.json")


def registered_shapes() -> dict[str, dict]:
    return {f"{definition.id} v{definition.version}": definition.shape() for definition in registry.definitions()}


def test_no_registered_definition_changed_shape_without_a_new_version():
    shapes = registered_shapes()
    recorded = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    if os.environ.get("RECORD_DEFINITION_SHAPES"):
        changed = [key for key in shapes if key in recorded and recorded[key] != shapes[key]]
        assert not changed, f"{changed} changed shape: give them a new version instead of recording them again"
        RECORD.write_text(json.dumps({**recorded, **shapes}, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(RECORD.read_text()) if RECORD.exists() else {}

    unrecorded = sorted(set(shapes) - set(recorded))
    assert not unrecorded, (
        f"new definitions or versions {unrecorded}: record their shapes with "
        "RECORD_DEFINITION_SHAPES=1 pytest tests/batch/test_definition_shapes.py"
    )
    changed = sorted(key for key in shapes if shapes[key] != recorded[key])
    assert not changed, (
        f"{changed} changed shape without a new version: a process of the previous release would "
        "run their jobs with the old shape. Register the change as the next version (keep the old "
        "one registered while its jobs run)"
    )

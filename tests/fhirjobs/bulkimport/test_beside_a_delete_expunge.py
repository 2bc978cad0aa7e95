"""An `$import` beside a delete-expunge: the import holds every type against expunges while it runs, so a
delete-expunge page waits (rolls back, polls, deletes nothing) until the import ended, then deletes what it
listed — with the versions the import wrote — and leaves what the import created after the listing."""

from __future__ import annotations

import pytest

from batch.api import RetryChunkLater
from fhirjobs.deleteexpunge.steps import delete_expunge
from fhirstore.models import Resource, SnapshotHold
from tests.fhirjobs.bulkimport.helpers import write_ndjson
from tests.fhirjobs.deleteexpunge.helpers import delete_expunge_parameters, keys_of, observation
from tests.fhirjobs.helpers import ChunkContext
from tests.fhirstore.helpers import store

pytestmark = pytest.mark.django_db(transaction=True)


def observations() -> list[str]:
    return sorted(Resource.objects.filter(resource_type="Observation").values_list("logical_id", flat=True))


def test_a_delete_expunge_page_waits_while_an_import_runs_and_goes_on_once_it_ended(importer, file_root):
    store(observation("o1"), observation("o2"))
    page = ChunkContext(  # listed before the import
        {"type": "Observation", "keys": keys_of("Observation")}, delete_expunge_parameters("Observation")
    )
    source = write_ndjson(
        file_root / "Observation.ndjson", {**observation("o1"), "status": "amended"}, observation("o3")
    )
    kicked = importer.kick_off(source.as_uri())
    assert kicked.status_code == 202, kicked.content

    with pytest.raises(RetryChunkLater, match=r"import [0-9a-f-]+ write Observation"):
        delete_expunge(page, sink=None)
    assert observations() == ["o1", "o2"]

    importer.finish(kicked["Content-Location"])
    assert not SnapshotHold.objects.exists(), "released as the import ended"
    assert delete_expunge(page, sink=None) == 2
    assert observations() == ["o3"], "o1 went with the import's version; o3 was created after the listing"

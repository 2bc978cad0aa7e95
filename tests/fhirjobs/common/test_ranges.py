"""The shared walk by row key (`generate_key_ranges` → `load_keys`, the delete-expunge's): every match once, in
pages of neighbouring rows in the order they were written, whatever their logical ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from fhirjobs.common.ranges import generate_key_ranges, load_keys
from fhirstore.models import Resource
from tests.fhirjobs.deleteexpunge.helpers import observation
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import store

pytestmark = pytest.mark.django_db


@dataclass
class Context:
    parameters: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)

    def check_cancelled(self) -> None:
        pass


class Sink(list):
    def accept(self, item: dict) -> None:
        self.append(item)


def walk(urls: list[str], batch_size: int) -> tuple[Sink, Sink]:
    """The ranges the first step emits, and the pages the second emits from all of them."""
    parameters = {"urls": urls, "batch_size": batch_size}
    ranges, pages = Sink(), Sink()
    generate_key_ranges(Context(parameters), ranges)
    for data in ranges:
        load_keys(Context(parameters, data), pages)
    return ranges, pages


def test_pages_are_neighbouring_rows_in_key_order_and_every_match_comes_once():
    for n in reversed(range(45)):  # written in the reverse order of their ids, each beside a patient
        store(observation(f"o{n:02}"), patient(f"p{n:02}"))
    store(observation("other", code="2339-0"))
    matches = list(
        Resource.objects.filter(resource_type="Observation")
        .exclude(logical_id="other")
        .order_by("id")
        .values_list("id", flat=True)
    )

    ranges, pages = walk(["Observation?code=8867-4"], batch_size=4)

    assert len(ranges) > 1  # ranges of about 10 pages of 4 Observations
    assert {page["type"] for page in pages} == {"Observation"}
    assert all(len(page["keys"]) <= 4 for page in pages)
    assert [key for page in pages for key in page["keys"]] == matches  # in key order, each once


def test_a_type_without_rows_is_one_empty_range():
    ranges, pages = walk(["Basic?"], batch_size=4)
    assert len(ranges) == 1 and pages == []

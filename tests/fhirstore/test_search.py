"""Search: each kind of parameter and prefix, _id, _lastUpdated, _count, _sort, paging through the cache."""

from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from fhirstore.models import SearchCache
from fhirstore.search import delete_expired_searches
from tests.fhirstore.helpers import assert_outcome, patient, store

pytestmark = pytest.mark.django_db

LOINC = "http://loinc.org"


def ids(fhir, query: str) -> list[str]:
    response = fhir.get(f"/fhir/{query}")
    assert response.status_code == 200, response.content
    return [entry["resource"]["id"] for entry in response.json()["entry"]]


def observation(
    observation_id: str,
    *,
    code: str = "8867-4",
    system: str = LOINC,
    status: str = "final",
    category: str = "vital-signs",
    subject: str = "Patient/p1",
    effective: str = "2020-06-15T10:00:00Z",
):
    return {
        "resourceType": "Observation",
        "id": observation_id,
        "status": status,
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}
        ],
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": effective,
    }


class TestTokens:
    @pytest.fixture(autouse=True)
    def observations(self):
        store(
            observation("heart", code="8867-4"),
            observation("weight", code="29463-7", status="amended"),
            observation("glucose", code="2339-0", category="laboratory"),
            observation("local", code="8867-4", system="urn:local-codes"),
            {**observation("no-system"), "code": {"coding": [{"code": "8867-4"}]}},
        )

    def test_code_alone_matches_any_system(self, fhir):
        assert sorted(ids(fhir, "Observation?code=8867-4")) == ["heart", "local", "no-system"]

    def test_system_and_code(self, fhir):
        assert ids(fhir, f"Observation?code={LOINC}|8867-4") == ["heart"]

    def test_system_with_any_code(self, fhir):
        assert sorted(ids(fhir, f"Observation?code={LOINC}|")) == ["glucose", "heart", "weight"]

    def test_code_without_a_system(self, fhir):
        assert ids(fhir, "Observation?code=|8867-4") == ["no-system"]

    def test_comma_means_or(self, fhir):
        assert sorted(ids(fhir, "Observation?code=29463-7,2339-0")) == ["glucose", "weight"]

    def test_status_and_category(self, fhir):
        assert ids(fhir, "Observation?status=amended") == ["weight"]
        assert ids(fhir, "Observation?category=laboratory") == ["glucose"]

    def test_different_parameters_are_anded(self, fhir):
        assert ids(fhir, "Observation?category=vital-signs&status=amended") == ["weight"]
        assert ids(fhir, "Observation?category=laboratory&status=amended") == []

    def test_identifier(self, fhir):
        store(patient(id="p1", identifier=[{"system": "urn:mrn", "value": "12345"}]))

        assert ids(fhir, "Patient?identifier=urn:mrn|12345") == ["p1"]
        assert ids(fhir, "Patient?identifier=12345") == ["p1"]
        assert ids(fhir, "Patient?identifier=urn:other|12345") == []


class TestStrings:
    @pytest.fixture(autouse=True)
    def patients(self):
        store(
            patient(id="muller", family="Müller", given="Anna"),
            patient(id="mull", family="Mullins", given="Bo"),
            patient(id="smith", family="Smith", given="Müller"),
        )

    def test_prefix_ignores_case_and_accents(self, fhir):
        assert sorted(ids(fhir, "Patient?family=mull")) == ["mull", "muller"]
        assert ids(fhir, "Patient?family=MÜLLER") == ["muller"]

    def test_exact(self, fhir):
        assert ids(fhir, "Patient?family:exact=Müller") == ["muller"]
        assert ids(fhir, "Patient?family:exact=muller") == []

    def test_contains(self, fhir):
        assert ids(fhir, "Patient?family:contains=lin") == ["mull"]

    def test_given_and_name(self, fhir):
        assert ids(fhir, "Patient?given=bo") == ["mull"]
        assert sorted(ids(fhir, "Patient?name=müller")) == ["muller", "smith"]  # family or given


class TestDates:
    @pytest.fixture(autouse=True)
    def resources(self):
        store(
            patient(id="p1974", birth_date="1974-12-25"),
            patient(id="p1990", birth_date="1990"),
            {
                "resourceType": "Encounter",
                "id": "visit",
                "status": "finished",
                "period": {"start": "2020-01-01T10:00:00Z", "end": "2020-01-01T11:00:00Z"},
            },
            {
                "resourceType": "Encounter",
                "id": "open",
                "status": "in-progress",
                "period": {"start": "2021-05-01T08:00:00Z"},
            },
        )

    @pytest.mark.parametrize(
        "query, expected",
        [
            ("birthdate=1974-12-25", ["p1974"]),
            ("birthdate=1974", ["p1974"]),
            ("birthdate=eq1974-12", ["p1974"]),
            ("birthdate=1990-06-01", []),  # the stored year is wider than the day searched for
            ("birthdate=ne1974-12-25", ["p1990"]),
            ("birthdate=gt1974-12-25", ["p1990"]),
            ("birthdate=ge1974-12-25", ["p1974", "p1990"]),
            ("birthdate=lt1990-01-01", ["p1974"]),
            ("birthdate=le1974-12-25", ["p1974"]),
            ("birthdate=sa1974-12-25", ["p1990"]),
            ("birthdate=eb1990", ["p1974"]),
            ("birthdate=ge1970&birthdate=lt1980", ["p1974"]),
        ],
    )
    def test_birthdate_prefixes(self, fhir, query, expected):
        assert sorted(ids(fhir, f"Patient?{query}")) == expected

    @pytest.mark.parametrize(
        "query, expected",
        [
            ("date=2020-01-01", ["visit"]),
            ("date=ge2020-01-01T10:30:00Z", ["open", "visit"]),
            ("date=gt2020-01-01T11:00:00Z", ["open"]),
            ("date=lt2020-01-01T10:00:00Z", []),
            ("date=le2020-01-01T10:00:00Z", ["visit"]),
            ("date=ge2030-01-01", ["open"]),  # a period without an end goes on
            ("date=2021", []),  # the open period is not contained in 2021
        ],
    )
    def test_periods(self, fhir, query, expected):
        assert sorted(ids(fhir, f"Encounter?{query}")) == expected

    def test_observation_effective_date(self, fhir):
        store(observation("o1", effective="2020-06-15T10:00:00Z"), observation("o2", effective="2021-01-01"))

        assert ids(fhir, "Observation?date=ge2021") == ["o2"]


class TestReferences:
    @pytest.fixture(autouse=True)
    def observations(self):
        store(
            observation("mine", subject="Patient/p1"),
            observation("theirs", subject="Patient/p2"),
            observation("group", subject="Group/p1"),
        )

    def test_type_and_id(self, fhir):
        assert ids(fhir, "Observation?subject=Patient/p1") == ["mine"]

    def test_bare_id_matches_any_target_type(self, fhir):
        assert sorted(ids(fhir, "Observation?subject=p1")) == ["group", "mine"]

    def test_type_modifier(self, fhir):
        assert ids(fhir, "Observation?subject:Group=p1") == ["group"]

    def test_patient_is_subject_restricted_to_patients(self, fhir):
        assert ids(fhir, "Observation?patient=p1") == ["mine"]
        assert ids(fhir, "Observation?patient=Patient/p2") == ["theirs"]

    def test_absolute_url(self, fhir):
        assert ids(fhir, "Observation?subject=http://example.org/fhir/Patient/p2") == ["theirs"]

    def test_conditional_references_are_indexed_once_resolved(self, fhir):
        fhir.put(
            "/fhir/Practitioner/doc",
            {"resourceType": "Practitioner", "id": "doc", "identifier": [{"system": "urn:npi", "value": "1"}]},
        )
        fhir.put(
            "/fhir/Encounter/e1",
            {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "participant": [{"individual": {"reference": "Practitioner?identifier=urn:npi|1"}}],
            },
        )

        assert ids(fhir, "Encounter?practitioner=doc") == ["e1"]
        assert ids(fhir, "Encounter?participant=Practitioner/doc") == ["e1"]


class TestIdAndLastUpdated:
    T1 = datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

    @pytest.fixture(autouse=True)
    def patients(self):
        for hours, patient_id in enumerate(["a", "b", "c"]):
            store(patient(id=patient_id), at=self.T1 + timedelta(hours=hours))

    def test_id(self, fhir):
        assert sorted(ids(fhir, "Patient?_id=a,c")) == ["a", "c"]

    @pytest.mark.parametrize(
        "query, expected",
        [
            ("_lastUpdated=gt2024-01-01T12:00:00Z", ["b", "c"]),
            ("_lastUpdated=ge2024-01-01T13:00:00Z", ["b", "c"]),
            ("_lastUpdated=lt2024-01-01T13:00:00Z", ["a"]),
            ("_lastUpdated=le2024-01-01T13:00:00Z", ["a", "b"]),
            ("_lastUpdated=2024-01-01T13:00:00Z", ["b"]),
            ("_lastUpdated=2024-01-01", ["a", "b", "c"]),
            ("_lastUpdated=gt2024-01-01T12:00:00Z&_lastUpdated=lt2024-01-01T14:00:00Z", ["b"]),
        ],
    )
    def test_last_updated_prefixes(self, fhir, query, expected):
        assert sorted(ids(fhir, f"Patient?{query}")) == expected

    def test_sort_by_last_updated(self, fhir):
        store(patient(id="a", gender="male"), at=self.T1 + timedelta(hours=5))  # `a` becomes the newest

        assert ids(fhir, "Patient?_sort=_lastUpdated") == ["b", "c", "a"]
        assert ids(fhir, "Patient?_sort=-_lastUpdated") == ["a", "c", "b"]

    def test_deleted_resources_are_not_found(self, fhir):
        fhir.delete("/fhir/Patient/b")

        assert ids(fhir, "Patient") == ["a", "c"]


class TestPaging:
    @pytest.fixture(autouse=True)
    def patients(self):
        store(*[patient(id=f"p{n}", family="Pager") for n in range(5)])

    @staticmethod
    def link(bundle: dict, relation: str) -> str | None:
        return next((link["url"] for link in bundle["link"] if link["relation"] == relation), None)

    def test_next_and_previous_walk_the_cached_results(self, fhir):
        first = fhir.get("/fhir/Patient?family=pager&_count=2").json()
        second = fhir.client.get(self.link(first, "next")).json()
        third = fhir.client.get(self.link(second, "next")).json()
        back = fhir.client.get(self.link(third, "previous")).json()

        pages = [[e["resource"]["id"] for e in page["entry"]] for page in (first, second, third, back)]
        assert pages == [["p0", "p1"], ["p2", "p3"], ["p4"], ["p2", "p3"]]
        assert first["total"] == 5
        assert self.link(first, "previous") is None
        assert self.link(third, "next") is None
        assert self.link(first, "self") == "http://testserver/fhir/Patient?family=pager&_count=2"

    def test_pages_are_stable_while_new_resources_arrive(self, fhir):
        first = fhir.get("/fhir/Patient?_count=3").json()
        store(patient(id="p-late", family="Pager"))

        second = fhir.client.get(self.link(first, "next")).json()

        assert [e["resource"]["id"] for e in second["entry"]] == ["p3", "p4"]
        assert second["total"] == 5

    def test_one_cache_row_per_search_with_the_matched_ids(self, fhir):
        fhir.get("/fhir/Patient?family=pager&_count=2")

        cached = SearchCache.objects.get()
        assert cached.resource_type == "Patient"
        assert cached.total == 5
        assert len(cached.resource_ids) == 5
        assert cached.created is not None

    def test_count_zero_gives_the_total_only(self, fhir):
        bundle = fhir.get("/fhir/Patient?_count=0").json()

        assert bundle["total"] == 5
        assert bundle["entry"] == []

    def test_a_broad_search_is_cut_at_the_cache_limit_with_a_warning(self, fhir, settings):
        settings.FHIR_SEARCH_MAX_RESULTS = 3

        bundle = fhir.get("/fhir/Patient?_count=10").json()

        assert "total" not in bundle
        assert [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"] == ["p0", "p1", "p2"]
        assert bundle["entry"][-1]["resource"]["issue"][0]["severity"] == "warning"

    def test_an_expired_search_is_410(self, fhir, settings):
        first = fhir.get("/fhir/Patient?_count=2").json()

        with freeze_time(
            datetime.now(timezone.utc) + timedelta(minutes=settings.EXPIRE_SEARCH_RESULTS_AFTER_MINUTES, seconds=1)
        ):
            assert_outcome(fhir.client.get(self.link(first, "next")), 410, "expired")
            assert delete_expired_searches() == 1

    def test_an_unknown_search_id_is_410(self, fhir):
        assert_outcome(fhir.get("/fhir?_getpages=not-a-search&_getpagesoffset=2"), 410)

    def test_post_search_with_form_parameters(self, fhir):
        response = fhir.client.post(
            "/fhir/Patient/_search", "family=pager&_count=1", content_type="application/x-www-form-urlencoded"
        )

        assert response.status_code == 200
        assert response.json()["total"] == 5

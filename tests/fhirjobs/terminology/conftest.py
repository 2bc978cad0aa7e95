"""The terminology jobs' tests use the store tests' fixtures: the ICD-10-CM slice, the clients, a loaded slice."""

from tests.fhirstore.terminology.conftest import icd10cm, reader, uploader  # noqa: F401  fixtures

import pytest
from jobsite.tokens import token_for

from tests.fhirstore.helpers import FhirClient


@pytest.fixture
def api_user(django_user_model):
    return django_user_model.objects.create_user("fhir-client")  # no password: hashing one costs ~0.3 s


@pytest.fixture
def token(api_user) -> str:
    return token_for(api_user)


@pytest.fixture
def fhir(token) -> FhirClient:
    return FhirClient(f"Bearer {token}")


@pytest.fixture
def anonymous() -> FhirClient:
    return FhirClient()

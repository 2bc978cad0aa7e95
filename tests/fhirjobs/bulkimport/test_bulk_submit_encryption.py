"""`$bulk-submit` `fileEncryptionKey` (Bulk Data STU4 ballot): a provider encrypts its manifest and files as JWEs and
sends their key encrypted to this server's key; the files are decrypted as they stream, a file that does not
decrypt fails its import with nothing loaded, and the key is forgotten with the source credentials."""

from __future__ import annotations

import gzip
import json
import os

import pytest
from django.contrib.auth.models import Permission
from jwcrypto import jwe, jwk

from fhirjobs.bulkimport.encryption import FileDecryptionFailed, decrypted
from fhirjobs.bulkimport.models import BulkImport, BulkSubmission
from fhirjobs.bulkimport.services import discard_ended_import_data
from fhirstore.models import Resource
from jobsite.tokens import token_for
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import FhirClient, assert_outcome

pytestmark = pytest.mark.django_db(transaction=True)

SUBMITTER = {"name": "submitter", "valueIdentifier": {"system": "https://example.org/providers", "value": "a"}}
COMPLETED = {
    "name": "submissionStatus",
    "valueCoding": {"system": "http://hl7.org/fhir/event-status", "code": "completed"},
}
JWE_CODING = {"system": "http://hl7.org/fhir/uv/bulkdata/ValueSet/file-encryption-type", "code": "jwe"}


@pytest.fixture
def server_key(settings) -> jwk.JWK:
    """This server's key (BULK_SUBMIT_FILE_DECRYPTION_JWK); providers encrypt the files' key to its public half."""
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="heavylift-files")
    settings.BULK_SUBMIT_FILE_DECRYPTION_JWK = json.loads(key.export_private())
    return key


@pytest.fixture
def provider_client(django_user_model) -> FhirClient:
    user = django_user_model.objects.create_user("provider")
    user.user_permissions.add(Permission.objects.get(codename="start_import"))
    return FhirClient(f"Bearer {token_for(user, ['system/bulk-submit'])}")


def file_key_parameter(file_key: bytes, recipient: jwk.JWK) -> dict:
    """`fileEncryptionKey` as a provider sends it: the files' key as a JWK, in a JWE to the consumer's public key."""
    public = jwk.JWK.from_json(recipient.export_public())
    payload = json.dumps({"kty": "oct", "k": jwk.base64url_encode(file_key)})
    token = jwe.JWE(payload, json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": recipient.kid}))
    token.add_recipient(public)
    return {
        "name": "fileEncryptionKey",
        "part": [
            {"name": "coding", "valueCoding": JWE_CODING},
            {"name": "value", "valueString": token.serialize(True)},
        ],
    }


def encrypted(content: bytes, file_key: bytes, *, alg: str = "dir", zip_: bool = False) -> bytes:
    """A file as the provider serves it: a compact JWE, by jwcrypto (which this server does not use to read it)."""
    header = {"alg": alg, "enc": "A256GCM", **({"zip": "DEF"} if zip_ else {})}
    token = jwe.JWE(content, json.dumps(header))
    token.add_recipient(jwk.JWK(kty="oct", k=jwk.base64url_encode(file_key)))
    return token.serialize(compact=True).encode()


def ndjson(*resources: dict) -> bytes:
    return b"".join(json.dumps(resource).encode() + b"\n" for resource in resources)


def submit(client: FhirClient, manifest_url: str, key_parameter: dict):
    body = {
        "resourceType": "Parameters",
        "parameter": [
            SUBMITTER,
            {"name": "submissionId", "valueString": "s1"},
            {"name": "manifestUrl", "valueUrl": manifest_url},
            key_parameter,
            COMPLETED,
        ],
    }
    return client.post("/fhir/$bulk-submit", body)


def status_manifest(client: FhirClient) -> dict:
    body = {"resourceType": "Parameters", "parameter": [SUBMITTER, {"name": "submissionId", "valueString": "s1"}]}
    response = client.post("/fhir/$bulk-submit-status", body)
    assert response.status_code == 200, response.content
    return response.json()


def write_submission(root, file_key: bytes, files: dict[str, bytes]) -> str:
    """Encrypted files {name: JWE} and their manifest (encrypted with the files' key too), as file:// URLs."""
    for name, content in files.items():
        (root / name).write_bytes(content)
    manifest = {"output": [{"type": "Patient", "url": (root / name).as_uri()} for name in sorted(files)]}
    (root / "manifest.jwe").write_bytes(encrypted(json.dumps(manifest).encode(), file_key))
    return (root / "manifest.jwe").as_uri()


def test_an_encrypted_manifest_and_its_files_load_and_the_key_is_forgotten_once_the_import_completed(
    provider_client, server_key, file_root, bus
):
    file_key = os.urandom(32)
    plain = encrypted(ndjson(patient("enc-1"), patient("enc-2")), file_key)
    gzipped_deflated = encrypted(gzip.compress(ndjson(patient("enc-3"))), file_key, zip_=True)
    key_parameter = file_key_parameter(file_key, server_key)
    manifest_url = write_submission(file_root, file_key, {"a.jwe": plain, "b.jwe": gzipped_deflated})

    assert submit(provider_client, manifest_url, key_parameter).status_code == 200
    stored = BulkImport.objects.get().file_encryption_key
    bus.drain()

    assert set(Resource.objects.values_list("logical_id", flat=True)) == {"enc-1", "enc-2", "enc-3"}
    assert status_manifest(provider_client)["error"] == []
    assert stored == key_parameter["part"][1]["valueString"]  # the JWE only this server's key opens, not the key
    discard_ended_import_data()
    assert BulkImport.objects.get().file_encryption_key == ""


@pytest.mark.parametrize("damage", ["another key", "a changed byte"])
def test_a_file_that_does_not_decrypt_fails_the_import_with_the_reason_and_nothing_of_it_loads(
    provider_client, server_key, file_root, bus, damage
):
    file_key = os.urandom(32)
    good = encrypted(ndjson(patient("good-1")), file_key)
    bad_content = ndjson(*(patient(f"bad-{number}") for number in range(2000)))
    if damage == "another key":
        bad = encrypted(bad_content, os.urandom(32))
    else:
        bad = bytearray(encrypted(bad_content, file_key))
        middle = len(bad) // 2
        bad[middle] = ord("A") if bad[middle] != ord("A") else ord("B")
        bad = bytes(bad)
    manifest_url = write_submission(file_root, file_key, {"a.jwe": good, "b.jwe": bad})

    assert submit(provider_client, manifest_url, file_key_parameter(file_key, server_key)).status_code == 200
    bus.drain()

    [error] = status_manifest(provider_client)["error"]
    assert (
        f"Could not decrypt {(file_root / 'b.jwe').as_uri()}: its authentication tag does not match"
        in (error["diagnostics"])
    )
    assert "nothing of this import was loaded" in error["diagnostics"]
    assert not Resource.objects.exists()  # neither the file's lines decrypted before the tag, nor the good file


def test_a_key_not_encrypted_to_this_server_or_a_server_without_a_key_is_a_400_and_starts_nothing(
    provider_client, server_key, settings, file_root
):
    manifest_url = write_submission(file_root, b"k" * 32, {})
    someone_else = jwk.JWK.generate(kty="EC", crv="P-256", kid="someone-else")

    assert_outcome(
        submit(provider_client, manifest_url, file_key_parameter(b"k" * 32, someone_else)),
        400,
        "fileEncryptionKey could not be opened with this server's key (BULK_SUBMIT_FILE_DECRYPTION_JWK)",
    )
    settings.BULK_SUBMIT_FILE_DECRYPTION_JWK = {}
    assert_outcome(
        submit(provider_client, manifest_url, file_key_parameter(b"k" * 32, server_key)),
        400,
        "this server takes no encrypted files: it has no key for them (BULK_SUBMIT_FILE_DECRYPTION_JWK)",
    )
    assert not BulkSubmission.objects.exists()


def test_a_file_is_decrypted_as_it_streams_and_its_tag_is_checked_at_its_end():
    file_key, wrapping_key = os.urandom(32), os.urandom(32)
    content = ndjson(*(patient(f"p{number}") for number in range(20_000)))
    for key, token in [
        (file_key, encrypted(content, file_key)),
        (wrapping_key, encrypted(content, wrapping_key, alg="A256KW")),
    ]:
        blocks = [token[start : start + 4096] for start in range(0, len(token), 4096)]
        read = []
        stream = decrypted((read.append(block) or block for block in blocks), key, source="f")

        first = next(stream)

        assert content.startswith(first) and len(read) < 3  # plaintext before the file was read to its end
        assert first + b"".join(stream) == content
    with pytest.raises(FileDecryptionFailed, match="it ends inside the ciphertext") as cut:
        b"".join(decrypted([token[: len(token) // 2]], wrapping_key, source="f"))
    assert cut.value.retryable  # a file cut off is read again, as any source
    with pytest.raises(FileDecryptionFailed, match="not a JWE in compact serialization"):
        b"".join(decrypted([content], file_key, source="f"))

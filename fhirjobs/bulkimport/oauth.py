"""The token a `$bulk-submit` with `oauthMetadataUrl` fetches its manifests and files with (Bulk Data STU4 ballot).

The provider names where its authorization server is described; this server reads that document, finds the
token endpoint and asks it for a token by the OAuth client-credentials grant, as this server's client
(BULK_SUBMIT_CLIENT_ID). The document may be either:

- authorization server metadata itself, with `token_endpoint` (RFC 8414, or SMART's
  `.well-known/smart-configuration`, which the Inferno kit's provider names);
- protected resource metadata (RFC 9728), whose `authorization_servers` lists issuers: the first one's
  RFC 8414 metadata (`/.well-known/oauth-authorization-server` inserted before the issuer's path) is read next.

The client authenticates with a signed JWT assertion (SMART Backend Services' `private_key_jwt`) when
BULK_SUBMIT_CLIENT_JWK holds a private key, else with BULK_SUBMIT_CLIENT_SECRET by HTTP Basic. Every URL is a
source like any other: under BULK_IMPORT_ALLOWED_SOURCES, checked and pinned as a file fetch is. Anything that
goes wrong is an InvalidSubmission (400), answered at the submit: nothing is started without a token.
"""

from __future__ import annotations

import base64
import time
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings
from jwcrypto import jwk, jwt

from fhirjobs.bulkimport.exceptions import InvalidSubmission
from fhirjobs.common.sources import SourceUnavailable, post_form, read_json
from fhirstore.exceptions import InvalidRequest

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_SECONDS = 300  # SMART Backend Services: no more than five minutes


def client_credentials_token(metadata_url: str) -> str:
    """An access token for this server's client from the authorization server `metadata_url` describes."""
    if not settings.BULK_SUBMIT_CLIENT_ID or not (
        settings.BULK_SUBMIT_CLIENT_JWK or settings.BULK_SUBMIT_CLIENT_SECRET
    ):
        raise InvalidSubmission(
            "oauthMetadataUrl needs this server's OAuth client (BULK_SUBMIT_CLIENT_ID with BULK_SUBMIT_CLIENT_JWK "
            "or BULK_SUBMIT_CLIENT_SECRET), which is not configured"
        )
    token_endpoint = _token_endpoint(metadata_url)
    form = {"grant_type": "client_credentials", "scope": settings.BULK_SUBMIT_TOKEN_SCOPE}
    headers = {"Accept": "application/json"}
    if settings.BULK_SUBMIT_CLIENT_JWK:
        form |= {"client_assertion_type": ASSERTION_TYPE, "client_assertion": _client_assertion(token_endpoint)}
    else:
        pair = f"{quote(settings.BULK_SUBMIT_CLIENT_ID)}:{quote(settings.BULK_SUBMIT_CLIENT_SECRET)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    answer = _fetched(lambda: post_form(token_endpoint, form, headers), "the token endpoint", token_endpoint)
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise InvalidSubmission(f"The token endpoint {token_endpoint} answered without an access_token")
    return token


def _token_endpoint(metadata_url: str) -> str:
    metadata = _document(metadata_url, "oauthMetadataUrl")
    if isinstance(metadata.get("token_endpoint"), str):
        return metadata["token_endpoint"]
    servers = metadata.get("authorization_servers")
    if isinstance(servers, list) and servers and isinstance(servers[0], str):
        server_metadata = _document(authorization_server_metadata_url(servers[0]), "the authorization server")
        if isinstance(server_metadata.get("token_endpoint"), str):
            return server_metadata["token_endpoint"]
    raise InvalidSubmission(
        f"oauthMetadataUrl {metadata_url} names no token_endpoint (nor authorization_servers with one)"
    )


def authorization_server_metadata_url(issuer: str) -> str:
    """RFC 8414 section 3: the well-known path goes between the issuer's host and its path."""
    parts = urlsplit(issuer)
    path = "/.well-known/oauth-authorization-server" + parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _document(url: str, what: str) -> dict:
    document = _fetched(lambda: read_json(url, {"Accept": "application/json"}), what, url)
    if not isinstance(document, dict):
        raise InvalidSubmission(f"{what} {url} is not a JSON object")
    return document


def _fetched(fetch, what: str, url: str):
    try:
        return fetch()
    except InvalidRequest as error:  # outside the allow-list, among others
        raise InvalidSubmission(f"{what}: {error.message}") from None
    except SourceUnavailable as error:
        raise InvalidSubmission(f"{what} could not be read: {error}") from None
    except ValueError:
        raise InvalidSubmission(f"{what} {url} did not answer JSON") from None


def _client_assertion(token_endpoint: str) -> str:
    """SMART Backend Services' signed JWT: iss and sub the client id, aud the token endpoint, a fresh jti."""
    key = jwk.JWK(**settings.BULK_SUBMIT_CLIENT_JWK)
    algorithm = settings.BULK_SUBMIT_CLIENT_JWK.get("alg") or ("ES384" if key.get("kty") == "EC" else "RS384")
    now = int(time.time())
    header = {"alg": algorithm, "typ": "JWT", **({"kid": key["kid"]} if key.get("kid") else {})}
    claims = {
        "iss": settings.BULK_SUBMIT_CLIENT_ID,
        "sub": settings.BULK_SUBMIT_CLIENT_ID,
        "aud": token_endpoint,
        "exp": now + ASSERTION_LIFETIME_SECONDS,
        "jti": uuid.uuid4().hex,
    }
    assertion = jwt.JWT(header=header, claims=claims)
    assertion.make_signed_token(key)
    return assertion.serialize()

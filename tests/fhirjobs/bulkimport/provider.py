"""A Bulk Submit Data Provider on a local port, as the Inferno kit's v4.0.0 Submit suite plays one: its
authorization server (SMART configuration or RFC 9728 protected-resource metadata, RFC 8414 metadata, a token
endpoint taking SMART Backend Services' signed assertion or HTTP Basic) and its manifest and files, served only
with a token it issued. Every request is recorded, as the kit records them to check what the consumer fetched."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from jwcrypto import jwk, jwt

CLIENT_ID = "heavylift-consumer"
CLIENT_SECRET = "s3cret-of-the-consumer"


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    form: dict[str, str] = field(default_factory=dict)


class Provider:
    """Serves `files` {name: ndjson text} under /files/, and /manifest.json listing them."""

    def __init__(self, files: dict[str, str]):
        self.key = jwk.JWK.generate(kty="EC", crv="P-384", kid="consumer-key")
        self.files = files
        self.tokens: set[str] = set()
        self.requests: list[Seen] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.provider = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def private_jwk(self) -> dict:
        """The consumer's key (what BULK_SUBMIT_CLIENT_JWK holds); the provider keeps the public half."""
        return json.loads(self.key.export_private())

    def manifest(self) -> dict:
        return {
            "transactionTime": "2026-12-01T00:00:00Z",
            "requiresAccessToken": True,
            "output": [{"type": name.split(".")[0], "url": f"{self.base}/files/{name}"} for name in sorted(self.files)],
            "error": [],
        }

    def seen(self, method: str, prefix: str) -> list[Seen]:
        return [request for request in self.requests if request.method == method and request.path.startswith(prefix)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def issue_token(self, form: dict[str, str], authorization: str | None) -> str | None:
        """A token for the consumer's client, if it proved who it is (assertion or Basic); None otherwise."""
        if form.get("grant_type") != "client_credentials":
            return None
        if "client_assertion" in form:
            try:
                assertion = jwt.JWT(jwt=form["client_assertion"], key=self.key, expected_type="JWS")
                claims = json.loads(assertion.claims)
            except Exception:  # noqa: BLE001 - any bad assertion is simply refused
                return None
            if claims.get("iss") != CLIENT_ID or claims.get("aud") != f"{self.base}/token":
                return None
        elif authorization != "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode():
            return None
        token = secrets.token_urlsafe(16)
        self.tokens.add(token)
        return token


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        provider: Provider = self.server.provider
        provider.requests.append(Seen("GET", self.path, self.headers.get("Authorization")))
        if self.path == "/.well-known/smart-configuration":
            return self._json(200, {"token_endpoint": f"{provider.base}/token", "grant_types_supported": []})
        if self.path == "/.well-known/oauth-protected-resource":  # RFC 9728
            return self._json(200, {"resource": provider.base, "authorization_servers": [f"{provider.base}/as"]})
        if self.path == "/.well-known/oauth-authorization-server/as":  # RFC 8414 of the issuer {base}/as
            return self._json(200, {"issuer": f"{provider.base}/as", "token_endpoint": f"{provider.base}/token"})
        bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if bearer not in provider.tokens:
            return self._json(401, {"error": "invalid_token"})
        if self.path == "/manifest.json":
            return self._json(200, provider.manifest())
        name = self.path.removeprefix("/files/")
        if name in provider.files:
            return self._send(200, "application/fhir+ndjson", provider.files[name].encode())
        return self._json(404, {})

    def do_POST(self):
        provider: Provider = self.server.provider
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        form = {name: values[0] for name, values in parse_qs(body).items()}
        provider.requests.append(Seen("POST", self.path, self.headers.get("Authorization"), form))
        token = provider.issue_token(form, self.headers.get("Authorization")) if self.path == "/token" else None
        if token is None:
            return self._json(400 if self.path == "/token" else 404, {"error": "invalid_client"})
        return self._json(200, {"access_token": token, "token_type": "bearer", "expires_in": 300})

    def _json(self, status: int, document: dict) -> None:
        self._send(status, "application/json", json.dumps(document).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

"""API keys on every request (except the probes and the API description), and role guards.

Clients send `Authorization: Bearer <key>` or `X-API-Key: <key>`. Only the key's sha256 is stored.
A 401 says how to authenticate in `WWW-Authenticate` (RFC 6750's Bearer scheme).
"""

from __future__ import annotations

from typing import Any

import anyio
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from grainproof.store.database import read_connection
from grainproof.store.keys import find_key
from grainproof.store.tables import ApiKey

#: Paths anyone may call: the liveness and readiness probes (load balancers and orchestrators carry no key)
#: and the API's description (a client generator needs it before it has a key; it holds no data).
OPEN_PATHS = ["^/health$", "^/ready$", "^/schema(/|$)"]

_REALM = 'Bearer realm="grainproof"'


def _secret_from(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return connection.headers.get("x-api-key") or None


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    """Looks the key up by its hash; 401 with a sentence when it is missing, unknown or revoked."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        secret = _secret_from(connection)
        if secret is None:
            raise NotAuthorizedException(
                "This endpoint needs an API key: send `Authorization: Bearer <key>` "
                "(an admin creates keys with `grainproof keys create --role intake`).",
                headers={"WWW-Authenticate": _REALM},
            )
        runtime = connection.app.state.runtime

        def lookup() -> ApiKey | None:
            with read_connection(runtime.engine) as connection:
                return find_key(connection, secret)

        key = await anyio.to_thread.run_sync(lookup)
        if key is None:
            raise NotAuthorizedException(
                "The API key is unknown or revoked; ask an admin for a valid key.",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
        return AuthenticationResult(user=key, auth=key)


def requires_role(*roles: str) -> Any:
    """A guard letting through only keys with one of `roles` (403 otherwise)."""

    # Async because litestar runs a synchronous guard in a worker thread: a thread hop per request
    # for what is one attribute check.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        key = connection.user
        if not isinstance(key, ApiKey) or key.role not in roles:
            role = getattr(key, "role", "none")
            raise PermissionDeniedException(
                f"An {role} key cannot do this; it needs a key with role {' or '.join(roles)}."
            )

    return guard

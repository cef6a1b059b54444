"""/v1/keys: admins create, list and revoke API keys (the secret is shown once, at creation)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import Example
from litestar.params import Body, PathParameter
from sqlmodel import Session

from grainproof.api.auth import requires_role
from grainproof.api.contract import CreatedKey, Key, KeyInput, shaped
from grainproof.api.dependencies import ACCEPTS
from grainproof.api.openapi import problems
from grainproof.api.runtime import Runtime
from grainproof.store.database import session_scope
from grainproof.store.keys import create_key, list_keys, revoke_key
from grainproof.store.tables import ApiKey


def key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "prefix": key.prefix,
        "role": key.role,
        "name": key.name,
        "site": key.site,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


class KeyController(Controller):
    path = "/v1/keys"
    tags = ("keys",)
    guards = (requires_role("admin"),)

    @post(
        "/",
        operation_id="create_key",
        summary="Create an API key (the secret is in this response only)",
        description="Only the key's sha256 is stored: keep the `key` of this response, it is never shown again.",
        status_code=201,
        sync_to_thread=True,
        responses=problems(400, 403, 413, 415),
        opt={ACCEPTS: ("application/json",)},
    )
    def create(
        self,
        runtime: NamedDependency[Runtime],
        data: Annotated[
            KeyInput,
            Body(
                examples=[
                    Example(summary="An intake key", value={"role": "intake", "name": "silo 2", "site": "silo-2"})
                ]
            ),
        ],
    ) -> CreatedKey:
        """Create a key and show its secret once."""
        # Committed before answering: a secret shown for a key that was never stored would be worse than none.
        with session_scope(runtime.engine) as session:
            key, secret = create_key(session, role=data.role.value, name=data.name, site=data.site)
        return shaped({**key_view(key), "key": secret}, CreatedKey)

    @get(
        "/",
        operation_id="list_keys",
        summary="API keys (never their secrets)",
        sync_to_thread=True,
        responses=problems(403),
    )
    def index(self, session: NamedDependency[Session]) -> list[Key]:
        """Every key, revoked ones included."""
        return shaped([key_view(k) for k in list_keys(session)], list[Key])

    @post(
        "/{key_id:int}/revoke",
        operation_id="revoke_key",
        summary="Revoke an API key",
        description="Requests with the key get 401 from now on.",
        status_code=200,
        sync_to_thread=True,
        responses=problems(400, 403, 404),
    )
    def revoke(
        self,
        runtime: NamedDependency[Runtime],
        key_id: Annotated[int, PathParameter(description="The key's id.", ge=1, le=2**31 - 1)],
    ) -> Key:
        """Revoke a key."""
        with session_scope(runtime.engine) as session:
            return shaped(key_view(revoke_key(session, key_id)), Key)

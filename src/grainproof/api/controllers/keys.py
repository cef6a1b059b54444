"""/v1/keys: admins create, list and revoke API keys (the secret is shown once, at creation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlmodel import Session

from grainproof.api.auth import requires_role
from grainproof.api.runtime import Runtime
from grainproof.store.database import session_scope
from grainproof.store.keys import create_key, list_keys, revoke_key
from grainproof.store.tables import ApiKey


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInput:
    """A key to create: its role (intake, auditor, admin), a label and the intake site it belongs to."""

    role: str
    name: str = ""
    site: str | None = None


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

    @post("/", summary="Create an API key (the secret is in this response only)", status_code=201, sync_to_thread=True)
    def create(self, runtime: NamedDependency[Runtime], data: JSONBody[KeyInput]) -> dict[str, Any]:
        # Committed before answering: a secret shown for a key that was never stored would be worse than none.
        with session_scope(runtime.engine) as session:
            key, secret = create_key(session, role=data.role, name=data.name[:200], site=data.site)
        return {**key_view(key), "key": secret}

    @get("/", summary="API keys (never their secrets)", sync_to_thread=True)
    def index(self, session: NamedDependency[Session]) -> list[dict[str, Any]]:
        return [key_view(k) for k in list_keys(session)]

    @post("/{key_id:int}/revoke", summary="Revoke an API key", status_code=200, sync_to_thread=True)
    def revoke(self, runtime: NamedDependency[Runtime], key_id: FromPath[int]) -> dict[str, Any]:
        with session_scope(runtime.engine) as session:
            return key_view(revoke_key(session, key_id))

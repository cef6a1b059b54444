"""Values controllers receive by name: the runtime, a database session and the calling key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litestar import Request
from litestar.datastructures import State
from sqlmodel import Session

from grainproof.api.runtime import Runtime
from grainproof.store.database import session_scope
from grainproof.store.tables import ApiKey


def provide_runtime(state: State) -> Runtime:
    return state.runtime  # type: ignore[no-any-return]


def provide_session(state: State) -> Iterator[Session]:
    """A read-only-by-convention session for one request (writes go through services' own transactions)."""
    with session_scope(state.runtime.engine) as session:
        yield session


def provide_caller(request: Request[Any, Any, Any]) -> ApiKey:
    return request.user  # type: ignore[no-any-return]

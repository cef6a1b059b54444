"""The HTTP API (litestar): `create_app(settings)` builds it; `grainproof serve` runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar import Litestar

    from grainproof.settings import Settings


def create_app(settings: Settings | None = None, **kwargs: Any) -> Litestar:
    """The service app (see `grainproof.api.app.create_app`); imported lazily to keep the CLI fast."""
    from grainproof.api.app import create_app as build

    return build(settings, **kwargs)


__all__ = ["create_app"]

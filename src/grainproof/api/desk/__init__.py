"""The auditor's desk: server-rendered pages (queue, lot evidence, decisions) with a browser login.

`DESK_ROUTES` is registered by `grainproof.api.app.create_app`; templates and static files ship in
this package, so the pages load nothing from outside the service.
"""

from __future__ import annotations

from grainproof.api.desk.controller import DESK_ROUTES

__all__ = ["DESK_ROUTES"]

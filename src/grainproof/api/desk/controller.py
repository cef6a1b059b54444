"""The auditor's desk: server-rendered pages over the same services as the API.

Auditors log in as named people (username and password, `grainproof users create`) and get a
signed HttpOnly session cookie (see `session.py`); API keys are for machines. The API's key
middleware skips these routes (`exclude_from_auth`); every handler checks the session itself,
and every form carries a CSRF token tied to it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode
from zoneinfo import ZoneInfo

import anyio
from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Stream
from litestar.static_files import create_static_files_router

from grainproof.api.desk.pages import (
    DECISION_LABELS,
    ZONE_COOKIE,
    QueueQuery,
    display_zone,
    export_rows,
    local_time,
    lot_map,
    lot_page,
    queue_page,
)
from grainproof.api.desk.session import (
    COOKIE_NAME,
    SESSION_SECONDS,
    csrf_ok,
    csrf_token,
    decode_session,
    encode_session,
    new_session,
    peek_user_id,
    session_secret,
)
from grainproof.api.runtime import Runtime
from grainproof.api.services.verifications import record_review
from grainproof.errors import GrainproofError, NotFoundError
from grainproof.monitor.calibration import DIMENSIONS
from grainproof.store.database import read_scope, session_scope
from grainproof.store.tables import USER_ROLES, UserAccount
from grainproof.store.users import AccountDisabledError, LoginAttempt, TooManyLoginsError, log_in

DESK_ROLES = USER_ROLES
_HERE = Path(__file__).parent
#: Pages load nothing from elsewhere: no CDN, no inline script.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _p_value(value: float | None) -> str:
    """p-values as people read them: three significant digits, tiny ones as '< 0.001'."""
    if value is None:
        return "—"
    if value < 0.001:
        return "< 0.001"
    return f"{value:.3g}"


@pass_context
def _when(context: Context, text: str | datetime | None) -> str:
    """A moment in the zone the page is shown in (`zone` in the page's context; UTC when absent)."""
    return local_time(text, context.get("zone") or ZoneInfo("UTC"))


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


_templates = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters.update(p=_p_value, when=_when, share=_share)


class LoginRequiredError(Exception):
    """No valid desk session: the browser is sent to the login page (and comes back after)."""

    def __init__(self, next_path: str) -> None:
        super().__init__("login required")
        self.next_path = next_path


def _render(
    template: str, *, status_code: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> Response[str]:
    html = _templates.get_template(template).render(**context)
    return Response(
        html, media_type=MediaType.HTML, status_code=status_code, headers={**_SECURITY_HEADERS, **(headers or {})}
    )


def _zone(request: Request[Any, Any, Any], runtime: Runtime) -> ZoneInfo:
    # The script URL-encodes the name ("Europe%2FParis").
    return display_zone(unquote(request.cookies.get(ZONE_COOKIE) or ""), runtime.settings.desk_timezone)


def _safe_next(path: str | None) -> str:
    """Only ever redirect back into the desk (never to another site after login)."""
    if path and path.startswith("/desk") and not path.startswith("//") and "\\" not in path:
        return path
    return "/desk/"


def _to_login(request: Request[Any, Any, Any], exc: LoginRequiredError) -> Response[Any]:
    response: Response[Any] = Redirect(f"/desk/login?{urlencode({'next': exc.next_path})}")
    response.delete_cookie(COOKIE_NAME, path="/desk")
    return response


def _error_page(request: Request[Any, Any, Any], exc: GrainproofError) -> Response[str]:
    """The problem in a sentence, inside the desk's frame: the navigation stays when someone is logged in."""
    runtime: Runtime = request.app.state.runtime
    try:
        user, cookie = _current_user(request, runtime)
        csrf = _csrf(runtime, cookie)
    except LoginRequiredError:
        user, csrf = None, ""
    back = request.url.path.rsplit("/reviews", 1)[0] if request.url.path.endswith("/reviews") else None
    return _render(
        "error.html",
        status_code=exc.status_code,
        message=str(exc),
        not_found=isinstance(exc, NotFoundError),
        back=back,
        user=user,
        csrf=csrf,
        zone=_zone(request, runtime),
    )


def _current_user(
    request: Request[Any, Any, Any], runtime: Runtime, *, return_to: str | None = None
) -> tuple[UserAccount, str]:
    """The logged-in account and its session cookie; LoginRequiredError when there is no valid session.

    After logging in the browser comes back to `return_to` (default: this page); a form post
    passes the page the form was on, since the login redirect can only repeat a GET.
    """
    next_path = return_to or request.url.path + (f"?{request.url.query}" if request.url.query else "")
    cookie = request.cookies.get(COOKIE_NAME)
    user_id = peek_user_id(cookie) if cookie else None
    if cookie is None or user_id is None:
        raise LoginRequiredError(next_path)
    with read_scope(runtime.engine) as session:
        user = session.get(UserAccount, user_id)
    if user is None or user.disabled_at is not None or user.role not in DESK_ROLES:
        raise LoginRequiredError(next_path)
    if decode_session(cookie, secret=session_secret(runtime.settings), bound_to=user.password_hash) is None:
        raise LoginRequiredError(next_path)
    return user, cookie


def _csrf(runtime: Runtime, cookie: str) -> str:
    return csrf_token(cookie, secret=session_secret(runtime.settings))


def _check_csrf(runtime: Runtime, cookie: str, token: Any) -> None:
    if not csrf_ok(token if isinstance(token, str) else None, cookie, secret=session_secret(runtime.settings)):
        raise GrainproofError("This form has expired or did not come from the desk; reload the page and try again.")


def _queue_query(
    status: FromQuery[str] = "open",
    flagged: FromQuery[str] = "flagged",
    site: FromQuery[str] = "",
    variety: FromQuery[str] = "",
    check: FromQuery[str] = "",
    date_from: FromQuery[str] = "",
    date_to: FromQuery[str] = "",
    sort: FromQuery[str] = "newest",
    page: FromQuery[int] = 1,
) -> QueueQuery:
    """The queue's filters from the query string: the page and its CSV export read the same ones."""
    return QueueQuery(
        status=status,
        flagged=flagged,
        site=site,
        variety=variety,
        check=check,
        date_from=date_from,
        date_to=date_to,
        sort=sort,
        page=page,
    )


class DeskController(Controller):
    """Pages for auditors: log in, the queue of flagged lots, one lot's evidence and the decision form."""

    path = "/desk"
    include_in_schema = False
    opt = {"exclude_from_auth": True}  # noqa: RUF012 - litestar reads this class attribute
    exception_handlers = {LoginRequiredError: _to_login, GrainproofError: _error_page}  # noqa: RUF012
    dependencies = {"queue_query": Provide(_queue_query, sync_to_thread=False)}  # noqa: RUF012

    @get("/login", sync_to_thread=False)
    def login_form(self, next: FromQuery[str | None] = None) -> Response[str]:
        return _render("login.html", next=_safe_next(next), error=None, username="", user=None, csrf="")

    @post("/login", status_code=303)
    async def login(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Response[Any]:
        form = await request.form()
        username = str(form.get("username") or "").strip().lower()
        password = str(form.get("password") or "")
        target = _safe_next(str(form.get("next") or ""))

        def refuse(status: int, error: str, headers: dict[str, str] | None = None) -> Response[Any]:
            return _render(
                "login.html",
                status_code=status,
                headers=headers,
                next=target,
                error=error,
                username=username,
                user=None,
                csrf="",
            )

        if not username or not password:
            return refuse(401, "Enter your username and password.")
        address = request.client.host if request.client else "unknown"
        attempt = LoginAttempt(username=username, address=address)
        try:
            user = await anyio.to_thread.run_sync(lambda: log_in(runtime.engine, attempt, password))
        except TooManyLoginsError as exc:
            return refuse(429, str(exc), {"Retry-After": str(exc.retry_after_s)})
        except AccountDisabledError as exc:
            return refuse(403, str(exc))
        if user is None or user.id is None:
            return refuse(401, "Wrong username or password.")
        cookie = encode_session(
            new_session(user.id), secret=session_secret(runtime.settings), bound_to=user.password_hash
        )
        response: Response[Any] = Redirect(target, status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            cookie,
            max_age=SESSION_SECONDS,
            path="/desk",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Response[Any]:
        form = await request.form()
        cookie = request.cookies.get(COOKIE_NAME)
        if cookie:
            _check_csrf(runtime, cookie, form.get("csrf_token"))
        response: Response[Any] = Redirect("/desk/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/desk")
        return response

    @get("/", sync_to_thread=True)
    def queue(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        queue_query: NamedDependency[QueueQuery],
    ) -> Response[str]:
        user, cookie = _current_user(request, runtime)
        zone = _zone(request, runtime)
        with read_scope(runtime.engine) as session:
            context = queue_page(runtime, session, queue_query, caller=user, zone=zone)
        return _render("queue.html", user=user, csrf=_csrf(runtime, cookie), urlencode=urlencode, zone=zone, **context)

    @get("/queue.csv", sync_to_thread=True)
    def queue_csv(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        queue_query: NamedDependency[QueueQuery],
    ) -> Stream:
        """Every lot the queue's filters match (all pages, whatever `page` says), in the queue's order, as CSV."""
        user, _ = _current_user(request, runtime)
        zone = _zone(request, runtime)

        def lines() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\r\n")
            with read_scope(runtime.engine) as session:
                for row in export_rows(runtime, session, queue_query, caller=user, zone=zone):
                    writer.writerow(row)
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()

        stamp = datetime.now(zone).strftime("%Y%m%d-%H%M")
        return Stream(
            lines(),
            media_type="text/csv; charset=utf-8",
            headers={
                **_SECURITY_HEADERS,
                "Content-Disposition": f'attachment; filename="grainproof-queue-{stamp}.csv"',
            },
        )

    @get("/lots/{verification_id:str}", sync_to_thread=True)
    def lot(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        verification_id: FromPath[str],
        recorded: FromQuery[str | None] = None,
    ) -> Response[str]:
        user, cookie = _current_user(request, runtime)
        with read_scope(runtime.engine) as session:
            context = lot_page(runtime, session, verification_id, caller=user)
        return _render(
            "lot.html",
            user=user,
            csrf=_csrf(runtime, cookie),
            recorded=DECISION_LABELS.get(recorded or ""),
            quote=quote,
            zone=_zone(request, runtime),
            **context,
        )

    @post("/lots/{verification_id:str}/reviews", status_code=303)
    async def review(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], verification_id: FromPath[str]
    ) -> Response[Any]:
        lot_page_path = f"/desk/lots/{quote(verification_id)}"
        user, cookie = await anyio.to_thread.run_sync(lambda: _current_user(request, runtime, return_to=lot_page_path))
        form = await request.form()
        _check_csrf(runtime, cookie, form.get("csrf_token"))
        decision = str(form.get("decision") or "")
        if not decision:
            raise GrainproofError("Choose a decision (confirmed fraud, false alarm, inconclusive) before recording.")
        note = str(form.get("note") or "").strip()
        promote = str(form.get("promote_to_reference") or "") == "yes"
        # The same service as POST /v1/verifications/{id}/reviews: same checks, same audit entry.
        await anyio.to_thread.run_sync(
            lambda: record_review(
                runtime, verification_id, decision=decision, note=note, promote_to_reference=promote, caller=user
            )
        )
        return Redirect(f"{lot_page_path}?{urlencode({'recorded': decision})}", status_code=303)

    @get("/monitor", sync_to_thread=True)
    def monitor(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], acknowledged: FromQuery[str] = ""
    ) -> Response[str]:
        """The calibration monitor: alerts (with acknowledgement), weekly flag-rate plots, blind audits, staleness."""
        from grainproof.api.services.monitor import blind_audit_report, monitor_alerts, staleness_report

        user, cookie = _current_user(request, runtime)
        with read_scope(runtime.engine) as session:
            alerts = monitor_alerts(session, runtime.settings)
            audit = blind_audit_report(session, runtime.settings)
            staleness = staleness_report(session)
        return _render(
            "monitor.html",
            user=user,
            csrf=_csrf(runtime, cookie),
            zone=_zone(request, runtime),
            alerts=alerts,
            audit=audit,
            staleness=staleness,
            settings=runtime.settings,
            acknowledged=acknowledged,
            dimensions=DIMENSIONS,
        )

    @get("/monitor/plots/{filename:str}", sync_to_thread=True)
    def monitor_plot(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], filename: FromPath[str]
    ) -> Response[bytes]:
        """`DIMENSION.png`: the weekly flag rate of that dimension's groups against alpha."""
        from grainproof.api.services.monitor import weekly_rate_png

        _current_user(request, runtime)
        with read_scope(runtime.engine) as session:
            png = weekly_rate_png(session, runtime.settings, dimension=filename.removesuffix(".png"))
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @post("/monitor/acknowledge", status_code=303)
    async def acknowledge(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Response[Any]:
        from grainproof.api.services.monitor import acknowledge_alert

        user, cookie = await anyio.to_thread.run_sync(
            lambda: _current_user(request, runtime, return_to="/desk/monitor")
        )
        form = await request.form()
        _check_csrf(runtime, cookie, form.get("csrf_token"))
        key = str(form.get("alert_key") or "")
        note = str(form.get("note") or "").strip()
        # The same service as POST /v1/monitor/alerts/{key}/acknowledge: same checks, same audit entry.
        await anyio.to_thread.run_sync(lambda: acknowledge_alert(runtime, key, note=note, caller=user))
        return Redirect(f"/desk/monitor?{urlencode({'acknowledged': key})}", status_code=303)

    @get("/lots/{verification_id:str}/map.png", sync_to_thread=True)
    def lot_map_image(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], verification_id: FromPath[str]
    ) -> Response[bytes]:
        user, _ = _current_user(request, runtime)
        with session_scope(runtime.engine) as session:
            path = lot_map(runtime, session, verification_id, caller=user)
        return Response(path.read_bytes(), media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    @get("/photos/{digest:str}", sync_to_thread=True)
    def photo(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], digest: FromPath[str]
    ) -> Response[bytes]:
        _current_user(request, runtime)
        try:
            data = runtime.photos.get(digest)
        except ValueError:
            data = None
        if data is None:
            raise NotFoundError(f"No photo with sha256 {digest!r} is stored.")
        kind = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
        return Response(data, media_type=kind, headers={"Cache-Control": "private, max-age=31536000, immutable"})

    @get("/{unknown:path}", sync_to_thread=True)
    def not_found(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], unknown: FromPath[str]
    ) -> None:
        """Any other desk address: a page that says so, with the navigation (after login)."""
        _current_user(request, runtime)
        raise NotFoundError(f"There is no desk page at {request.url.path}.")


@get("/", include_in_schema=False, exclude_from_auth=True, sync_to_thread=False)
def home() -> Redirect:
    """People who open the service's address land on the desk (API clients use /v1 and /schema)."""
    return Redirect("/desk/")


#: Everything the desk adds to the app: its pages, its static files and the redirect from "/".
DESK_ROUTES: list[Any] = [
    DeskController,
    home,
    create_static_files_router(
        path="/desk/static",
        directories=[_HERE / "static"],
        opt={"exclude_from_auth": True},
        include_in_schema=False,
        name="desk-static",
    ),
]

"""Service commands: serve, db, keys, audit, export (thin shells over grainproof.store and the API services)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from pathlib import Path

import typer
from rich.table import Table

from grainproof.cli import app
from grainproof.cli._output import json_option, print_json
from grainproof.errors import GrainproofError
from grainproof.progress import console, err_console

db_app = typer.Typer(help="Database schema: migrate up or down, show the current migration.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: create (the key is printed once), list, revoke.", no_args_is_help=True)
users_app = typer.Typer(
    help="Named accounts for the auditor's desk: create, list, disable, enable, set a password.", no_args_is_help=True
)
audit_app = typer.Typer(help="The hash-chained audit log of verifications and reviews.", no_args_is_help=True)
export_app = typer.Typer(help="Export verifications to traceability formats.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(audit_app, name="audit")
app.add_typer(export_app, name="export")


def _engine(*, must_exist: bool = True):  # type: ignore[no-untyped-def]
    """The engine of the configured database; unless `must_exist` is False, a SQLite file must be there already."""
    from grainproof.settings import get_settings
    from grainproof.store.database import create_db_engine

    return create_db_engine(get_settings(), must_exist=must_exist)


def _migrated_engine(*, create: bool = False):  # type: ignore[no-untyped-def]
    """The engine, checked to be at the newest migration; `create` first creates and migrates a database that
    is not there or was never migrated (otherwise a missing database is an error, not a new empty one)."""
    from grainproof.store.database import current_revision, require_current_schema, upgrade

    engine = _engine(must_exist=not create)
    if create and current_revision(engine) is None:
        upgrade(engine)  # a fresh install: the first admin key or reference import sets the database up
    require_current_schema(engine)
    return engine


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, help="TCP port."),
    migrate: bool = typer.Option(True, help="Upgrade the database schema at start-up."),
    warm: bool = typer.Option(True, help="Load the photo embedder at start-up (in the background)."),
    workers: int = typer.Option(1, help="Worker processes (production: 2 or more; each loads the model once)."),
) -> None:
    """Start the verification service (data in GRAINPROOF_DATA_DIR, or GRAINPROOF_DATABASE_URL)."""
    import uvicorn

    from grainproof.api import create_app
    from grainproof.settings import get_settings

    settings = get_settings()
    err_console.print(f"grainproof: data in {settings.data_dir}, API description at http://{host}:{port}/schema")
    if workers < 1:
        raise GrainproofError(f"--workers must be at least 1 (got {workers}).")
    if workers > 1:
        # Workers each build the app from the environment (the app factory); migrate once here first.
        from grainproof.scale.server import serve_workers

        if migrate:
            from grainproof.store.database import create_db_engine, upgrade

            engine = create_db_engine(settings)
            upgrade(engine)
            engine.dispose()
        serve_workers(host=host, port=port, workers=workers)
        return
    app_instance = create_app(settings, migrate=migrate, warm_embedder=warm)
    uvicorn.run(app_instance, host=host, port=port, log_level="info")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target migration (default: the newest).")) -> None:
    """Migrate the database up (creates it when absent)."""
    from grainproof.store.database import current_revision, upgrade

    engine = _engine(must_exist=False)
    upgrade(engine, revision)
    console.print(f"database at migration {current_revision(engine)} ({engine.url.render_as_string()})")


@db_app.command("downgrade")
def db_downgrade(
    revision: str = typer.Argument(..., help="Target migration; `base` removes every table."),
    yes: bool = typer.Option(False, "--yes", help="Confirm: downgrading drops tables and their data."),
) -> None:
    """Migrate the database down (destroys the data of the tables it drops)."""
    from grainproof.store.database import current_revision, downgrade

    if not yes:
        raise GrainproofError("Downgrading drops tables and their data; add --yes to confirm.")
    engine = _engine()
    downgrade(engine, revision)
    console.print(f"database at migration {current_revision(engine) or 'none'}")


@db_app.command("status")
def db_status() -> None:
    """Show the database URL and its migration against the newest one."""
    from grainproof.store.database import current_revision, head_revision

    engine = _engine()
    current = current_revision(engine)
    console.print(f"{engine.url.render_as_string()}: at {current or 'none'}, newest {head_revision()}")


@keys_app.command("create")
def keys_create(
    role: str = typer.Option(..., help="intake (verify, read own), auditor (read all, review) or admin."),
    name: str = typer.Option("", help="A label: who or what uses the key."),
    site: str = typer.Option(None, help="The intake site the key belongs to (filters the queue)."),
) -> None:
    """Create an API key and print it once (only its sha256 is stored)."""
    from grainproof.store.database import session_scope
    from grainproof.store.keys import create_key

    with session_scope(_migrated_engine(create=True)) as session:
        key, secret = create_key(session, role=role, name=name, site=site)
    err_console.print(f"created {role} key #{key.id}; store it now, it is not shown again:")
    console.print(secret, highlight=False)


@keys_app.command("list")
def keys_list(as_json: bool = json_option()) -> None:
    """List API keys (never their secrets)."""
    from grainproof.store.database import session_scope
    from grainproof.store.keys import list_keys

    with session_scope(_migrated_engine()) as session:
        keys = [
            {
                "id": key.id,
                "prefix": key.prefix,
                "role": key.role,
                "name": key.name,
                "site": key.site,
                "created": key.created_at.isoformat(timespec="seconds"),
                "revoked": key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else None,
            }
            for key in list_keys(session)
        ]
    if as_json:
        print_json(keys)
        return
    table = Table("id", "prefix", "role", "name", "site", "created", "revoked")
    for key in keys:
        table.add_row(
            str(key["id"]),
            f"{key['prefix']}…",
            str(key["role"]),
            str(key["name"]),
            str(key["site"] or ""),
            str(key["created"]),
            str(key["revoked"] or ""),
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: int = typer.Argument(..., help="The key's id (see `grainproof keys list`).")) -> None:
    """Revoke an API key; requests with it get 401 from now on."""
    from grainproof.store.database import session_scope
    from grainproof.store.keys import revoke_key

    with session_scope(_migrated_engine()) as session:
        revoke_key(session, key_id)
    console.print(f"key #{key_id} revoked")


def _read_password(prompt: str) -> str:
    """A password from the terminal (typed twice, not echoed) or the first line of stdin: never from argv."""
    import getpass
    import sys

    if sys.stdin.isatty():
        password = getpass.getpass(f"{prompt}: ")
        if getpass.getpass("Again: ") != password:
            raise GrainproofError("The two passwords differ; nothing was changed.")
        return password
    return sys.stdin.readline().rstrip("\r\n")


@users_app.command("create")
def users_create(
    username: str = typer.Argument(..., help="The person's username (lower-case letters, digits, '.', '_', '-')."),
    role: str = typer.Option("auditor", help="auditor (reads every lot, records decisions) or admin."),
) -> None:
    """Create a desk account; the password is read from the terminal or stdin (never from the command line)."""
    from grainproof.store.database import session_scope
    from grainproof.store.users import check_username, create_user

    engine = _migrated_engine(create=True)
    check_username(username)  # before asking for a password
    password = _read_password(f"Password for {username}")
    with session_scope(engine) as session:
        user = create_user(session, username=username, password=password, role=role)
    console.print(f"created {user.role} account {user.username!r}; it logs in at /desk/login")


@users_app.command("list")
def users_list() -> None:
    """List desk accounts (never their password hashes)."""
    from grainproof.store.database import session_scope
    from grainproof.store.users import list_users

    table = Table("username", "role", "created", "disabled")
    with session_scope(_migrated_engine()) as session:
        for user in list_users(session):
            table.add_row(
                user.username,
                user.role,
                user.created_at.isoformat(timespec="seconds"),
                user.disabled_at.isoformat(timespec="seconds") if user.disabled_at else "",
            )
    console.print(table)


@users_app.command("disable")
def users_disable(username: str = typer.Argument(..., help="The account to disable.")) -> None:
    """Disable an account: it cannot log in and its open desk sessions end (its decisions keep its name)."""
    from grainproof.store.database import session_scope
    from grainproof.store.users import disable_user

    with session_scope(_migrated_engine()) as session:
        disable_user(session, username)
    console.print(f"account {username!r} disabled")


@users_app.command("enable")
def users_enable(username: str = typer.Argument(..., help="The account to enable again.")) -> None:
    """Enable a disabled account."""
    from grainproof.store.database import session_scope
    from grainproof.store.users import enable_user

    with session_scope(_migrated_engine()) as session:
        enable_user(session, username)
    console.print(f"account {username!r} enabled")


@users_app.command("password")
def users_password(username: str = typer.Argument(..., help="The account whose password to set.")) -> None:
    """Set a new password (read from the terminal or stdin); the account's open desk sessions end."""
    from grainproof.store.database import session_scope
    from grainproof.store.users import find_user, set_password

    engine = _migrated_engine()
    with session_scope(engine) as session:
        if find_user(session, username) is None:
            raise GrainproofError(f"No account {username!r}; `grainproof users list` shows them.")
    password = _read_password(f"New password for {username}")
    with session_scope(engine) as session:
        set_password(session, username, password)
    console.print(f"password of {username!r} changed; its desk sessions have ended")


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit chain; exits 1 naming the first entry altered or removed."""
    from grainproof.store.audit import verify_chain
    from grainproof.store.database import session_scope

    with session_scope(_migrated_engine()) as session:
        report = verify_chain(session)
    if report.ok:
        console.print(f"audit log intact: {report.entries} entries, every link and record matches")
        return
    err_console.print(f"[bold red]audit log check failed:[/] {report.problem}", highlight=False)
    raise typer.Exit(1)


@export_app.command("epcis")
def export_epcis(
    out: Path = typer.Option(None, "--out", "-o", help="Write the EPCIS document here (default: stdout)."),
    verification_id: list[str] = typer.Option(None, "--id", help="Export these verifications (repeatable)."),
    flagged: bool = typer.Option(None, "--flagged/--not-flagged", help="Only flagged (or unflagged) lots."),
    site: str = typer.Option(None, help="Only this intake site."),
    since: str = typer.Option(None, help="Only events at or after this date or moment (2026-12-01, or RFC 3339)."),
    until: str = typer.Option(None, help="Only events at or before this date (the whole day) or moment."),
    cursor: str = typer.Option(None, help="Continue after an earlier export (the cursor it printed)."),
    limit: int = typer.Option(500, min=1, help="At most this many events; says so when more match."),
) -> None:
    """Export verifications and reviews as an EPCIS 2.0 JSON-LD document, in the order they were stored.

    Each verification is an inspection event (disposition from the verdict), each review a later event with
    the auditor's disposition. Lots whose claim has no `gtin` need GRAINPROOF_GS1_GTIN.
    """
    import msgspec

    from grainproof.api.epcis import epcis_document
    from grainproof.api.services.verifications import (
        MAX_PAGE,
        EventFilter,
        TraceEvent,
        get_verification,
        trace_events,
    )
    from grainproof.settings import get_settings
    from grainproof.store.database import session_scope
    from grainproof.store.tables import ApiKey, utc_now

    start, end = _moment(since, "--since"), _moment(until, "--until", end_of_day=True)
    auditor = ApiKey(key_hash="", prefix="cli", role="auditor")  # the CLI reads the database directly
    events: list[TraceEvent] = []
    more, next_cursor = False, cursor
    with session_scope(_migrated_engine()) as session:
        for vid in verification_id or []:
            get_verification(session, vid, caller=auditor)  # a clear error for an unknown id
            events += trace_events(session, EventFilter(verification_id=vid, limit=MAX_PAGE), caller=auditor).events
        while not verification_id:
            query = EventFilter(
                flagged=flagged,
                site=site,
                since=start,
                until=end,
                cursor=next_cursor,
                limit=min(MAX_PAGE, limit - len(events)),
            )
            page = trace_events(session, query, caller=auditor)
            events += page.events
            more, next_cursor = page.has_more, page.next_cursor
            if not more or len(events) >= limit:
                break
    document = epcis_document(events, settings=get_settings(), created=utc_now())
    text = json.dumps(msgspec.to_builtins(document), indent=2, ensure_ascii=False)
    if out is None:
        console.print_json(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        err_console.print(f"{len(events)} event(s) written to {out}")
    if more:
        err_console.print(
            f"[bold yellow]Stopped at the limit of {limit} events; more match.[/] Raise --limit, or continue with "
            f"--cursor {next_cursor}",
            highlight=False,
        )
    elif not verification_id:
        err_console.print(
            f"All matching events exported; next time, continue with --cursor {next_cursor}", highlight=False
        )


def _moment(text: str | None, option: str, *, end_of_day: bool = False) -> datetime | None:
    """A date (the start, or with `end_of_day` the end, of that day in UTC) or an RFC 3339 moment, in UTC."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime.combine(day, time.max if end_of_day else time.min, UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise GrainproofError(
            f"{option} {text!r} is neither a date (2026-12-01) nor a moment (2026-12-01T08:00Z)."
        ) from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


@db_app.command("import-reference")
def db_import_reference(
    manifest: Path = typer.Argument(..., help="A lot manifest with f_* columns (from `grainproof embed`)."),
    units: Path = typer.Option(None, help="The units sidecar .npz (default: <manifest stem>.units.npz if present)."),
    photos: bool = typer.Option(
        True, help="Store the photos the manifest names (paths relative to it) for the auditor's desk."
    ),
) -> None:
    """Add a manifest's lots to the service's reference lots (all or nothing), with their photos."""
    import numpy as np

    from grainproof.api.runtime import Runtime
    from grainproof.api.services.references import import_reference_manifest
    from grainproof.settings import get_settings

    if not manifest.is_file():
        raise GrainproofError(f"{manifest} does not exist.")
    sidecar = units or manifest.with_name(f"{manifest.stem}.units.npz")
    unit_arrays = None
    if sidecar.is_file():
        with np.load(sidecar, allow_pickle=False) as archive:
            unit_arrays = {key: np.asarray(archive[key]) for key in archive.files}

    def photo_file(path: str) -> bytes | None:
        file = manifest.parent / path
        return file.read_bytes() if file.is_file() else None

    runtime = Runtime.open(get_settings(), engine=_migrated_engine(create=True))
    try:
        result = import_reference_manifest(
            runtime,
            manifest.read_text(encoding="utf-8-sig"),
            name=str(manifest),
            units=unit_arrays,
            photos=photo_file if photos else None,
        )
    finally:
        runtime.close()
    console.print(
        f"imported {result['imported']} reference lots ({result['dim']} features each, {result['photos']} photos)"
    )


@db_app.command("build-model")
def db_build_model(
    seed: int = typer.Option(None, help="Seed of the build (default: GRAINPROOF_SEED)."),
    region_set: str = typer.Option(None, help="Region set of the origin units (default: GRAINPROOF_REGION_SET)."),
    activate: bool = typer.Option(False, "--activate", help="Make the new version the active one when ready."),
) -> None:
    """Build a reference model version from the service's reference lots (in the foreground)."""
    from grainproof.api.runtime import Runtime
    from grainproof.api.services.references import activate_model, request_model_build
    from grainproof.settings import get_settings

    runtime = Runtime.open(get_settings(), engine=_migrated_engine())
    try:
        view = request_model_build(runtime, caller=None, seed=seed, region_set=region_set, background=False)
        if view["status"] != "ready":
            raise GrainproofError(f"The model build failed: {view['error']}")
        if activate:
            view = activate_model(runtime, view["id"])
    finally:
        runtime.close()
    state = "active" if view["is_active"] else "ready (activate with the API or --activate)"
    console.print(f"model {view['id']} version {view['version']}: {view['lot_count']} lots, {state}")

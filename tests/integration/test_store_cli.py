"""The service's CLI: `db upgrade/downgrade/status`, `keys create/list/revoke`, `users create/list/disable/
enable/password`, `audit verify` (fails naming the edited entry), `db import-reference` (with the manifest's
photos) + `db build-model`, `export epcis`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from service_support import claim, make_world, reference_manifest, reference_photos, write_text
from sqlmodel import select
from typer.testing import CliRunner

from grainproof.cli import app
from grainproof.settings import get_settings
from grainproof.store.keys import hash_key

runner = CliRunner()


def _run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=stdin)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_keys_create_prints_the_key_once_and_stores_only_its_hash(data_dir: Path) -> None:
    code, output = _run("keys", "create", "--role", "auditor", "--name", "desk")
    assert code == 0
    secret = next(line.strip() for line in output.splitlines() if line.strip().startswith("gp_"))
    database = (data_dir / "grainproof.db").read_bytes()
    assert secret.encode() not in database
    rows = sqlite3.connect(data_dir / "grainproof.db").execute("SELECT key_hash, role FROM api_key").fetchall()
    assert rows == [(hash_key(secret), "auditor")]
    code, listed = _run("keys", "list")
    assert code == 0 and "auditor" in listed and secret not in listed
    code, listed_json = _run("keys", "list", "--json")
    assert code == 0 and [(k["id"], k["role"], k["name"]) for k in json.loads(listed_json)] == [(1, "auditor", "desk")]
    assert _run("keys", "revoke", "1")[0] == 0


def test_users_create_reads_the_password_from_stdin_and_stores_only_an_argon2_hash(data_dir: Path) -> None:
    from grainproof.store.database import create_db_engine, session_scope
    from grainproof.store.users import password_matches

    password = "a long enough secret"
    code, output = _run("users", "create", "carol", "--role", "auditor", stdin=password + "\n")
    assert code == 0 and "created auditor account 'carol'" in output
    database = (data_dir / "grainproof.db").read_bytes()
    assert password.encode() not in database
    rows = sqlite3.connect(data_dir / "grainproof.db").execute("SELECT username, password_hash FROM user_account")
    [(username, stored)] = rows.fetchall()
    assert username == "carol" and stored.startswith("$argon2id$")
    code, listed = _run("users", "list")
    assert code == 0 and "carol" in listed and "argon2" not in listed
    assert _run("users", "disable", "carol")[0] == 0
    assert "carol" in _run("users", "list")[1] and _run("users", "enable", "carol")[0] == 0
    assert _run("users", "password", "carol", stdin="another long secret\n")[0] == 0
    engine = create_db_engine(get_settings())
    with session_scope(engine) as session:
        from grainproof.store.users import find_user

        assert password_matches(find_user(session, "carol"), "another long secret")
        assert not password_matches(find_user(session, "carol"), password)
    engine.dispose()


def test_users_create_refuses_short_passwords_bad_names_and_reused_names(data_dir: Path) -> None:
    short = runner.invoke(app, ["users", "create", "dave"], input="short\n")
    assert "too short" in str(short.exception)
    bad = runner.invoke(app, ["users", "create", "Dave Smith"], input="long enough password\n")
    assert "cannot be used" in str(bad.exception)
    assert _run("users", "create", "dave", stdin="long enough password\n")[0] == 0
    again = runner.invoke(app, ["users", "create", "dave"], input="long enough password\n")
    assert "already an account 'dave'" in str(again.exception)
    assert "no such option" in runner.invoke(app, ["users", "create", "erin", "--password", "x" * 20]).output.lower()


def test_import_reference_stores_the_photos_the_manifest_names(data_dir: Path, tmp_path: Path) -> None:
    from grainproof.store.database import create_db_engine, session_scope
    from grainproof.store.tables import ReferenceLot

    photos = reference_photos()
    for path, data in photos.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    manifest = write_text(tmp_path / "reference.csv", reference_manifest(make_world(), with_photos=True))
    code, output = _run("db", "import-reference", str(manifest))
    assert code == 0 and "imported 240" in output and "240 photos" in output
    engine = create_db_engine(get_settings())
    with session_scope(engine) as session:
        row = session.exec(select(ReferenceLot).where(ReferenceLot.lot_id == "ref0000")).one()
        [digest] = json.loads(row.photo_hashes_json)
    engine.dispose()
    assert (data_dir / "photos" / digest[:2] / digest).read_bytes() in photos.values()


def test_import_reference_names_every_missing_photo_and_writes_nothing(data_dir: Path, tmp_path: Path) -> None:
    manifest = write_text(tmp_path / "reference.csv", reference_manifest(make_world(), with_photos=True))
    result = runner.invoke(app, ["db", "import-reference", str(manifest)])
    assert "photo 'photos/51-2023.jpg' was not found" in str(result.exception)
    assert "240 problem(s)" in str(result.exception)
    rows = sqlite3.connect(data_dir / "grainproof.db").execute("SELECT count(*) FROM reference_lot").fetchone()
    assert rows == (0,)
    code, output = _run("db", "import-reference", str(manifest), "--no-photos")
    assert code == 0 and "0 photos" in output


def test_unknown_role_is_a_clear_error(data_dir: Path) -> None:
    result = runner.invoke(app, ["keys", "create", "--role", "boss"])
    assert "Unknown role 'boss'" in str(result.exception)


def test_db_upgrade_status_and_downgrade(data_dir: Path) -> None:
    from grainproof.store.database import head_revision

    head = head_revision()
    code, output = _run("db", "upgrade")
    assert code == 0 and f"migration {head}" in output
    assert f"at {head}, newest {head}" in _run("db", "status")[1].replace("\n", "")
    assert "add --yes" in str(runner.invoke(app, ["db", "downgrade", "base"]).exception)
    code, output = _run("db", "downgrade", "base", "--yes")
    assert code == 0 and "none" in output


def test_commands_on_an_unmigrated_database_say_to_upgrade(data_dir: Path) -> None:
    result = runner.invoke(app, ["audit", "verify"])
    assert "grainproof db upgrade" in str(result.exception)


def test_checking_a_data_dir_without_a_database_creates_nothing_there(data_dir: Path) -> None:
    """A mistyped GRAINPROOF_DATA_DIR must not get an empty database that later looks like the real one."""
    for command in (["audit", "verify"], ["keys", "list"], ["db", "status"], ["export", "epcis"]):
        result = runner.invoke(app, command)
        assert result.exit_code != 0, command
        assert f"There is no grainproof database at {data_dir / 'grainproof.db'}" in str(result.exception), command
        assert not data_dir.exists(), f"{command} created {data_dir}"


def test_audit_verify_names_the_edited_entry_and_export_writes_epcis(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grainproof.api.runtime import Runtime
    from grainproof.api.schemas import parse_claim
    from grainproof.api.services.verifications import VerificationRequest, submit_verification
    from grainproof.store.database import session_scope
    from grainproof.store.keys import create_key

    world = make_world()
    manifest = write_text(tmp_path / "reference.csv", reference_manifest(world))
    assert _run("db", "upgrade")[0] == 0
    code, output = _run("db", "import-reference", str(manifest))
    assert code == 0 and "imported 240" in output
    code, output = _run("db", "build-model", "--activate")
    assert code == 0 and "active" in output, output
    runtime = Runtime.open(get_settings())
    with session_scope(runtime.engine) as session:
        intake, _ = create_key(session, role="intake")
    rng = np.random.default_rng(3)
    ids = []
    for i, origin in enumerate(("51", "64", "10")):
        request = VerificationRequest(
            claim=parse_claim(claim(f"cli-{i}", region="51")),
            lot_vector=np.asarray(world.vector("apache", origin, 2024, rng)),
        )
        ids.append(submit_verification(runtime, request, caller=intake).body["id"])
    runtime.close()

    code, output = _run("audit", "verify")
    assert code == 0 and "3 entries" in output
    out = tmp_path / "events.jsonld"
    refused = runner.invoke(app, ["export", "epcis", "--out", str(out)])
    assert "GRAINPROOF_GS1_GTIN" in str(refused.exception) and not out.exists()  # no made-up GTIN

    monkeypatch.setenv("GRAINPROOF_GS1_GTIN", "09506000134352")
    get_settings.cache_clear()
    code, output = _run("export", "epcis", "--out", str(out), "--flagged")
    document = json.loads(out.read_text())
    events = document["epcisBody"]["eventList"]
    assert code == 0 and events and all(e["grainproof:inspection"]["grainproof:flagged"] for e in events)
    assert {e["bizStep"] for e in events} == {"inspecting"} and {e["disposition"] for e in events} == {"non_conformant"}
    assert "Stopped at the limit" not in output and "--cursor" in output

    code, output = _run("export", "epcis", "--out", str(out), "--limit", "2")
    assert code == 0 and len(json.loads(out.read_text())["epcisBody"]["eventList"]) == 2
    assert "Stopped at the limit of 2 events" in output
    resume = output.split("--cursor")[-1].split()[0]
    code, output = _run("export", "epcis", "--out", str(out), "--cursor", resume)
    rest = json.loads(out.read_text())["epcisBody"]["eventList"]
    assert [e["eventID"] for e in rest] == [f"urn:uuid:{ids[2]}"]

    code, _ = _run("export", "epcis", "--out", str(out), "--until", "2000-01-01")
    assert code == 0 and json.loads(out.read_text())["epcisBody"]["eventList"] == []
    code, _ = _run("export", "epcis", "--out", str(out), "--since", "2000-01-01", "--until", "2999-12-31")
    assert len(json.loads(out.read_text())["epcisBody"]["eventList"]) == 3
    assert "neither a date" in str(runner.invoke(app, ["export", "epcis", "--since", "last week"]).exception)

    with sqlite3.connect(data_dir / "grainproof.db") as connection:
        connection.execute(
            "UPDATE audit_entry SET payload_json = replace(payload_json, 'cli-1', 'cli-9') WHERE seq = 2"
        )
    code, output = _run("audit", "verify")
    assert code == 1 and "Audit entry 2" in output and "altered" in output


def test_serve_starts_the_service_on_a_fresh_data_dir(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GRAINPROOF_DATA_DIR": str(tmp_path / "data")}
    env.pop("GRAINPROOF_DATABASE_URL", None)
    command = [
        sys.executable,
        "-c",
        "from grainproof.cli import main; main()",
        "serve",
        "--port",
        str(port),
        "--no-warm",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "grainproof serve did not start"
                time.sleep(0.2)
        assert health.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).json()["status"] == "ready"
        assert httpx.get(f"http://127.0.0.1:{port}/v1/verifications", timeout=5).status_code == 401
        assert (tmp_path / "data" / "grainproof.db").is_file()
    finally:
        process.terminate()
        process.wait(timeout=30)

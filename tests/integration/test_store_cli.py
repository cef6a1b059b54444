"""The service's CLI: `db upgrade/downgrade/status`, `keys create/list/revoke`, `audit verify`
(fails naming the edited entry), `db import-reference` + `db build-model`, `export epcis`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
from service_support import claim, make_world, reference_manifest, write_text
from typer.testing import CliRunner

from grainproof.cli import app
from grainproof.settings import get_settings
from grainproof.store.keys import hash_key

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
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


def test_unknown_role_is_a_clear_error(data_dir: Path) -> None:
    result = runner.invoke(app, ["keys", "create", "--role", "boss"])
    assert "Unknown role 'boss'" in str(result.exception)


def test_db_upgrade_status_and_downgrade(data_dir: Path) -> None:
    code, output = _run("db", "upgrade")
    assert code == 0 and "0001" in output
    assert "at 0001, newest 0001" in _run("db", "status")[1].replace("\n", "")
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


def test_audit_verify_names_the_edited_entry_and_export_writes_epcis(data_dir: Path, tmp_path: Path) -> None:
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
    code, _ = _run("export", "epcis", "--out", str(out), "--flagged")
    document = json.loads(out.read_text())
    events = document["epcisBody"]["eventList"]
    assert code == 0 and events and all(e["grainproof:verification"]["verdict"]["flagged"] for e in events)
    assert {e["bizStep"] for e in events} == {"inspecting"}

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

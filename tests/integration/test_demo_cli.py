"""`grainproof demo` end to end (with --no-serve, as tests and CI run it): it keeps everything under
GRAINPROOF_DATA_DIR, prints absolute paths, and its three keys work on the data it leaves."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest


def _demo(args: list[str], *, cwd: Path, data: Path) -> subprocess.CompletedProcess[str]:
    """`grainproof demo --no-serve --json ARGS` in `cwd`, its data under `data` (GRAINPROOF_DATA_DIR)."""
    env = {k: v for k, v in os.environ.items() if k != "GRAINPROOF_CACHE_DIR"}
    env["GRAINPROOF_DATA_DIR"] = str(data)
    command = [sys.executable, "-c", "from grainproof.cli import main; main()", "demo", "--no-serve", "--json", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_demo_stays_in_the_data_dir_and_its_printed_keys_work(tmp_path: Path) -> None:
    from litestar.testing import TestClient

    from grainproof.api import create_app
    from grainproof.settings import Settings

    cwd, data = tmp_path / "cwd", tmp_path / "data"
    cwd.mkdir()
    result = _demo(["--lots", "60", "--genuine", "1"], cwd=cwd, data=data)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    assert list(cwd.iterdir()) == [], "nothing written under the current directory when GRAINPROOF_DATA_DIR is set"
    assert printed["data_dir"] == str((data / "demo").resolve())
    assert printed["world_dir"] == str((data / "demo-world").resolve())
    assert printed["serving"] is False
    assert printed["serve_again"] == f"GRAINPROOF_DATA_DIR={printed['data_dir']} grainproof serve"
    assert printed["verdicts"], "the intake lots' verdicts are printed"

    # Each printed key works for its role on the data the demo left, as `grainproof serve` would serve it.
    settings = Settings(data_dir=Path(printed["data_dir"]), region_set="fr-departements")
    keys = {role: {"Authorization": f"Bearer {key}"} for role, key in printed["keys"].items()}
    with TestClient(create_app(settings, migrate=False)) as client:
        assert client.get("/v1/verifications", headers=keys["intake"]).status_code == 200
        flagged = client.get("/v1/verifications?flagged=true", headers=keys["auditor"])
        assert flagged.status_code == 200
        assert client.get("/v1/reference-models", headers=keys["admin"]).status_code == 200
        assert client.get("/v1/reference-models", headers=keys["intake"]).status_code == 403

    intake_call, auditor_call, admin_call = printed["api_examples"]
    words = shlex.split(intake_call)
    assert words[0] == "curl" and words[-1] == "http://127.0.0.1:8000/v1/verifications"
    photos = [w.removeprefix("photos=@") for w in words if w.startswith("photos=@")]
    assert photos and all(Path(p).is_absolute() and Path(p).is_file() for p in photos)
    assert printed["keys"]["intake"] in intake_call and printed["keys"]["auditor"] in auditor_call
    assert printed["keys"]["admin"] in admin_call


@pytest.mark.slow
def test_the_default_demo_flags_false_declarations_and_no_genuine_lot(tmp_path: Path) -> None:
    # The demo as `make demo` runs it (its default world of 400 lots, seed 0): deterministic, so its outcome is
    # fixed. It flags the far origin, the wrong season, the neighbouring origin (by the variety check read at
    # the declared origin) and the variety swap (4 of 7), none of the 3 genuine lots (README, docs/scoring.md).
    result = _demo([], cwd=tmp_path, data=tmp_path / "data")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)["verdicts"]
    genuine = [row for row in rows if row["truth"].startswith("genuine")]
    false = [row for row in rows if not row["truth"].startswith("genuine")]
    assert len(genuine) == 3 and len(false) == 7
    assert not [row["lot"] for row in genuine if row["flagged"] == "yes"]
    flagged = {row["truth"].split(" ")[0] for row in false if row["flagged"] == "yes"}
    assert {"far_origin", "wrong_season", "variety_swap"} <= flagged and len(flagged) >= 4, flagged

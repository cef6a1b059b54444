"""The CLI lists its commands and turns user errors into one clear line (no stack trace)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from grainproof.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_lists_commands() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert "manifest" in result.stdout


def test_bad_manifest_is_one_clear_error_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "lots.csv"
    bad.write_text("lot_id,species,variety,lon,lat,photos\nL1,barley,Planet,4.0,123,x.jpg\n")
    result = _run("manifest", "check", str(bad))
    assert result.returncode == 2
    assert "line 2" in result.stderr and "lat 123" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


#: Modules `--help` must not import: torch, timm and openvino cost seconds of start-up, litestar pulls in the web
#: stack, and numpy alone is half of what `--help` took before (import them inside the commands that use them).
HEAVY_MODULES = ("torch", "timm", "openvino", "litestar", "numpy")


def test_help_and_embed_help_import_no_heavy_module() -> None:
    script = (
        "import sys\n"
        "from grainproof.cli import main\n"
        "for args in (['--help'], ['embed', '--help']):\n"
        "    sys.argv = ['grainproof', *args]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, None), exit.code\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY_MODULES!r}))\n"
        "print('HEAVY:' + ','.join(heavy), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Embed every lot's photos" in result.stdout
    assert "HEAVY:\n" in result.stderr, f"--help imported {result.stderr.split('HEAVY:')[-1].strip()}"


def _every_command(group: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    commands = getattr(group, "commands", {})
    found = [path]
    for name, command in sorted(commands.items()):
        found += _every_command(command, (*path, name))
    return found


def test_every_help_shows_flags_as_flags() -> None:
    """A flag takes no value: its help line must not read `--overwrite <bool>`."""
    import typer
    from typer.testing import CliRunner

    from grainproof.cli import app

    runner = CliRunner()
    paths = _every_command(typer.main.get_command(app))
    assert ("regions", "import") in paths and ("bench", "embed") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, f"grainproof {' '.join(path)} --help: {result.output}"
    overwrite = runner.invoke(app, ["regions", "import", "--help"]).output
    assert any(line.split()[:1] == ["--overwrite"] and "Replace" in line for line in overwrite.splitlines())


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"grainproof {version('grainproof')}"


def test_impossible_coordinates_are_refused_with_a_sentence() -> None:
    lookup = _run("regions", "lookup", "200", "100")
    assert lookup.returncode == 2
    assert "Longitude 200 is outside [-180, 180]" in lookup.stderr and "Traceback" not in lookup.stderr
    show = _run("regions", "show", "--out", "never-written.png", "--lon", "4", "--lat", "95")
    assert show.returncode == 2 and "Latitude 95 is outside [-90, 90]" in show.stderr
    assert not Path("never-written.png").exists()


def test_regions_lookup_answers_in_json() -> None:
    result = _run("regions", "lookup", "4.03", "49.25", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["region"] == "51"


def test_manifest_check_lists_every_problem_of_every_row(tmp_path: Path) -> None:
    rows = ["L0,,Planet,abc,123,,2999-01-01,missing.jpg"]  # empty species, lon, lat, future date, missing photo
    rows += [f"L{i},barley,Planet,4,49,51,,gone{i}.jpg" for i in range(1, 61)]  # 60 more rows, one problem each
    path = tmp_path / "lots.csv"
    path.write_text("lot_id,species,variety,lon,lat,region,harvest_date,photos\n" + "\n".join(rows) + "\n")
    result = _run("manifest", "check", str(path))
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - line ")]
    assert len(problems) == 65, "five problems on line 2, then one on each of 60 rows: all of them, not 50"
    assert [p.split(": ", 1)[1] for p in problems[:5]] == [
        "species is empty",
        "lon 'abc' is not a number",
        "lat 123 is outside [-90, 90]",
        "harvest_date 2999-01-01 is in the future",
        "photo 'missing.jpg' does not exist (paths are relative to the CSV)",
    ]
    as_json = _run("manifest", "check", str(path), "--json")
    assert as_json.returncode == 2 and len(json.loads(as_json.stdout)["problems"]) == 65

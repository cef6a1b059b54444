"""`grainproof demo`: from nothing to verdicts and the auditor's desk, on the embedded default."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from grainproof.cli import app
from grainproof.progress import console, err_console, progress_bar

#: The demo world's home (git-ignored), and where it goes when someone else's world is already there.
DEFAULT_WORLD = Path("reference_lots/demo-world")
FALLBACK_WORLD = Path(".data/demo-world")


@app.command("demo")
def demo(
    world: Path = typer.Option(
        None,
        "--world",
        help=f"The simulated demo world, created when absent (default {DEFAULT_WORLD}, or {FALLBACK_WORLD} "
        "when another world is there).",
    ),
    data_dir: Path = typer.Option(
        Path(".data/demo"), "--data-dir", help="The service's data dir for the demo (emptied on every run)."
    ),
    lots: int = typer.Option(200, "--lots", help="Lots in the demo world (when it is created)."),
    photos_per_lot: int = typer.Option(1, "--photos-per-lot", help="Photos of each lot (when the world is created)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the world and the model: same seed, same demo."),
    genuine: int = typer.Option(3, "--genuine", help="Genuine intake lots to send (plus one of each fraud kind)."),
    alpha: float = typer.Option(
        0.05,
        "--alpha",
        help="Flag level of the demo's verdicts. A reference of ~200 lots cannot give p-values much below 0.02, "
        "so the demo flags at 0.05; the service's default is GRAINPROOF_ALPHA (0.01) on a full reference.",
    ),
    fresh_world: bool = typer.Option(False, "--fresh-world", help="Simulate the world again even if it exists."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface the service listens on."),
    port: int = typer.Option(0, "--port", help="TCP port (0: a free one)."),
    serve: bool = typer.Option(
        True, "--serve/--no-serve", help="Keep serving the desk after printing (until Ctrl-C or --exit-after)."
    ),
    exit_after: float = typer.Option(
        0.0, "--exit-after", help="With --serve: stop after this many seconds (0: serve until Ctrl-C)."
    ),
) -> None:
    """Simulate a small world, build a reference, verify genuine and false lots through the API, open the desk."""
    import httpx

    from grainproof.api import create_app
    from grainproof.api.runtime import Runtime
    from grainproof.demo import (
        DEMO_AUDITOR,
        DemoConfig,
        LiveServer,
        create_demo_keys,
        demo_settings,
        embed_reference,
        ensure_world,
        fresh_data_dir,
        load_reference,
        send_intake_lots,
        split_world,
        summary_rows,
        world_differences,
    )
    from grainproof.settings import get_settings
    from grainproof.store.database import upgrade

    # Request-by-request logs of the HTTP client and the migration steps would bury the results.
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = time.monotonic()
    config = DemoConfig(
        world_dir=world or DEFAULT_WORLD,
        data_dir=data_dir,
        lots=lots,
        photos_per_lot=photos_per_lot,
        seed=seed,
        genuine_lots=genuine,
    )
    if world is None and world_differences(DEFAULT_WORLD, config):
        # Someone keeps their own world in the default place: leave it alone.
        err_console.print(f"{DEFAULT_WORLD} holds another world; the demo uses {FALLBACK_WORLD} instead.")
        config = replace(config, world_dir=FALLBACK_WORLD)
    world = config.world_dir
    ensure_world(config, progress_bar, fresh=fresh_world)
    reference, intake = split_world(world, genuine_lots=genuine)
    # The demo's service flags at --alpha: a server setting, as in production (intake keys cannot send one).
    settings = replace(demo_settings(get_settings(), fresh_data_dir(data_dir)), alpha=alpha)
    manifest, units = embed_reference(world, reference, settings, progress_bar)

    runtime = Runtime.open(settings)
    upgrade(runtime.engine)
    keys = create_demo_keys(runtime)
    with LiveServer(create_app(settings, runtime=runtime), host=host, port=port) as server:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            model = load_reference(
                client, keys, manifest=manifest, units=units, world_dir=world, stage=progress_bar, seed=seed
            )
            views = send_intake_lots(client, keys, intake, world_dir=world, stage=progress_bar)

        rows = summary_rows(intake, views)
        table = Table(title=f"Verdicts on {len(rows)} intake lots (reference model {model['version']})")
        columns = ("lot", "declared", "truth", "p", "origin p", "season p", "flagged", "top alternative")
        for column in columns:
            table.add_column(column, justify="right" if column.endswith("p") else "left")
        for row in rows:
            table.add_row(*(row[c] for c in columns), style="bold red" if row["flagged"] == "yes" else None)
        # Piped output has no terminal width (rich assumes 80): give the table room rather than truncating ids.
        (console if console.is_terminal else Console(width=160)).print(table)
        false_claims = [r for r, lot in zip(rows, intake, strict=True) if lot.fraud_kind != "genuine"]
        genuine_rows = [r for r, lot in zip(rows, intake, strict=True) if lot.fraud_kind == "genuine"]
        console.print(
            f"flagged {sum(r['flagged'] == 'yes' for r in false_claims)} of {len(false_claims)} false declarations "
            f"and {sum(r['flagged'] == 'yes' for r in genuine_rows)} of {len(genuine_rows)} genuine ones "
            f"(alpha {alpha}); {time.monotonic() - started:.0f} s in all."
        )
        console.print(f"\nAuditor's desk: [bold]{server.url}/desk/[/]  (log in with the account below)")
        console.print(f"username: {DEMO_AUDITOR}   password: {keys.auditor_password}", highlight=False)
        console.print(f"API description: {server.url}/schema   data: {settings.data_dir}", highlight=False)
        if not serve:
            console.print(
                f"\nThe service stopped with the demo. To look at the desk: "
                f"GRAINPROOF_DATA_DIR={settings.data_dir} grainproof serve, then open http://127.0.0.1:8000/desk/",
                highlight=False,
            )
            return
        err_console.print(
            "Serving; press Ctrl-C to stop."
            if exit_after <= 0
            else f"Serving for {exit_after:g} s (--exit-after); Ctrl-C stops sooner."
        )
        deadline = time.monotonic() + exit_after if exit_after > 0 else None
        try:
            while server.running and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.5)
        except KeyboardInterrupt:
            err_console.print("stopping")

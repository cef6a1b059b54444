"""`grainproof demo`: from nothing to verdicts and the auditor's desk, on the embedded default."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from grainproof.cli import app
from grainproof.cli._output import json_option, print_json
from grainproof.progress import console, err_console, progress_bar

if TYPE_CHECKING:
    from grainproof.demo import IntakeLot

#: Where `grainproof serve` listens by default: the address the demo points to after --no-serve.
SERVE_AGAIN_URL = "http://127.0.0.1:8000"


@app.command("demo")
def demo(
    world: Path = typer.Option(
        None,
        "--world",
        help="The simulated demo world, created when absent (default: GRAINPROOF_DATA_DIR/demo-world when that "
        "is set, else reference_lots/demo-world, or .data/demo-world when another world is there).",
    ),
    data_dir: Path = typer.Option(
        None,
        "--data-dir",
        help="The service's data dir for the demo, emptied on every run (default: GRAINPROOF_DATA_DIR/demo when "
        "that is set, else .data/demo).",
    ),
    lots: int = typer.Option(400, "--lots", help="Lots in the demo world (when it is created)."),
    photos_per_lot: int = typer.Option(1, "--photos-per-lot", help="Photos of each lot (when the world is created)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the world and the model: same seed, same demo."),
    genuine: int = typer.Option(3, "--genuine", help="Genuine intake lots to send (plus one of each fraud kind)."),
    alpha: float = typer.Option(
        0.05,
        "--alpha",
        help="Flag level of the demo's verdicts. A reference of ~400 lots cannot give p-values much below 0.01, "
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
    as_json: bool = json_option(),
) -> None:
    """Simulate a small world, build a reference, verify genuine and false lots through the API, open the desk."""
    import httpx

    from grainproof.api import create_app
    from grainproof.api.runtime import Runtime
    from grainproof.demo import (
        DEMO_AUDITOR,
        DemoConfig,
        LiveServer,
        api_examples,
        create_demo_keys,
        demo_locations,
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
    places = demo_locations(get_settings())
    config = DemoConfig(
        world_dir=(world or places.world_dir).resolve(),
        data_dir=(data_dir or places.data_dir).resolve(),
        lots=lots,
        photos_per_lot=photos_per_lot,
        seed=seed,
        genuine_lots=genuine,
    )
    if world is None and world_differences(places.world_dir, config):
        # Someone keeps their own world in the default place: leave it alone.
        err_console.print(
            f"{places.world_dir} holds another world; the demo uses {places.fallback_world_dir} instead.",
            highlight=False,
        )
        config = replace(config, world_dir=places.fallback_world_dir)
    world = config.world_dir
    ensure_world(config, progress_bar, fresh=fresh_world)
    reference, intake = split_world(world, genuine_lots=genuine)
    # The demo's service flags at --alpha: a server setting, as in production (intake keys cannot send one).
    settings = replace(demo_settings(get_settings(), fresh_data_dir(config.data_dir)), alpha=alpha)
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
        # After --no-serve the keys work again once the same data dir is served (they live in its database).
        url = server.url if serve else SERVE_AGAIN_URL
        examples = api_examples(url, keys, intake[0], world_dir=world)
        serve_again = f"GRAINPROOF_DATA_DIR={settings.data_dir} grainproof serve"
        if as_json:
            print_json(
                {
                    "model_version": model["version"],
                    "alpha": alpha,
                    "verdicts": rows,
                    "url": url,
                    "desk": f"{url}/desk/",
                    "serving": serve,
                    "serve_again": None if serve else serve_again,
                    "keys": {"intake": keys.intake, "auditor": keys.auditor, "admin": keys.admin},
                    "desk_login": {"username": DEMO_AUDITOR, "password": keys.auditor_password},
                    "data_dir": str(settings.data_dir),
                    "world_dir": str(world),
                    "api_examples": examples,
                }
            )
        else:
            _print_summary(rows, intake, model, alpha=alpha, seconds=time.monotonic() - started)
            console.print(
                f"\nAuditor's desk:  [bold]{url}/desk/[/]\n"
                f"  log in as {DEMO_AUDITOR}, password {keys.auditor_password}\n"
                f"API description: {url}/schema\n"
                f"Keys, one per role (kept in the demo's database):\n"
                f"  intake   {keys.intake}\n  auditor  {keys.auditor}\n  admin    {keys.admin}\n"
                f"Data: {settings.data_dir}\nWorld: {world}",
                highlight=False,
            )
            console.print("\nTry the API (an intake sends a lot, an auditor reads the flagged queue):", highlight=False)
            for line in examples:
                console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
        if not serve:
            err_console.print(
                f"\nThe service stopped with the demo. To serve the same data again (the keys above work): "
                f"{serve_again}, then open {SERVE_AGAIN_URL}/desk/",
                highlight=False,
            )
            return
        err_console.print(
            "\nServing; press Ctrl-C to stop."
            if exit_after <= 0
            else f"\nServing for {exit_after:g} s (--exit-after); Ctrl-C stops sooner."
        )
        deadline = time.monotonic() + exit_after if exit_after > 0 else None
        try:
            while server.running and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.5)
        except KeyboardInterrupt:
            err_console.print("stopping")


def _print_summary(
    rows: Sequence[Mapping[str, str]],
    intake: Sequence[IntakeLot],
    model: Mapping[str, Any],
    *,
    alpha: float,
    seconds: float,
) -> None:
    """The verdicts table and how many false and genuine declarations were flagged."""
    table = Table(title=f"Verdicts on {len(rows)} intake lots (reference model {model['version']})")
    columns = (
        "lot", "declared", "truth", "p", "origin p", "season p", "variety p", "together p", "flagged", "top alternative"
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right" if column.endswith("p") else "left")
    for row in rows:
        table.add_row(*(row[c] for c in columns), style="bold red" if row["flagged"] == "yes" else None)
    console.print(table)
    false_claims = [r for r, lot in zip(rows, intake, strict=True) if lot.fraud_kind != "genuine"]
    genuine_rows = [r for r, lot in zip(rows, intake, strict=True) if lot.fraud_kind == "genuine"]
    console.print(
        f"flagged {sum(r['flagged'] == 'yes' for r in false_claims)} of {len(false_claims)} false declarations "
        f"and {sum(r['flagged'] == 'yes' for r in genuine_rows)} of {len(genuine_rows)} genuine ones "
        f"(alpha {alpha}); {seconds:.0f} s in all."
    )

"""`grainproof card print` (the calibration card at exact size) and `grainproof card check` (a test photo)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from grainproof.cli import app
from grainproof.errors import GrainproofError
from grainproof.progress import console

card_app = typer.Typer(help="The calibration card: print it, check a test photo of it.", no_args_is_help=True)
app.add_typer(card_app, name="card")


@card_app.command("print")
def print_command(
    out: Path = typer.Option(..., "--out", help="File to write: card.pdf or card.svg (exact physical size)."),
) -> None:
    """Write the calibration card at its physical size, with a ruler and the printing instructions."""
    from grainproof.services.card import PRINT_INSTRUCTIONS, RULER_MM, print_card

    written = print_card(out)
    console.print(f"wrote {written}")
    for i, line in enumerate(PRINT_INSTRUCTIONS, start=1):
        console.print(f"{i}. {line}")
    console.print(
        f"Then photograph the tray with the card and run `grainproof card check PHOTO` ({RULER_MM:.0f} mm ruler)."
    )


@card_app.command("check")
def check_command(
    photo: Path = typer.Argument(..., help="A test photo of the tray with the card on it."),
    json_out: Path | None = typer.Option(None, "--json-out", help="Also write the reading as JSON here."),
) -> None:
    """Whether a test photo shows the card, how well it was read (markers, scale, patches), and what to fix."""
    from grainproof.services.card import check_card_photo

    try:
        data = photo.read_bytes()
    except OSError as exc:
        raise GrainproofError(f"Photo {photo} cannot be read ({exc.strerror}); check the path.") from None
    result = check_card_photo(data, str(photo))
    if result.card_found:
        console.print(
            f"card found: markers fitted to {result.reprojection_px:.2f} px, {result.px_per_mm:.1f} px per mm, "
            f"{100 * (result.sample_area_in_frame or 0):.0f} % of the sample area in the photo"
        )
        table = Table(title=f"patches (RMS residual {result.patch_rms:.3f} reflectance)")
        for column in ("patch", "printed", "read", "residual"):
            table.add_column(column, justify="left" if column == "patch" else "right")
        for patch in result.patches:
            table.add_row(
                patch.name,
                " ".join(f"{v:.3f}" for v in patch.printed),
                " ".join(f"{v:.3f}" for v in patch.read),
                f"{patch.residual:.3f}" + (" clipped" if patch.clipped else ""),
            )
        console.print(table)
    else:
        console.print("no card found")
    console.print(f"kernels: {result.kernel_mode}")
    for fix in result.fixes:
        console.print(f"[bold]fix:[/] {fix}")
    if result.ok:
        console.print("[green]The card reads well: photos taken like this are calibrated.[/]")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {json_out}")

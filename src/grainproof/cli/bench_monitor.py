"""`grainproof bench monitor` (the sequential alert test) and `grainproof bench blind-audit` (interval coverage)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from grainproof.cli import bench_app
from grainproof.cli._output import json_option, json_out_option, print_json, write_json
from grainproof.progress import console, progress_bar


@bench_app.command("monitor")
def bench_monitor_command(
    streams: int = typer.Option(200, help="Null streams (no change), and as many with an unseen phone joining."),
    lots: int = typer.Option(5000, help="Verifications per stream."),
    alpha: float = typer.Option(0.01, help="The promised flag rate of genuine lots."),
    new_phone_flag_rate: float = typer.Option(0.08, help="The unseen phone's flag rate (genuine lots)."),
    new_phone_share: float = typer.Option(0.15, help="The unseen phone's share of lots once it has joined."),
    false_alert_rate: float = typer.Option(0.05, help="The monitor's budget for any false alert over a stream."),
    seed: int = typer.Option(0),
    json_out: Path | None = json_out_option(),
    as_json: bool = json_option(),
) -> None:
    """False-alert rate of the sequential test over null streams, and lots until it alerts for an unseen phone
    joining halfway; baseline: the weekly binomial test read every week, on the same null streams."""
    from grainproof.monitor.bench import run_monitor_bench
    from grainproof.monitor.calibration import MonitorSettings
    from grainproof.monitor.simulation import StreamSpec

    spec = StreamSpec(lots=lots, alpha=alpha, new_phone_flag_rate=new_phone_flag_rate, new_phone_share=new_phone_share)
    settings = MonitorSettings(alpha=alpha, false_alert_rate=false_alert_rate)
    with progress_bar("simulated streams", total=2 * streams) as progress:
        result = run_monitor_bench(
            spec=spec, settings=settings, null_streams=streams, drift_streams=streams, seed=seed, progress=progress
        )
    data = result.as_dict()
    write_json(json_out, data)
    if as_json:
        print_json(data)
        return
    table = Table(
        title=f"bench monitor: {streams} null + {streams} drift streams of {lots} verifications, alpha={alpha:g}, "
        f"5 dimensions (overall, site, phone, variety, model version), false-alert budget {false_alert_rate:g}"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    low, high = result.null_false_alert_interval
    table.add_row(
        "null streams with any alert: weekly binomial band (baseline)",
        f"{result.weekly_test_null_streams_alerted}/{streams} ({data['weekly_test_false_alert_rate']:.1%})",
    )
    table.add_row(
        "null streams with any alert: e-process (ours)",
        f"{result.null_streams_alerted}/{streams} ({data['false_alert_rate']:.1%}, 95 % CI {low:.1%}-{high:.1%})",
    )
    ours = result.null_streams_alerted
    table.add_row(
        "false alerts, baseline / ours",
        f"{result.weekly_test_null_streams_alerted / ours:.0f}x"
        if ours
        else f"{result.weekly_test_null_streams_alerted} vs 0",
    )
    for label, count, lots_q in (
        ("flag-rate alert for the unseen phone", result.flag_alerts, result.flag_alert_lots),
        ("low-confidence alert for the unseen phone", result.low_confidence_alerts, result.low_confidence_alert_lots),
    ):
        table.add_row(f"drift streams with a {label}", f"{count}/{streams}")
        if lots_q is not None:
            table.add_row(
                "  its lots until the alert: median / 90th pct / max",
                f"{lots_q[0]:.0f} / {lots_q[1]:.0f} / {lots_q[2]:.0f}",
            )
    table.add_row(
        "drift streams alerting for another (unchanged) phone", f"{result.drift_streams_other_phone_alerted}/{streams}"
    )
    console.print(table)


@bench_app.command("blind-audit")
def bench_blind_audit_command(
    streams: int = typer.Option(200, help="Simulated streams."),
    lots: int = typer.Option(5000, help="Verifications per stream."),
    fraud_rate: float = typer.Option(0.05, help="Share of false declarations."),
    detection_rate: float = typer.Option(0.6, help="Share of false declarations flagged."),
    alpha: float = typer.Option(0.01, help="Share of genuine lots flagged."),
    audit_rate: float = typer.Option(0.02, help="GRAINPROOF_BLIND_AUDIT_RATE: share of unflagged lots audited blind."),
    level: float = typer.Option(0.9, help="The intervals' level."),
    seed: int = typer.Option(0),
    json_out: Path | None = json_out_option(),
    as_json: bool = json_option(),
) -> None:
    """Coverage of the missed-fraud share's interval over simulated streams with a known fraud and detection rate;
    baseline: the Wald interval on the same blind samples."""
    from grainproof.monitor.bench import run_blind_audit_bench
    from grainproof.monitor.simulation import AuditStreamSpec

    spec = AuditStreamSpec(
        lots=lots,
        fraud_rate=fraud_rate,
        detection_rate=detection_rate,
        alpha=alpha,
        audit_rate=audit_rate,
        level=level,
    )
    with progress_bar("simulated streams", total=streams) as progress:
        result = run_blind_audit_bench(spec=spec, streams=streams, seed=seed, progress=progress)
    data = result.as_dict()
    write_json(json_out, data)
    if as_json:
        print_json(data)
        return
    table = Table(
        title=f"bench blind-audit: {streams} streams of {lots} lots, fraud rate {fraud_rate:g}, detection "
        f"{detection_rate:g}, alpha {alpha:g}, audit rate {audit_rate:g}; true missed-fraud share "
        f"{result.true_missed_fraud_share:.4f}"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("blind samples per stream (mean)", f"{result.mean_blind_samples:.1f}")
    table.add_row(
        f"{level:.0%} Wald interval covers the true missed-fraud share (baseline)",
        f"{result.wald_covered}/{streams} ({data['wald_coverage']:.1%})",
    )
    table.add_row(
        f"{level:.0%} Clopper-Pearson interval covers it (ours)", f"{result.covered}/{streams} ({data['coverage']:.1%})"
    )
    table.add_row(
        "  covers the stream's realised share",
        f"{result.covered_realised}/{streams} ({data['coverage_of_realised_share']:.1%})",
    )
    table.add_row("  mean interval width", f"{result.mean_interval_width:.4f}")
    table.add_row(
        f"{level:.0%} interval of the false-alarm share covers {result.true_false_alarm_share:.3f}",
        f"{result.false_alarm_covered}/{streams} ({data['false_alarm_coverage']:.1%})",
    )
    console.print(table)

"""Maps of a region set shaded by a value per region, with the declared origin marked (PNG or SVG).

Used by `grainproof regions show`, and later by the auditor pages (the plausibility of each origin for
one lot). Drawn with matplotlib's object API on the Agg canvas, never pyplot, so it is safe to call
from a web server's worker threads and needs no display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from matplotlib import patheffects, rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from grainproof.domain import Origin
from grainproof.errors import GrainproofError
from grainproof.geo.claims import parse_geojson_geometry
from grainproof.geo.regions import RegionSet, region_values_frame

MAP_FORMATS = (".png", ".svg")
_DECLARED_COLOUR = "#d62728"
_NO_VALUE_COLOUR = "#e6e6e6"
#: Region codes are written on the map when there are at most this many regions.
_MAX_LABELLED_REGIONS = 120


def draw_region_map(
    region_set: RegionSet,
    values: Mapping[str, float],
    *,
    declared: Origin | None = None,
    out: Path,
    title: str,
    value_label: str = "plausibility",
    zones: gpd.GeoDataFrame | None = None,
    points: np.ndarray | None = None,
    colormap: str = "viridis",
    value_range: tuple[float, float] | None = None,
) -> Path:
    """Draw the regions shaded by `values` (grey where absent), mark the declared origin, save to `out`.

    The format follows the suffix (.png or .svg). `zones` (e.g. `ProvenanceZones.zone_polygons()`) are
    outlined and `points` (n, 2) lon/lat (e.g. nearest reference lots) are dotted on top. The colour
    scale is [0, 1] when every value lies there (plausibilities), else the values' own range.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in MAP_FORMATS:
        raise GrainproofError(f"Cannot draw a map to {out.name}: use a .png or .svg file name.")
    frame = region_values_frame(region_set, values)
    finite = frame["value"].to_numpy(dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if value_range is None:
        if len(finite) == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0):
            value_range = (0.0, 1.0)
        else:
            low, high = float(finite.min()), float(finite.max())
            value_range = (low, high if high > low else low + 1.0)

    figure = Figure(figsize=(8.0, 8.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    frame.plot(ax=axes, color=_NO_VALUE_COLOUR, edgecolor="white", linewidth=0.4)
    shaded = frame[frame["value"].notna()]
    if len(shaded):
        shaded.plot(
            ax=axes,
            column="value",
            cmap=colormap,
            vmin=value_range[0],
            vmax=value_range[1],
            edgecolor="white",
            linewidth=0.4,
            legend=True,
            legend_kwds={"label": value_label, "shrink": 0.6},
        )
    if zones is not None and len(zones):
        zones.boundary.plot(ax=axes, color="black", linewidth=1.0, linestyle="--")
    if points is not None and len(points):
        array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        axes.scatter(array[:, 0], array[:, 1], s=8, color="black", alpha=0.6, linewidths=0, zorder=4)
    if len(frame) <= _MAX_LABELLED_REGIONS:
        for code in region_set.codes:
            lon, lat = region_set.representative_point(code)
            axes.annotate(
                code,
                (lon, lat),
                ha="center",
                va="center",
                fontsize=5,
                color="#222222",
                zorder=5,
                path_effects=[patheffects.withStroke(linewidth=1.2, foreground="white")],
            )
    declared_note = _mark_declared(axes, region_set, declared)

    axes.set_title(title if not declared_note else f"{title}\n{declared_note}", fontsize=11)
    axes.set_xlabel("longitude (°E)")
    axes.set_ylabel("latitude (°N)")
    _, min_lat, _, max_lat = region_set.bounds
    axes.set_aspect(1.0 / math.cos(math.radians((min_lat + max_lat) / 2)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{suffix}")
    # No timestamps in the files: the same map is the same bytes.
    metadata: dict[str, str | None] = {"Date": None} if suffix == ".svg" else {"Software": None}
    with rc_context({"svg.hashsalt": "grainproof"}):  # SVG element ids are random otherwise
        figure.savefig(tmp, dpi=150, format=suffix[1:], metadata=metadata)
    tmp.replace(out)
    return out


def _mark_declared(axes: Axes, region_set: RegionSet, declared: Origin | None) -> str:
    """Draw the declared origin (region outline, field polygon, farm point); returns a caption."""
    if declared is None:
        return ""
    notes = []
    if _resolvable(region_set, declared.region):
        code = region_set.resolve_code(declared.region or "")
        outline = gpd.GeoSeries([region_set.geometry(code)], crs="EPSG:4326")
        outline.boundary.plot(ax=axes, color=_DECLARED_COLOUR, linewidth=2.0, zorder=6)
        notes.append(f"declared region {code} {region_set.name_of(code)}")
    if declared.geometry_geojson:
        geometry = parse_geojson_geometry(declared.geometry_geojson)
        shape = gpd.GeoSeries([geometry], crs="EPSG:4326")
        if geometry.geom_type == "Point":
            shape.plot(ax=axes, color=_DECLARED_COLOUR, marker="*", markersize=220, zorder=7)
        else:
            # A field is far too small to see at country scale: mark its centre as well as its outline.
            shape.boundary.plot(ax=axes, color=_DECLARED_COLOUR, linewidth=1.5, zorder=7)
            centre = shapely.point_on_surface(geometry)
            axes.scatter([centre.x], [centre.y], marker="*", s=220, color=_DECLARED_COLOUR, zorder=7)
        notes.append("declared field")
    if declared.lon is not None and declared.lat is not None:
        axes.scatter(
            [declared.lon], [declared.lat], marker="*", s=260, color=_DECLARED_COLOUR, edgecolors="black", zorder=8
        )
        notes.append(f"declared point ({declared.lon:.4f}, {declared.lat:.4f})")
    return "★ " + ", ".join(notes) if notes else ""


def _resolvable(region_set: RegionSet, code: str | None) -> bool:
    if not code:
        return False
    try:
        region_set.resolve_code(code)
    except GrainproofError:
        return False
    return True

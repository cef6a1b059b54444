"""Rendering a tray of kernels as scene reflectance (before light and camera), in numpy.

Each kernel is drawn analytically in its own small patch (no sprite resampling): a tapered
ellipse with a dome shading, a crease or husk veins, bran noise, weathering spots, breaks and
wrinkles, and a soft drop shadow on the tray. Impurities are chaff flakes and small dark weed
seeds. Geometry is in millimetres; `px_per_mm` sets the resolution, so a phone's zoom and sensor
size change how many pixels a kernel covers, as in the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from grainproof import card
from grainproof.simulate.varieties import Variety

#: Size (mm) of the area of the tray the kernels are spread over (the phone may see more or less), and its
#: centre: below the calibration card, which lies along the top of the frame.
SPREAD_MM = (100.0, 47.0)
SPREAD_CENTRE_MM = (0.0, 12.5)
#: Where the operator lays the card: its centre (mm from the photo's centre), give or take the jitter, and
#: how far it may be turned. Kept so that the markers stay in frame for the most zoomed-in phone.
CARD_CENTRE_MM = (0.0, -24.0)
CARD_JITTER_MM = (6.0, 1.0)
CARD_MAX_TURN = np.radians(4.0)
#: Resolution the card is printed at before it is placed (pixels per mm).
_CARD_TEXTURE_PX_PER_MM = 16.0

#: Kernel-to-kernel spread inside one lot (log-SD of length and width, SD of log reflectance and of log R/B).
KERNEL_LENGTH_SD = 0.06
KERNEL_WIDTH_SD = 0.08
KERNEL_LIGHTNESS_SD = 0.06
KERNEL_REDNESS_SD = 0.03

_WEATHERED_COLOUR = np.array([0.30, 0.27, 0.22])
_CHAFF_COLOUR = np.array([0.78, 0.68, 0.47])
_WEED_COLOUR = np.array([0.10, 0.07, 0.05])

#: Light reaching a surface: an ambient share plus the main light's Lambert term (cosine to the surface normal).
AMBIENT_LIGHT = 0.35

# Kernel kinds.
GRAIN, CHAFF, WEED_SEED = 0, 1, 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Tray:
    """A tray background: base reflectance and a surface texture the operator's intake happens to use."""

    name: str
    colour: tuple[float, float, float]
    texture: str  # plain, grid, wood or brushed

    def __post_init__(self) -> None:
        if self.texture not in {"plain", "grid", "wood", "brushed"}:
            raise ValueError(f"unknown tray texture {self.texture!r}")


TRAYS: tuple[Tray, ...] = (
    Tray(name="white_plastic", colour=(0.80, 0.80, 0.78), texture="plain"),
    Tray(name="black_plastic", colour=(0.045, 0.045, 0.05), texture="plain"),
    Tray(name="blue_plastic", colour=(0.10, 0.22, 0.50), texture="plain"),
    Tray(name="grid_paper", colour=(0.85, 0.85, 0.82), texture="grid"),
    Tray(name="wood_board", colour=(0.45, 0.30, 0.18), texture="wood"),
    Tray(name="steel", colour=(0.42, 0.43, 0.45), texture="brushed"),
)


def get_tray(name: str) -> Tray:
    for tray in TRAYS:
        if tray.name == name:
            return tray
    raise KeyError(name)


@dataclass(frozen=True, slots=True)
class KernelBatch:
    """Everything needed to draw the objects on one photo's tray; one row per object (mm, radians)."""

    kind: np.ndarray  # (n,) GRAIN, CHAFF or WEED_SEED
    centre: np.ndarray  # (n, 2) mm from the tray centre, x right, y down
    angle: np.ndarray  # (n,)
    length: np.ndarray  # (n,) mm
    width: np.ndarray  # (n,) mm
    taper: np.ndarray  # (n,)
    crease: np.ndarray  # (n,) crease darkening, 0 when the kernel lies crease-down
    veins: np.ndarray  # (n,)
    colour: np.ndarray  # (n, 3) reflectance
    weathering: np.ndarray  # (n,) 0..1
    cut: np.ndarray  # (n,) 1 = whole; else the broken end's position along the kernel in (-1, 1)
    shrivelled: np.ndarray  # (n,) 0 or 1

    def __len__(self) -> int:
        return len(self.kind)


def lot_kernels(
    traits: np.ndarray,
    variety: Variety,
    n: int,
    rng: np.random.Generator,
    *,
    admixture_traits: np.ndarray | None = None,
    admixture_share: float = 0.0,
    admixture_variety: Variety | None = None,
) -> KernelBatch:
    """Draw n objects for one photo of a lot with the given lot-mean traits (LATENT_TRAITS order).

    With `admixture_traits`, a share of the grains comes from that other lot: of the same variety grown
    elsewhere, or of `admixture_variety` (its outline, crease, husk and colour) when that is given.
    """
    impurity = float(traits[7])  # impurities belong to the sample, not to a grain's origin
    n_impurity = int(rng.binomial(n, min(0.5, impurity)))
    n_grain = n - n_impurity
    # Admixed grains carry the other lot's traits; choose them per grain so each photo varies.
    source = np.zeros(n_grain, dtype=bool)
    if admixture_traits is not None and admixture_share > 0:
        source = rng.random(n_grain) < admixture_share
    grain_traits = np.where(source[:, None], admixture_traits if admixture_traits is not None else traits, traits)
    g_len, g_wid, g_light, g_red, g_weather, g_broken, g_shriv = (grain_traits[:, i] for i in range(7))

    is_shrivelled = rng.random(n_grain) < g_shriv
    lengths = g_len * np.exp(rng.normal(0, KERNEL_LENGTH_SD, n_grain)) * np.where(is_shrivelled, 0.92, 1.0)
    widths = g_wid * np.exp(rng.normal(0, KERNEL_WIDTH_SD, n_grain)) * np.where(is_shrivelled, 0.72, 1.0)
    other = admixture_variety or variety
    foreign = source & (admixture_variety is not None)
    base = np.where(foreign[:, None], np.asarray(other.colour), np.asarray(variety.colour))
    log_light = np.log(g_light) + rng.normal(0, KERNEL_LIGHTNESS_SD, n_grain)
    log_red = g_red + rng.normal(0, KERNEL_REDNESS_SD, n_grain)
    colour = base * np.exp(log_light)[:, None]
    colour[:, 0] *= np.exp(log_red)
    colour[:, 2] *= np.exp(-log_red)
    # Weathering varies a lot from kernel to kernel (exposure on the ear): a gamma around the lot level.
    kernel_weather = np.clip(rng.gamma(2.0, 1.0, n_grain) * g_weather / 2.0, 0.0, 1.0)
    is_broken = rng.random(n_grain) < g_broken
    cut = np.where(is_broken, rng.uniform(-0.3, 0.5, n_grain), 1.0)
    crease_up = rng.random(n_grain) < 0.5

    # Impurities: two thirds chaff flakes, one third weed seeds.
    is_chaff = rng.random(n_impurity) < 2 / 3
    imp_len = np.where(is_chaff, rng.uniform(3.0, 8.0, n_impurity), rng.uniform(1.4, 2.4, n_impurity))
    imp_wid = np.where(is_chaff, rng.uniform(1.0, 2.2, n_impurity), imp_len * rng.uniform(0.8, 0.95, n_impurity))
    imp_colour = np.where(is_chaff[:, None], _CHAFF_COLOUR, _WEED_COLOUR) * np.exp(rng.normal(0, 0.1, (n_impurity, 1)))

    kind = np.concatenate([np.full(n_grain, GRAIN), np.where(is_chaff, CHAFF, WEED_SEED)])
    order = rng.permutation(n)
    batch = KernelBatch(
        kind=kind,
        centre=_spread_positions(n, rng),
        angle=rng.uniform(0, np.pi, n),
        length=np.concatenate([lengths, imp_len]),
        width=np.concatenate([widths, imp_wid]),
        taper=np.concatenate([np.where(foreign, other.tip_taper, variety.tip_taper), np.where(is_chaff, 0.9, 0.0)]),
        crease=np.concatenate(
            [
                np.where(crease_up, np.where(foreign, other.crease_depth, variety.crease_depth), 0.0),
                np.zeros(n_impurity),
            ]
        ),
        veins=np.concatenate([np.where(foreign, other.husk_veins, variety.husk_veins), np.where(is_chaff, 0.6, 0.0)]),
        colour=np.concatenate([colour, imp_colour]),
        weathering=np.concatenate([kernel_weather, np.zeros(n_impurity)]),
        cut=np.concatenate([cut, np.ones(n_impurity)]),
        shrivelled=np.concatenate([is_shrivelled.astype(float), np.zeros(n_impurity)]),
    )
    # Shuffle draw order so impurities are not always drawn on top of the grains.
    return KernelBatch(**{name: np.asarray(getattr(batch, name))[order] for name in _FIELDS})


_FIELDS = tuple(KernelBatch.__dataclass_fields__)


def _spread_positions(n: int, rng: np.random.Generator) -> np.ndarray:
    """Kernel centres on a jittered grid over the spread area: touching sometimes, rarely piled up."""
    width, height = SPREAD_MM
    cols = max(1, int(np.ceil(np.sqrt(n * width / height))))
    rows = max(1, int(np.ceil(n / cols)))
    cells = rng.permutation(rows * cols)[:n]
    cx = (cells % cols + rng.uniform(0.15, 0.85, n)) / cols
    cy = (cells // cols + rng.uniform(0.15, 0.85, n)) / rows
    return np.stack([(cx - 0.5) * width + SPREAD_CENTRE_MM[0], (cy - 0.5) * height + SPREAD_CENTRE_MM[1]], axis=1)


@lru_cache(maxsize=1)
def card_texture() -> np.ndarray:
    """The calibration card printed at high resolution: reflectance (h, w, 3), see grainproof.card."""
    import cv2

    ppm = _CARD_TEXTURE_PX_PER_MM
    width, height = (round(side * ppm) for side in card.CARD_SIZE_MM)
    texture = np.full((height, width, 3), card.CARD_WHITE, dtype=np.float32)
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, card.ARUCO_DICTIONARY))
    for marker in card.MARKERS:
        side = round(marker.side * ppm)
        bits = cv2.aruco.generateImageMarker(dictionary, marker.marker_id, side) > 127
        x, y = round(marker.x * ppm), round(marker.y * ppm)
        texture[y : y + side, x : x + side] = np.where(bits[..., None], card.CARD_WHITE, card.CARD_BLACK)
    for patch in card.PATCHES:
        x, y, side = round(patch.x * ppm), round(patch.y * ppm), round(patch.side * ppm)
        texture[y : y + side, x : x + side] = np.asarray(patch.reflectance, dtype=np.float32)
    return texture


def card_placement(rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """Where the operator lays the card: (turn in radians, centre in mm from the photo's centre).

    Drawn for every photo, card or not, so a world rendered without the card is the same world (kernels,
    noise, light) as with it, the card alone left off.
    """
    turn = float(rng.uniform(-CARD_MAX_TURN, CARD_MAX_TURN))
    centre = np.asarray(CARD_CENTRE_MM) + rng.uniform(-1.0, 1.0, 2) * np.asarray(CARD_JITTER_MM)
    return turn, centre


def place_card(
    canvas: np.ndarray, px_per_mm: float, placement: tuple[float, np.ndarray], *, texture: np.ndarray | None = None
) -> np.ndarray:
    """Lay the calibration card (or another printed `texture` of the card's size) on the tray reflectance, in
    place, at `placement` (see `card_placement`)."""
    import cv2

    height, width = canvas.shape[:2]
    texture = card_texture() if texture is None else texture
    texture_px_per_mm = texture.shape[1] / card.CARD_SIZE_MM[0]
    ratio = texture_px_per_mm / px_per_mm
    if ratio > 1.0:  # print resolution is finer than the photo's: blur first so placing it does not alias
        texture = cv2.GaussianBlur(texture, (0, 0), sigmaX=0.45 * ratio)
    turn, centre = placement
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]) * px_per_mm
    card_centre_texture = np.asarray(texture.shape[1::-1], dtype=np.float64) / 2
    linear = rotation / texture_px_per_mm
    target = centre * px_per_mm + np.array([width / 2, height / 2])
    affine = np.hstack([linear, (target - linear @ card_centre_texture)[:, None]]).astype(np.float64)
    printed = cv2.warpAffine(texture, affine, (width, height), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    cover = cv2.warpAffine(
        np.ones(texture.shape[:2], dtype=np.float32), affine, (width, height), flags=cv2.INTER_LINEAR, borderValue=0
    )[..., None]
    canvas *= 1.0 - cover
    canvas += printed * cover
    return canvas


def upsample(small: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a small (h, w[, c]) grid to (height, width[, c]); used for smooth noise."""
    h, w = small.shape[:2]
    y = np.linspace(0, h - 1, height)
    x = np.linspace(0, w - 1, width)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 2) if h > 1 else np.zeros(height, int)
    x0 = np.clip(np.floor(x).astype(int), 0, w - 2) if w > 1 else np.zeros(width, int)
    fy = (y - y0)[:, None]
    fx = (x - x0)[None, :]
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    if small.ndim == 3:
        fy = fy[..., None]
        fx = fx[..., None]
    top = small[y0][:, x0] * (1 - fx) + small[y0][:, x1] * fx
    bottom = small[y1][:, x0] * (1 - fx) + small[y1][:, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def render_tray(tray: Tray, height: int, width: int, px_per_mm: float, rng: np.random.Generator) -> np.ndarray:
    """The empty tray's reflectance (height, width, 3) with its surface texture."""
    base = np.asarray(tray.colour, dtype=np.float32)
    # Low-frequency unevenness (stains, plastic sheen) common to every texture.
    unevenness = 1.0 + 0.05 * upsample(rng.normal(0, 1, (6, 8)).astype(np.float32), height, width)
    canvas = base[None, None, :] * unevenness[..., None]
    ys = (np.arange(height, dtype=np.float32) - height / 2) / px_per_mm
    xs = (np.arange(width, dtype=np.float32) - width / 2) / px_per_mm
    if tray.texture == "grid":
        # Printed millimetre paper: fine lines every 1 mm, bold every 10 mm (a scale cue).
        def lines(coord: np.ndarray, step: float, half_width: float) -> np.ndarray:
            distance = np.abs((coord + step / 2) % step - step / 2)
            return np.clip(1.0 - (distance - half_width) * px_per_mm, 0.0, 1.0)

        strength = np.maximum(
            np.maximum(0.35 * lines(xs, 10.0, 0.15)[None, :], 0.35 * lines(ys, 10.0, 0.15)[:, None]),
            np.maximum(0.12 * lines(xs, 1.0, 0.05)[None, :], 0.12 * lines(ys, 1.0, 0.05)[:, None]),
        )
        ink = np.array([0.35, 0.55, 0.45], dtype=np.float32)
        canvas = canvas * (1 - strength[..., None]) + (canvas * ink) * strength[..., None]
    elif tray.texture == "wood":
        phase = rng.uniform(0, 2 * np.pi)
        wobble = upsample(rng.normal(0, 1, (5, 4)).astype(np.float32), height, width) * 3.0
        grain = 1.0 + 0.12 * np.sin(ys[:, None] * 1.7 + wobble + phase) + 0.05 * np.sin(ys[:, None] * 7.1 + wobble)
        canvas = canvas * grain[..., None]
    elif tray.texture == "brushed":
        streaks = rng.normal(0, 1, height).astype(np.float32)
        streaks = np.convolve(streaks, np.ones(3) / 3, mode="same").astype(np.float32)
        canvas = canvas * (1.0 + 0.04 * streaks[:, None, None])
    return np.clip(canvas, 0.0, 1.0).astype(np.float32)


def draw_kernels(
    canvas: np.ndarray,
    kernels: KernelBatch,
    px_per_mm: float,
    light_direction: tuple[float, float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Composite every kernel (with its drop shadow) onto the tray reflectance, in place; returns the canvas."""
    height, width = canvas.shape[:2]
    lx, ly, lz = light_direction
    # Drop shadows fall opposite the light, about 1.2 mm for a kernel lying on the tray.
    shadow_shift = -1.2 * np.array([lx, ly]) / max(lz, 0.2)
    half_light = np.array([lx, ly, lz + 1.0])
    half_light /= np.linalg.norm(half_light)
    # The flat tray gets the same light as a flat patch of kernel, so a low light dims both alike. With only
    # the kernels shaded, a 35 vs 80 degree light moved their brightness relative to the tray by ~23 %,
    # three times the lot-to-lot lightness spread within a variety (~8 %).
    canvas *= np.float32(AMBIENT_LIGHT + (1 - AMBIENT_LIGHT) * max(lz, 0.0))
    for i in range(len(kernels)):
        half_len = kernels.length[i] / 2
        reach = half_len + np.abs(shadow_shift).max() + 0.5
        cx = kernels.centre[i, 0] * px_per_mm + width / 2
        cy = kernels.centre[i, 1] * px_per_mm + height / 2
        x0, x1 = int(max(0, np.floor(cx - reach * px_per_mm))), int(min(width, np.ceil(cx + reach * px_per_mm)))
        y0, y1 = int(max(0, np.floor(cy - reach * px_per_mm))), int(min(height, np.ceil(cy + reach * px_per_mm)))
        if x1 <= x0 or y1 <= y0:
            continue  # outside the photo (the phone is zoomed in)
        dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :] / px_per_mm
        dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None] / px_per_mm
        cos_a, sin_a = np.cos(kernels.angle[i]), np.sin(kernels.angle[i])
        patch = canvas[y0:y1, x0:x1]

        shadow, *_ = _kernel_mask(
            dx - shadow_shift[0], dy - shadow_shift[1], cos_a, sin_a, kernels, i, px_per_mm, softness=2.5
        )
        patch *= (1.0 - 0.45 * shadow)[..., None]

        alpha, u, v, vn = _kernel_mask(dx, dy, cos_a, sin_a, kernels, i, px_per_mm, softness=1.0)
        if not alpha.any():
            continue
        colour = _kernel_reflectance(kernels, i, u, v, vn, cos_a, sin_a, lx, ly, lz, half_light, rng)
        opacity = 0.85 if kernels.kind[i] == CHAFF else 1.0
        alpha = (alpha * opacity)[..., None]
        patch *= 1.0 - alpha
        patch += alpha * colour
    return canvas


def _kernel_mask(
    dx: np.ndarray,
    dy: np.ndarray,
    cos_a: float,
    sin_a: float,
    kernels: KernelBatch,
    i: int,
    px_per_mm: float,
    *,
    softness: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Anti-aliased coverage of kernel i at offsets (dx, dy) mm, plus its normalised coordinates u, v, v/halfwidth."""
    half_len = kernels.length[i] / 2
    u = (dx * cos_a + dy * sin_a) / half_len  # -1..1 along the kernel
    v = -dx * sin_a + dy * cos_a  # mm across
    profile = np.clip(1.0 - u * u, 0.0, 1.0) ** (0.5 + 0.6 * kernels.taper[i])
    half_width = kernels.width[i] / 2 * profile
    vn = v / np.maximum(half_width, 1e-3)
    edge_px = (half_width - np.abs(v)) * px_per_mm / softness
    alpha = np.clip(edge_px + 0.5, 0.0, 1.0) * np.clip((1.0 - np.abs(u)) * half_len * px_per_mm / softness + 0.5, 0, 1)
    if kernels.cut[i] < 1.0:
        # A broken end: jagged cut across the kernel.
        jag = 0.06 * np.sin(v * 5.0 + 3.0 * i)
        alpha = alpha * np.clip((kernels.cut[i] + jag - u) * half_len * px_per_mm / softness + 0.5, 0.0, 1.0)
    return alpha.astype(np.float32), u, v, vn


def _kernel_reflectance(
    kernels: KernelBatch,
    i: int,
    u: np.ndarray,
    v: np.ndarray,
    vn: np.ndarray,
    cos_a: float,
    sin_a: float,
    lx: float,
    ly: float,
    lz: float,
    half_light: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Shaded reflectance (h, w, 3) of kernel i: dome shading, crease, veins, bran noise, weathering, wrinkles."""
    kind = kernels.kind[i]
    vn_c = np.clip(vn, -1.0, 1.0)
    # Surface normal of a dome-shaped kernel (flat for chaff), rotated back into the image frame.
    bulge = 0.25 if kind == CHAFF else 0.9
    nu, nv = 0.5 * bulge * u, bulge * vn_c
    nx = nu * cos_a - nv * sin_a
    ny = nu * sin_a + nv * cos_a
    nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.05, 1.0))
    lambert = np.clip(nx * lx + ny * ly + nz * lz, 0.0, 1.0)
    shade = AMBIENT_LIGHT + (1 - AMBIENT_LIGHT) * lambert
    base = kernels.colour[i].astype(np.float32)
    weather = kernels.weathering[i]
    if weather > 0:
        base = base * (1 - 0.6 * weather) + _WEATHERED_COLOUR.astype(np.float32) * 0.6 * weather
    modulation = 1.0 + 0.035 * noise_like(u.shape, rng)  # bran / husk micro-texture
    if kernels.crease[i] > 0:
        modulation *= 1.0 - kernels.crease[i] * np.exp(-((vn_c / 0.13) ** 2)) * np.clip(1 - u * u, 0, 1)
    if kernels.veins[i] > 0:
        modulation *= 1.0 + 0.22 * kernels.veins[i] * np.cos(vn_c * np.pi * 4.5 + i)
    if kernels.shrivelled[i] > 0:
        modulation *= 1.0 - 0.18 * (0.5 + 0.5 * np.cos(u * np.pi * 7.0 + vn_c * 2.5))
    if weather > 0.05:
        n_spots = int(rng.poisson(8.0 * weather))
        half_len = kernels.length[i] / 2
        for _ in range(n_spots):
            su, sv = rng.uniform(-0.8, 0.8), rng.uniform(-0.6, 0.6) * kernels.width[i] / 2
            radius = rng.uniform(0.25, 0.6)
            modulation *= 1.0 - 0.45 * np.exp(-(((u - su) * half_len) ** 2 + (v - sv) ** 2) / radius**2)
    if kind == GRAIN:
        highlight = np.clip(nx * half_light[0] + ny * half_light[1] + nz * half_light[2], 0.0, 1.0) ** 24
        shine = 0.06 * highlight
    else:
        shine = np.zeros_like(shade)
    return (base[None, None, :] * (shade * modulation)[..., None] + shine[..., None]).astype(np.float32)


#: Side of the fixed Gaussian noise tile that pixel noise and micro-texture are cut from.
_NOISE_TILE_SIDE = 2048


@lru_cache(maxsize=1)
def _noise_tile() -> np.ndarray:
    """A fixed tile of standard normal noise, the same in every process (drawing fresh noise per pixel is slow)."""
    return np.random.default_rng(0x6E015E).standard_normal((_NOISE_TILE_SIDE, _NOISE_TILE_SIDE), dtype=np.float32)


def noise_like(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Standard normal noise of a 2-D or (h, w, c) shape: windows of the fixed tile at random offsets.

    Windows at independent random offsets are uncorrelated, so each photo still gets its own noise,
    and the choice of window comes from `rng`, so the result is reproducible.
    """
    tile = _noise_tile()
    height, width = shape[0], shape[1]
    if height > _NOISE_TILE_SIDE or width > _NOISE_TILE_SIDE:
        return rng.standard_normal(shape, dtype=np.float32)
    channels = shape[2] if len(shape) == 3 else 1
    windows = []
    for _ in range(channels):
        y = int(rng.integers(0, _NOISE_TILE_SIDE - height + 1))
        x = int(rng.integers(0, _NOISE_TILE_SIDE - width + 1))
        window = tile[y : y + height, x : x + width]
        windows.append(window if rng.random() < 0.5 else -window)
    return windows[0].copy() if len(shape) == 2 else np.stack(windows, axis=-1)

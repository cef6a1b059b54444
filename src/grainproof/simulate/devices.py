"""Capture nuisance: phone profiles, lighting, and the camera pipeline from scene to JPEG bytes.

The pipeline follows a phone's image signal processor: illuminant x scene -> vignetting and
shadow -> auto-exposure -> sensor colour response and noise -> imperfect auto white balance ->
colour-correction matrix -> tone curve -> saturation -> sharpening -> 8-bit -> JPEG with EXIF.
Profiles are invented (plausible, not measured); their spread is deliberately strong: a change
of phone moves mean colours more than moving the field to the next département does.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from grainproof.simulate.render import noise_like

#: EXIF tags written into each photo.
EXIF_MAKE, EXIF_MODEL, EXIF_ORIENTATION = 0x010F, 0x0110, 0x0112


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneProfile:
    """One phone model's camera: resolution, field of view and the look of its image processing."""

    name: str
    make: str
    model: str
    long_side: int  # pixels of the saved JPEG
    zoom: float  # >1: sees less of the tray, kernels cover more pixels
    sensor_crosstalk: tuple[float, float, float]  # spectral overlap of the R, G, B filters
    wb_strength: float  # how much of the illuminant cast auto white balance removes (0..1)
    wb_tint: tuple[float, float, float]  # the maker's colour "look" applied after white balance
    ccm_saturation: float  # strength of the colour-correction matrix
    exposure_bias: float  # EV offset of the auto-exposure target
    ae_strength: float  # how strongly auto-exposure normalises scene brightness (0..1)
    gamma: float
    contrast: float  # S-curve strength 0..1
    saturation: float
    sharpen: float  # unsharp-mask amount
    noise: float  # read + shot noise scale at base exposure
    jpeg_quality: int
    chroma_subsampling: int  # PIL: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0
    orientation: int = 1  # EXIF orientation tag; 6 = stored rotated, to be turned 90° clockwise

    def __post_init__(self) -> None:
        if not 64 <= self.long_side <= 8000:
            raise ValueError(f"{self.name}: long_side {self.long_side} is not a plausible photo size")
        if not 0.0 <= self.wb_strength <= 1.0 or not 0.0 <= self.ae_strength <= 1.0:
            raise ValueError(f"{self.name}: wb_strength and ae_strength must lie in [0, 1]")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"{self.name}: jpeg_quality must lie in 1..100")
        if self.orientation not in (1, 6):
            raise ValueError(f"{self.name}: only EXIF orientations 1 and 6 are simulated")


def _phone(name: str, make: str, model: str, *values: float | int | tuple[float, float, float]) -> PhoneProfile:
    fields = (
        "long_side", "zoom", "sensor_crosstalk", "wb_strength", "wb_tint", "ccm_saturation", "exposure_bias",
        "ae_strength", "gamma", "contrast", "saturation", "sharpen", "noise", "jpeg_quality", "chroma_subsampling",
        "orientation",
    )  # fmt: skip
    return PhoneProfile(name=name, make=make, model=model, **dict(zip(fields, values, strict=True)))  # type: ignore[arg-type]


# name, make, model, long_side, zoom, crosstalk, wb_strength, wb_tint, ccm, EV, ae, gamma, contrast, sat,
# sharpen, noise, jpeg q, subsampling, orientation
PHONE_PROFILES: tuple[PhoneProfile, ...] = (
    _phone("iphone-11", "Apple", "iPhone 11", 960, 1.00, (0.10, 0.08, 0.12), 0.85, (1.00, 1.00, 0.97),
           1.25, 0.0, 0.75, 2.2, 0.25, 1.10, 0.6, 0.010, 92, 2, 6),
    _phone("iphone-13", "Apple", "iPhone 13", 1024, 1.10, (0.08, 0.07, 0.10), 0.90, (1.02, 1.00, 0.97),
           1.30, 0.2, 0.80, 2.2, 0.30, 1.15, 0.7, 0.008, 94, 2, 6),
    _phone("galaxy-a52", "samsung", "SM-A525F", 800, 0.92, (0.14, 0.12, 0.16), 0.70, (1.04, 1.00, 1.02),
           1.45, 0.3, 0.70, 2.1, 0.45, 1.35, 1.1, 0.016, 88, 2, 1),
    _phone("galaxy-s21", "samsung", "SM-G991B", 1024, 1.05, (0.09, 0.08, 0.11), 0.80, (1.03, 1.00, 1.00),
           1.40, 0.25, 0.75, 2.2, 0.40, 1.30, 0.9, 0.010, 95, 2, 1),
    _phone("redmi-note-10", "Xiaomi", "M2101K7AG", 720, 0.95, (0.16, 0.13, 0.18), 0.60, (1.06, 1.00, 0.92),
           1.30, -0.2, 0.65, 2.0, 0.35, 1.25, 1.3, 0.022, 85, 2, 1),
    _phone("pixel-6a", "Google", "Pixel 6a", 880, 1.15, (0.08, 0.07, 0.09), 0.92, (0.98, 1.00, 1.03),
           1.20, -0.1, 0.85, 2.3, 0.35, 1.05, 0.8, 0.009, 90, 2, 1),
    _phone("p30-lite", "HUAWEI", "MAR-LX1A", 720, 0.88, (0.15, 0.14, 0.17), 0.65, (1.00, 1.03, 0.95),
           1.35, 0.1, 0.60, 2.0, 0.30, 1.20, 1.0, 0.020, 87, 2, 1),
    _phone("moto-g22", "motorola", "moto g22", 640, 0.90, (0.18, 0.15, 0.20), 0.55, (1.05, 1.00, 1.05),
           1.15, 0.4, 0.55, 1.9, 0.20, 1.00, 1.5, 0.028, 80, 2, 1),
    _phone("oppo-a74", "OPPO", "CPH2219", 720, 0.97, (0.13, 0.12, 0.15), 0.68, (1.02, 0.98, 0.96),
           1.35, 0.15, 0.70, 2.1, 0.50, 1.40, 1.2, 0.018, 86, 2, 1),
    _phone("nokia-g21", "HMD Global", "Nokia G21", 640, 0.85, (0.17, 0.16, 0.19), 0.50, (0.96, 1.00, 1.06),
           1.10, -0.3, 0.60, 1.8, 0.15, 0.90, 0.5, 0.030, 78, 2, 1),
    _phone("nord-2", "OnePlus", "DN2103", 880, 1.08, (0.10, 0.09, 0.12), 0.78, (1.03, 1.00, 0.98),
           1.30, 0.05, 0.75, 2.2, 0.40, 1.20, 1.0, 0.012, 91, 1, 1),
    _phone("fairphone-4", "Fairphone", "FP4", 800, 1.00, (0.12, 0.10, 0.13), 0.72, (1.00, 1.00, 1.00),
           1.15, 0.0, 0.70, 2.2, 0.25, 1.00, 0.6, 0.015, 90, 0, 1),
    _phone("honor-x8", "HONOR", "TFY-LX1", 720, 0.93, (0.14, 0.13, 0.16), 0.62, (1.04, 1.02, 0.93),
           1.40, 0.3, 0.65, 2.0, 0.45, 1.35, 1.2, 0.020, 84, 2, 1),
    _phone("xperia-10", "Sony", "XQ-BT52", 800, 1.20, (0.09, 0.09, 0.10), 0.80, (0.99, 1.00, 1.02),
           1.10, -0.15, 0.80, 2.3, 0.20, 0.95, 0.7, 0.012, 93, 0, 6),
)  # fmt: skip


def get_phone(name: str) -> PhoneProfile:
    """A phone profile by name; KeyError otherwise (callers turn it into a user-facing sentence)."""
    for phone in PHONE_PROFILES:
        if phone.name == name:
            return phone
    raise KeyError(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Lighting:
    """The light at the intake when a photo is taken."""

    temperature_k: float  # 2700 (warm bulb) .. 6500 (overcast daylight)
    intensity: float  # relative to a well-lit bench
    vignetting: float  # corner darkening 0..1
    shadow_strength: float  # a soft shadow band (operator's hand or phone) 0..1
    shadow_angle: float  # radians, direction of the shadow band
    light_direction: tuple[float, float, float]  # unit vector towards the main light

    def __post_init__(self) -> None:
        if not 1500.0 <= self.temperature_k <= 12000.0:
            raise ValueError(f"colour temperature {self.temperature_k} K is implausible")
        if self.intensity <= 0:
            raise ValueError("light intensity must be positive")


def sample_lighting(rng: np.random.Generator) -> Lighting:
    """A lighting situation at some intake: bulbs, neon, daylight through a door; sometimes a hand's shadow."""
    azimuth = rng.uniform(0, 2 * np.pi)
    elevation = rng.uniform(np.radians(35), np.radians(80))
    direction = (
        float(np.cos(elevation) * np.cos(azimuth)),
        float(np.cos(elevation) * np.sin(azimuth)),
        float(np.sin(elevation)),
    )
    return Lighting(
        temperature_k=float(rng.uniform(2700.0, 6500.0)),
        intensity=float(np.exp(rng.normal(0.0, 0.45))),
        vignetting=float(rng.uniform(0.0, 0.45)),
        shadow_strength=float(rng.uniform(0.0, 0.5) if rng.random() < 0.5 else 0.0),
        shadow_angle=float(rng.uniform(0, 2 * np.pi)),
        light_direction=direction,
    )


def jitter_lighting(lighting: Lighting, rng: np.random.Generator) -> Lighting:
    """The same session a moment later: the operator moved a little, a cloud passed."""
    return Lighting(
        temperature_k=float(np.clip(lighting.temperature_k * np.exp(rng.normal(0, 0.03)), 2500, 7000)),
        intensity=float(lighting.intensity * np.exp(rng.normal(0, 0.08))),
        vignetting=lighting.vignetting,
        shadow_strength=float(np.clip(lighting.shadow_strength + rng.normal(0, 0.05), 0.0, 0.6)),
        shadow_angle=float(lighting.shadow_angle + rng.normal(0, 0.3)),
        light_direction=lighting.light_direction,
    )


_XYZ_TO_LINEAR_SRGB = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])


def illuminant_rgb(temperature_k: float) -> np.ndarray:
    """Linear-sRGB colour (G = 1) of a black body at this temperature (Kim et al. 2002 Planckian locus fit)."""
    t = float(temperature_k)
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    rgb = _XYZ_TO_LINEAR_SRGB @ np.array([x / y, 1.0, (1 - x - y) / y])
    rgb = np.clip(rgb, 0.02, None)
    return rgb / rgb[1]


def _crosstalk_matrix(crosstalk: tuple[float, float, float]) -> np.ndarray:
    """Sensor response: each channel also sees a share of its spectral neighbours (rows sum to 1)."""
    r, g, b = crosstalk
    matrix = np.array([[1.0, r, r / 3], [g / 2, 1.0, g / 2], [b / 3, b, 1.0]])
    return matrix / matrix.sum(axis=1, keepdims=True)


def _ccm(saturation: float) -> np.ndarray:
    """A colour-correction matrix: partly inverts crosstalk, with the maker's saturation (rows sum to 1)."""
    s = saturation - 1.0
    return np.eye(3) * (1 + s) - s / 2 * (np.ones((3, 3)) - np.eye(3))


def apply_colour_matrix(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """image (h, w, 3) times a 3x3 matrix per pixel; plain products so no BLAS threads fight the worker pool."""
    out = np.empty_like(image)
    for row in range(3):
        out[..., row] = matrix[row, 0] * image[..., 0] + matrix[row, 1] * image[..., 1] + matrix[row, 2] * image[..., 2]
    return out


def _box_blur(image: np.ndarray) -> np.ndarray:
    """3x3 box blur (for unsharp masking); the one-pixel border keeps its own value."""
    blurred = image.copy()
    rows = image[:-2] + image[1:-1] + image[2:]
    blurred[1:-1, 1:-1] = (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) * np.float32(1 / 9)
    return blurred


#: Tone curves work on 12-bit values, like a phone's raw pipeline.
_TONE_LEVELS = 4096


def _tone_curve(phone: PhoneProfile) -> np.ndarray:
    """Lookup table (12-bit linear -> 0..1 display) of the phone's gamma and S-shaped contrast."""
    x = np.linspace(0.0, 1.0, _TONE_LEVELS) ** (1.0 / phone.gamma)
    return ((1 - phone.contrast) * x + phone.contrast * x * x * (3.0 - 2.0 * x)).astype(np.float32)


def lighting_maps(height: int, width: int, lighting: Lighting) -> np.ndarray:
    """Spatial light falloff (height, width): vignetting times a soft shadow band."""
    ys = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :] * (width / height)
    radius2 = (xs * xs + ys * ys) / (1.0 + (width / height) ** 2)
    falloff = 1.0 - lighting.vignetting * radius2
    if lighting.shadow_strength > 0:
        along = xs * np.cos(lighting.shadow_angle) + ys * np.sin(lighting.shadow_angle)
        falloff = falloff * (1.0 - lighting.shadow_strength / (1.0 + np.exp(-(along - 0.3) * 6.0)))
    return falloff.astype(np.float32)


def capture(reflectance: np.ndarray, phone: PhoneProfile, lighting: Lighting, rng: np.random.Generator) -> np.ndarray:
    """What the phone saves: 8-bit sRGB-like pixels (h, w, 3) of a scene's reflectance under a lighting."""
    height, width = reflectance.shape[:2]
    light = illuminant_rgb(lighting.temperature_k)
    sensor_matrix = _crosstalk_matrix(phone.sensor_crosstalk)
    # Light colour, intensity and the sensor's crosstalk are one linear map per pixel; falloff scales it.
    to_sensor = sensor_matrix @ np.diag(light * lighting.intensity)
    raw = apply_colour_matrix(reflectance, to_sensor.astype(np.float32))
    raw *= lighting_maps(height, width, lighting)[..., None]
    # Auto-exposure meters the whole frame (tray included) and only partly normalises it; it also
    # protects highlights, so kernels on a black tray are bright but rarely clipped.
    metered = raw[::8, ::8]
    mean_level = float(metered.mean()) + 1e-4
    exposure = 2.0**phone.exposure_bias * (0.30 / mean_level) ** phone.ae_strength * 0.30 ** (1 - phone.ae_strength)
    exposure = min(exposure, 0.92 / (float(np.percentile(metered, 99.5)) + 1e-4))
    raw *= np.float32(exposure)
    # Shot noise grows with the signal, read noise with the gain (dim light: high ISO).
    noise_sd = np.sqrt(np.clip(raw, 0.0, None) + np.float32(0.02))
    noise_sd *= np.float32(phone.noise * np.sqrt(max(exposure, 0.1)))
    raw += noise_sd * noise_like(raw.shape, rng)
    # Auto white balance removes only part of the illuminant's cast, then the maker's tint is added;
    # gains and the colour-correction matrix are again one linear map.
    seen_light = sensor_matrix @ light
    gains = (seen_light[1] / seen_light) ** phone.wb_strength * np.asarray(phone.wb_tint)
    colour = apply_colour_matrix(raw, (_ccm(phone.ccm_saturation) @ np.diag(gains)).astype(np.float32))
    levels = np.clip(colour * (_TONE_LEVELS - 1) + 0.5, 0, _TONE_LEVELS - 1).astype(np.int16)
    colour = _tone_curve(phone)[levels]
    luma_weights = np.array([0.299, 0.587, 0.114])
    saturation = phone.saturation * np.eye(3) + (1 - phone.saturation) * np.outer(np.ones(3), luma_weights)
    colour = apply_colour_matrix(colour, saturation.astype(np.float32))
    if phone.sharpen > 0:
        colour += np.float32(phone.sharpen) * (colour - _box_blur(colour))
    colour *= np.float32(255.0)
    colour += np.float32(0.5)
    return np.clip(colour, 0, 255).astype(np.uint8)


def encode_jpeg(pixels: np.ndarray, phone: PhoneProfile) -> bytes:
    """JPEG bytes as the phone saves them: its quality and chroma subsampling, EXIF Make/Model/Orientation.

    With orientation 6 the pixels are stored turned 90° counter-clockwise, as sensors in portrait
    phones do; a reader must apply the EXIF orientation (PIL.ImageOps.exif_transpose) to see the tray upright.
    """
    stored = np.rot90(pixels, k=1) if phone.orientation == 6 else pixels
    image = Image.fromarray(np.ascontiguousarray(stored), mode="RGB")
    exif = Image.Exif()
    exif[EXIF_MAKE] = phone.make
    exif[EXIF_MODEL] = phone.model
    exif[EXIF_ORIENTATION] = phone.orientation
    buffer = io.BytesIO()
    image.save(
        buffer,
        format="JPEG",
        quality=phone.jpeg_quality,
        subsampling=phone.chroma_subsampling,
        exif=exif.tobytes(),
        optimize=False,
    )
    return buffer.getvalue()

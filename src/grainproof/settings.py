"""One Settings object, read once from GRAINPROOF_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path


def _default_data_dir() -> Path:
    """Per-user data directory, following the XDG convention on Linux."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "grainproof"


def _default_geo_dir() -> Path:
    """The repository's top-level geo/ (built-in region sets), next to src/."""
    return Path(__file__).resolve().parents[2] / "geo"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"GRAINPROOF_{name}", default)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything configurable, in one place; build with `Settings.from_env()` or `get_settings()`."""

    data_dir: Path = field(default_factory=_default_data_dir)
    #: True when GRAINPROOF_DATA_DIR was given: `grainproof demo` then keeps its world and data under it.
    data_dir_set: bool = False
    cache_dir: Path | None = None
    database_url: str | None = None
    backbone: str = "efficientnet_lite0"
    alpha: float = 0.01
    #: Below this share of kernels of the declared variety (significantly), a lot is flagged for purity; 0 (the
    #: default) reports purity with its interval but never flags on it: on simulated tray photos (3 photos a
    #: lot) a 0.9 flagged 6 % of genuine lots whatever alpha, because patch units of tray photos do not fit the
    #: kernel-level densities (docs/scoring.md). Set 0.9 where units are single kernels (rice: calibrated).
    min_purity: float = 0.0
    seed: int = 0
    max_upload_bytes: int = 25 * 1024 * 1024
    max_photo_pixels: int = 50_000_000
    min_photo_side: int = 64
    torch_threads: int = 0  # 0: use every core
    embed_runtime: str = "openvino-bf16"  # or openvino, onnxruntime, torch (fp32, same vectors; see embed/runtime.py)
    # The intake protocol's fixed phone-to-tray distance (mm), if it has one: without the card, the EXIF focal
    # length then gives kernel sizes their scale (embed/plain_tray.py). None: the nominal field of view does.
    capture_distance_mm: float | None = None
    # The service (grainproof serve): origin checks, upload limits, EPCIS identifiers.
    region_set: str | None = "fr-departements"
    max_photos_per_lot: int = 20
    gs1_gtin: str | None = None  # your product's GTIN for EPCIS export; required there, never a made-up default
    geo_dir: Path = field(default_factory=_default_geo_dir)
    # The auditor's desk: signs browser session cookies; set it when several service processes share users.
    session_secret: str | None = field(default=None, repr=False)
    # The desk shows times in the browser's zone; this one (an IANA name) until the browser has said it.
    desk_timezone: str = "UTC"
    # The calibration monitor (grainproof.monitor): the share of unflagged lots drawn for blind audits, the key
    # of that draw (else a random one kept in the data dir), the low-confidence share it tolerates, and the
    # probability of any false alert over the whole stream, shared by every group's test.
    blind_audit_rate: float = 0.02
    blind_audit_secret: str | None = field(default=None, repr=False)
    monitor_low_confidence_share: float = 0.25
    monitor_false_alert_rate: float = 0.05

    def __post_init__(self) -> None:
        from grainproof.errors import GrainproofError

        for name, value in (
            ("GRAINPROOF_ALPHA", self.alpha),
            ("GRAINPROOF_MONITOR_LOW_CONFIDENCE_SHARE", self.monitor_low_confidence_share),
            ("GRAINPROOF_MONITOR_FALSE_ALERT_RATE", self.monitor_false_alert_rate),
        ):
            if not 0.0 < value < 1.0:
                raise GrainproofError(f"{name}={value} must lie strictly between 0 and 1.")
        if not 0.0 <= self.min_purity < 1.0:
            raise GrainproofError(
                f"GRAINPROOF_MIN_PURITY={self.min_purity} must lie in [0, 1) (0 reports purity without flagging on it)."
            )
        if not 0.0 <= self.blind_audit_rate <= 1.0:
            raise GrainproofError(
                f"GRAINPROOF_BLIND_AUDIT_RATE={self.blind_audit_rate} must lie between 0 and 1 "
                "(0 turns blind audits off)."
            )

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(_env("DATA_DIR", str(_default_data_dir()))).expanduser()
        cache = os.environ.get("GRAINPROOF_CACHE_DIR")
        return cls(
            data_dir=data_dir,
            data_dir_set=bool(os.environ.get("GRAINPROOF_DATA_DIR")),
            cache_dir=Path(cache).expanduser() if cache else None,
            database_url=os.environ.get("GRAINPROOF_DATABASE_URL") or None,
            backbone=_env("BACKBONE", "efficientnet_lite0"),
            alpha=float(_env("ALPHA", "0.01")),
            min_purity=float(_env("MIN_PURITY", "0")),
            seed=int(_env("SEED", "0")),
            max_upload_bytes=int(_env("MAX_UPLOAD_BYTES", str(25 * 1024 * 1024))),
            max_photo_pixels=int(_env("MAX_PHOTO_PIXELS", "50000000")),
            min_photo_side=int(_env("MIN_PHOTO_SIDE", "64")),
            torch_threads=int(_env("TORCH_THREADS", "0")),
            embed_runtime=_env("EMBED_RUNTIME", "openvino-bf16"),
            capture_distance_mm=float(_env("CAPTURE_DISTANCE_MM", "0")) or None,
            region_set=_env("REGION_SET", "fr-departements") or None,
            max_photos_per_lot=int(_env("MAX_PHOTOS_PER_LOT", "20")),
            gs1_gtin=os.environ.get("GRAINPROOF_GS1_GTIN") or None,
            geo_dir=Path(_env("GEO_DIR", str(_default_geo_dir()))).expanduser(),
            session_secret=os.environ.get("GRAINPROOF_SESSION_SECRET") or None,
            desk_timezone=_env("DESK_TIMEZONE", "UTC"),
            blind_audit_rate=float(_env("BLIND_AUDIT_RATE", "0.02")),
            blind_audit_secret=os.environ.get("GRAINPROOF_BLIND_AUDIT_SECRET") or None,
            monitor_low_confidence_share=float(_env("MONITOR_LOW_CONFIDENCE_SHARE", "0.25")),
            monitor_false_alert_rate=float(_env("MONITOR_FALSE_ALERT_RATE", "0.05")),
        )

    @property
    def embedding_cache_dir(self) -> Path:
        """Where photo embeddings are cached (GRAINPROOF_CACHE_DIR, else inside the data dir)."""
        return self.cache_dir or self.data_dir / "cache"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def region_sets_dir(self) -> Path:
        """Where user-registered region sets (`grainproof regions import`) are kept."""
        return self.data_dir / "regions"

    @property
    def photos_dir(self) -> Path:
        return self.data_dir / "photos"

    @property
    def sqlalchemy_url(self) -> str:
        """GRAINPROOF_DATABASE_URL, else a SQLite file in the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'grainproof.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()

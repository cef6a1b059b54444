"""Fixtures shared by every test: paths to ../shared data (skipped cleanly where absent), settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def rice_dir() -> Path:
    """../shared/data/rice (400 real single-kernel photos); the test is skipped where it is absent."""
    path = SHARED_DATA / "rice"
    if not path.is_dir() or not any(path.glob("*.jpg")):
        pytest.skip(f"real rice photos not found at {path}")
    return path


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh GRAINPROOF_DATA_DIR for one test, with the settings cache cleared."""
    from grainproof.settings import get_settings

    directory = tmp_path / "grainproof-data"
    monkeypatch.setenv("GRAINPROOF_DATA_DIR", str(directory))
    get_settings.cache_clear()
    yield directory
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def rice_photo_embeddings(rice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list]:
    """Every rice photo embedded once per test session: (photo stems, PhotoEmbeddings), in file order."""
    from grainproof.embed import get_embedder
    from grainproof.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("rice-session"), torch_threads=2)
    paths = sorted(rice_dir.glob("*.jpg"))
    return [p.stem for p in paths], get_embedder(settings=settings).embed_files(paths)

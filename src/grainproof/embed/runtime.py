"""Running a backbone's feature extractor fast on CPU: OpenVINO or ONNX Runtime on an exported network, or torch.

Each returns the last feature map (batch, channels, h, w) for a batch of canvases of one shape. `grainproof bench
embed` measures each against the naive path and checks their vectors agree (cosine >= 0.999).

The network is exported to ONNX once per weights (in the cache dir) and OpenVINO keeps its compiled form in the
cache dir too, so a warm start neither imports torch nor compiles: it reads the compiled network from disk.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from grainproof.errors import GrainproofError

if TYPE_CHECKING:
    import torch

    from grainproof.embed.backbones import LoadedBackbone


class FeatureMapRunner(Protocol):
    """Something that turns normalised canvases (b, 3, h, w) float32 into feature maps (b, c, h/32, w/32)."""

    name: str
    #: "fp32", or "bf16" where the network runs in bfloat16: part of the embedding cache key.
    numerics: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def cpu_threads(requested: int) -> int:
    """Threads to use: the requested number, or every core this process may run on (0)."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def feature_module(model: Any) -> torch.nn.Module:
    """The timm network as a module that returns its last feature map (what every runner computes)."""
    import torch

    class FeatureModule(torch.nn.Module):
        def __init__(self, network: Any) -> None:
            super().__init__()
            self.network = network

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features: torch.Tensor = self.network.forward_features(x)
            return features

    return FeatureModule(model).eval()


class TorchRunner:
    """torch in inference mode, one canvas at a time (batching large canvases is slower on CPU: cache misses)."""

    name = "torch"
    numerics = "fp32"

    def __init__(self, model: Any, *, threads: int) -> None:
        self.module = feature_module(model)
        self.threads = threads

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            outputs = [self.module(torch.from_numpy(batch[i : i + 1])).numpy() for i in range(len(batch))]
        return np.concatenate(outputs, axis=0)


def export_onnx(model: Any, path: Path) -> Path:
    """Export the feature extractor to ONNX (dynamic batch and canvas size), atomically; needs the `onnx` package."""
    import torch

    try:
        import onnx  # noqa: F401  (torch's exporter needs it; fail here with a clear message instead)
    except ImportError:
        raise GrainproofError("The onnx package is not installed; run `make install`.") from None
    example = torch.zeros(1, 3, 224, 224)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notes are not for our users
            torch.onnx.export(
                feature_module(model),
                (example,),
                tmp,
                input_names=["canvas"],
                output_names=["features"],
                dynamic_axes={"canvas": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class OnnxRunner:
    """ONNX Runtime on CPU with every graph optimisation (fuses batch norms into convolutions)."""

    name = "onnxruntime"
    numerics = "fp32"

    def __init__(self, onnx_path: Path, *, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outputs = self.session.run(None, {"canvas": np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(outputs[0], dtype=np.float32)


class OpenVinoRunner:
    """OpenVINO on CPU, compiled from the same ONNX file.

    In fp32 its convolution kernels ran 1.4x faster than ONNX Runtime's here (42 vs 31 images/s on 320x608
    canvases, 2 threads) with the same vectors (largest difference 7e-6). In bf16, on CPUs with AMX or
    AVX512-BF16, twice as fast again (84 images/s); vectors move to a cosine of 0.998 from fp32, and stay the
    same to the bit across batch sizes, orders and runs. On a CPU without bf16 units OpenVINO runs fp32.
    """

    def __init__(self, onnx_path: Path, *, threads: int, bf16: bool, compiled_dir: Path | None = None) -> None:
        import openvino as ov

        self.name = "openvino-bf16" if bf16 else "openvino"
        self.numerics = "bf16" if bf16 else "fp32"
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        core = ov.Core()
        if compiled_dir is None:
            self.model = core.compile_model(str(onnx_path), "CPU", config)
            return
        from filelock import FileLock

        # OpenVINO's model cache: the compiled network, keyed by the ONNX file and the settings above, is read
        # back on the next start instead of compiled again (0.2 s instead of 1 s here). Its writes are not safe
        # between processes (service workers, Ray actors starting together), so one compiles at a time.
        compiled_dir.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(compiled_dir)})
        with FileLock(compiled_dir / ".compile.lock"):
            self.model = core.compile_model(str(onnx_path), "CPU", config)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        request = self.model.create_infer_request()  # one per call: safe from several threads
        outputs = request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(outputs[0], dtype=np.float32)


#: Runtimes by name. The fp32 ones give the same vectors; openvino-bf16 a cosine of 0.998 to them (bench embed
#: prints the cosine against the naive path).
RUNTIMES = ("openvino-bf16", "openvino", "onnxruntime", "torch")


def make_runner(
    backbone: LoadedBackbone, *, kind: str, onnx_path: Path, threads: int, compiled_dir: Path | None = None
) -> FeatureMapRunner:
    """The runner of the given kind (see RUNTIMES); ONNX files are exported once and reused, and OpenVINO keeps
    its compiled network in `compiled_dir`. Only the torch runner and a missing ONNX file load the network."""
    if kind == "torch":
        return TorchRunner(backbone.model, threads=threads)
    if kind not in RUNTIMES:
        raise GrainproofError(f"Unknown runtime {kind!r}: use one of {', '.join(RUNTIMES)}.")
    if not onnx_path.is_file():
        export_onnx(backbone.model, onnx_path)
    if kind.startswith("openvino"):
        return OpenVinoRunner(onnx_path, threads=threads, bf16=kind == "openvino-bf16", compiled_dir=compiled_dir)
    return OnnxRunner(onnx_path, threads=threads)

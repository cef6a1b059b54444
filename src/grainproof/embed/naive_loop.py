"""The baseline of `grainproof bench embed`'s whole-process comparison: a plain timm loop, as a newcomer writes it.

Run as a script in its own process (`python -I naive_loop.py WEIGHTS LIST OUT`), so that its start-up is timed
like ours and it imports nothing of grainproof: `tf_efficientnet_lite0` from timm with the packaged ImageNet
weights mapped by position, each photo resized to 224x224, normalised with mean = std = 0.5, one photo at a
time through the network in eval mode under `torch.no_grad()`. The pooled vectors are saved to OUT (.npy).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def main(weights: Path, photo_list: Path, out: Path) -> None:
    import numpy as np
    import timm
    import torch
    from PIL import Image

    model: Any = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), state.values(), strict=True)))
    model.reset_classifier(0)
    model.eval()
    vectors = []
    for line in photo_list.read_text(encoding="utf-8").splitlines():
        photo = Image.open(line).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
        pixels = (np.asarray(photo, dtype=np.float32) / 255.0 - 0.5) / 0.5
        with torch.no_grad():
            vector = model(torch.from_numpy(pixels.transpose(2, 0, 1).copy()).unsqueeze(0))[0]
        vectors.append(vector.numpy())
    np.save(out, np.stack(vectors))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -I naive_loop.py WEIGHTS PHOTO_LIST OUT.npy")
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))

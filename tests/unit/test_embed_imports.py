"""The embed package stays light to import: torch loads only when an embedder is built."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_importing_embed_and_invariance_does_not_import_torch() -> None:
    script = (
        "import sys, grainproof.embed, grainproof.embed.invariance, grainproof.embed.photos;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_packaged_backbone_is_known_without_torch_and_its_check_is_remembered_by_sha256(tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from grainproof.embed.backbones import REGISTRY, _remember_check, load_backbone\n"
        "checked = Path(sys.argv[1])\n"
        "before = load_backbone('efficientnet_lite0', checked_dir=checked).checked\n"
        "spec = REGISTRY['efficientnet_lite0']\n"
        "_remember_check(checked / f'{spec.weights.sha256}.json', spec)\n"
        "after = load_backbone('efficientnet_lite0', checked_dir=checked)\n"
        "print(json.dumps({'id': after.backbone_id, 'dim': after.dim, 'before': before,\n"
        "                  'after': after.checked, 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found == {
        "id": "efficientnet_lite0@579344248a93",
        "dim": 1280,
        "before": False,
        "after": True,
        "torch": False,
    }
    (record,) = tmp_path.glob("*.json")
    assert record.name == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db.json"


def test_a_record_for_another_network_does_not_count_as_a_passed_check(tmp_path: Path) -> None:
    from grainproof.embed.backbones import REGISTRY, _passed_check_before

    spec = REGISTRY["efficientnet_lite0"]
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"timm_name": "tf_efficientnet_lite1", "imagenet_top1": 698}))
    assert not _passed_check_before(record, spec)
    record.write_text("{not json")
    assert not _passed_check_before(record, spec)
    record.write_text(json.dumps({"timm_name": spec.timm_name, "imagenet_top1": 698}))
    assert _passed_check_before(record, spec)

"""`visionforge export CKPT --to hailo`: ONNX first, then the HEF, lineage hef <- onnx <- ckpt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from visionforge import cli, lineage


@pytest.mark.slow
def test_checkpoint_to_hef_through_onnx(
    tmp_path: Path, checkpoint: str, fake_dfc: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["export", checkpoint, "--to", "hailo", "--calibration-size", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    onnx_path, hef_path = tmp_path / "best.onnx", tmp_path / "best.hef"
    assert out.splitlines()[0].startswith(f"wrote {onnx_path} (onnx; max abs diff vs PyTorch")
    assert out.splitlines()[1] == f"wrote {hef_path} (hef)"
    chain = lineage.lineage_chain(str(hef_path))
    assert [c["kind"] for c in chain] == ["hef", "onnx", "checkpoint"]
    assert [c["path"] for c in chain] == [str(hef_path), str(onnx_path), checkpoint]
    preflight = chain[0]["preflight"]
    assert preflight["opset"] == [18, 13] and preflight["input_shape"] == [1, 3, 16, 16]
    assert preflight["notes"][0].startswith("opset: ")
    assert preflight["max_abs_diff"] <= 1e-4
    assert chain[0]["calibration"]["images"] == 4
    (runner,) = fake_dfc.instances
    assert runner.calls[0][1]["net_input_shapes"] == {"image": [1, 3, 16, 16]}
    metadata = json.loads((tmp_path / "best.metadata.json").read_text())
    assert metadata["class_names"] == ["ace", "king"]
    code = cli.main(["lineage", str(hef_path)])
    out, _ = capsys.readouterr()
    assert code == 0 and out.splitlines()[1].startswith("<- onnx onnx-")

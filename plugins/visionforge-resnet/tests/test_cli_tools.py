"""`visionforge resnet recipe|presets|curve|make-tiny` (no training)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from visionforge.cli import main
from visionforge.config import recipe_from_dict
from visionforge_resnet.curve import compare_with_reference


def test_recipe_command_writes_a_valid_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r101.yaml"
    args = ["resnet", "recipe", "--arch", "resnet101", "--num-classes", "100", "--ema"]
    assert main([*args, "--train", "/d/train", "-o", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    recipe = recipe_from_dict(data)
    assert recipe.model.as_dict()["depth"] == 101
    assert recipe.data.mixup is not None and recipe.data.mixup.num_classes == 100
    assert recipe.trainer.ema is not None
    assert recipe.data.train.fields()["root"] == "/d/train"

    assert main(["resnet", "recipe", "--arch", "resnet5O"]) == 2
    err = capsys.readouterr().err
    assert "--arch 'resnet5O': not a preset" in err and len(err.strip().splitlines()) == 1


def test_presets_command_lists_the_resnets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resnet", "presets"]) == 0
    printed = capsys.readouterr().out
    for name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        assert name in printed


def test_make_tiny_refuses_an_existing_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["resnet", "make-tiny", str(tmp_path), "--classes", "2", "--train-per-class", "1"]
    assert main([*args, "--val-per-class", "1", "--image-size", "8"]) == 0
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["n01440764", "n01448683"]
    assert main([*args, "--val-per-class", "1"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err


def _write_metrics(path: Path, top1_by_epoch: dict[int, float]) -> None:
    """A trainer-style metrics.csv (1-based epochs) with a step row mixed in."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["kind", "epoch", "step", "lr", "val/top1"])
        writer.writeheader()
        writer.writerow({"kind": "step", "epoch": 0, "step": 5, "lr": 0.1, "val/top1": ""})
        for epoch, top1 in top1_by_epoch.items():
            writer.writerow(
                {"kind": "epoch", "epoch": epoch, "step": 10 * epoch, "lr": 0.1, "val/top1": top1}
            )


def test_curve_reads_metrics_csv_and_plots(tmp_path: Path) -> None:
    _write_metrics(tmp_path / "metrics.csv", {1: 0.10, 31: 0.55})
    report = compare_with_reference(str(tmp_path))
    assert report.val_top1 == {1: 0.10, 31: 0.55}
    assert report.rows()[:2] == [(1, 0.0916, 0.10), (31, 0.6068, 0.55)]
    table = report.table()
    assert "9.16%" in table and "+0.84%" in table and "-5.68%" in table
    assert (tmp_path / "reference_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_curve_prefers_the_checkpoint_when_metrics_csv_is_stale(tmp_path: Path) -> None:
    _write_metrics(tmp_path / "metrics.csv", {1: 0.10})
    history = [{"kind": "epoch", "epoch": e, "step": e, "val/top1": 0.1 * e} for e in (1, 2, 3)]
    torch.save({"format": "visionforge.checkpoint/1", "history": history}, tmp_path / "last.ckpt")
    manifest = {"id": "checkpoint-1", "kind": "checkpoint", "position": {"epoch": 3}}
    (tmp_path / "last.ckpt.manifest.json").write_text(json.dumps(manifest))
    report = compare_with_reference(str(tmp_path), png=str(tmp_path / "plots" / "c.png"))
    assert report.source.endswith("last.ckpt")
    assert report.val_top1 == pytest.approx({1: 0.1, 2: 0.2, 3: 0.3})
    assert (tmp_path / "plots" / "c.png").is_file()


def test_curve_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resnet", "curve", str(tmp_path)]) == 2
    assert "neither metrics.csv nor last.ckpt" in capsys.readouterr().err
    (tmp_path / "metrics.csv").write_text("kind,epoch,train/loss\nepoch,1,2.0\n")
    assert main(["resnet", "curve", str(tmp_path / "metrics.csv")]) == 2
    assert "no epoch with val/top1 yet" in capsys.readouterr().err


def test_registering_and_building_the_cli_stay_torch_free() -> None:
    code = (
        "import sys, visionforge, visionforge.cli\n"
        "visionforge.models.validate({'type': 'resnet', 'depth': 34})\n"
        "visionforge.cli.build_parser()\n"
        "assert 'torch' not in sys.modules and 'scipy' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

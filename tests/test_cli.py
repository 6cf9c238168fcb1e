"""The ``visionforge`` command: every command, --help, and one-line errors for bad input."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnx
import pytest
import torch
import yaml
from fsspec.registry import known_implementations
from torchvision.io import write_png

from visionforge import cli
from visionforge.export import ParityError

COMMANDS = ["train", "eval", "predict", "export", "validate", "schema", "plugins", "lineage"]
TINY_OVERRIDES = ["--set", "trainer.epochs=1"]


def tiny_recipe(folder: Path, **changes: Any) -> Path:
    """A recipe that trains a ~100k-parameter timm net on 16 generated 16x16 images."""
    data: dict[str, Any] = {
        "model": {"type": "timm", "name": "test_efficientnet", "num_classes": 4},
        "data": {
            "train": {"type": "synthetic_classification", "num_samples": 16, "image_size": 16},
            "val": {
                "type": "synthetic_classification",
                "num_samples": 8,
                "image_size": 16,
                "seed": 1,
            },
        },
        "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
        "trainer": {
            "epochs": 1,
            "batch_size": 8,
            "device": "cpu",
            "output": str(folder / "run"),
            "loggers": ["csv"],
        },
        "evaluator": {"type": "topk", "k": [1, 2]},
    }
    data.update(changes)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recipe trained once through ``visionforge train`` (its run folder is recipe/../run)."""
    folder = tmp_path_factory.mktemp("trained")
    recipe = tiny_recipe(folder)
    assert cli.main(["train", str(recipe)]) == 0
    return recipe


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: visionforge {command}")


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        assert f"    {command}" in out
    code, _, err = run(capsys)
    assert code == 2 and "required: COMMAND" in err


def test_building_the_parser_does_not_import_torch() -> None:
    code = (
        "import sys; from visionforge import cli; cli.build_parser(); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# ----------------------------------------------------------------------------- validate


def test_validate_ok_with_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tiny_recipe(tmp_path)
    code, out, _ = run(capsys, "validate", str(recipe), "--set", "trainer.epochs=7")
    assert code == 0
    assert out.startswith(f"ok: {recipe}: model timm, data.train synthetic_classification")
    assert "7 epoch(s) of batch 8" in out


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["model.type=timmm"], ["model.type: unknown model 'timmm'", "did you mean 'timm'"]),
        (
            ["data.train.num_samples=many"],
            ["data.train.num_samples: Input should be a valid integer", "'many'"],
        ),
        (["trainer.epochs=0"], ["trainer.epochs: Input should be greater than or equal to 1"]),
        (["evaluator.type=top"], ["evaluator.type: unknown evaluator 'top'", "'topk'"]),
        (["trainer"], ["--set 'trainer': expected KEY=VALUE"]),
    ],
)
def test_validate_bad_recipes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    fragments: list[str],
) -> None:
    recipe = tiny_recipe(tmp_path)
    args = [item for o in overrides for item in ("--set", o)]
    code, _, err = run(capsys, "validate", str(recipe), *args)
    assert code == 2
    assert_one_line_error(err, *fragments)


def test_missing_and_broken_recipe_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert_one_line_error(err, "nope.yaml: file not found")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: {type: timm\ndata: [\n")
    code, _, err = run(capsys, "train", str(broken))
    assert code == 2
    assert_one_line_error(err, "broken.yaml:", "invalid YAML")


def test_url_without_its_fsspec_backend(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(
        known_implementations,
        "s3",
        {"class": "s3fs_not_installed.S3FileSystem", "err": "Install s3fs to access S3"},
    )
    monkeypatch.delitem(importlib.import_module("fsspec.registry")._registry, "s3", raising=False)
    code, _, err = run(capsys, "validate", "s3://bucket/recipes/r.yaml")
    assert code == 2
    assert_one_line_error(err, "s3://bucket/recipes/r.yaml", "Install s3fs")


# ----------------------------------------------------------------------------- schema, plugins


def test_schema_to_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schema.json"
    code, stdout, err = run(capsys, "schema", "--out", str(out))
    assert code == 0 and stdout == "" and str(out) in err
    schema = json.loads(out.read_text())
    titles = [v["title"] for v in schema["$defs"]["model_component"]["oneOf"]]
    assert "core:timm" in titles
    assert schema["properties"]["model"] == {"$ref": "#/$defs/model_component"}


def test_plugins_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plugins")
    assert code == 0
    header, core = out.splitlines()[:2]
    assert header.split() == ["plugin", "version", "module", "status"]
    assert core.split()[0] == "core" and core.split()[-1] == "ok"
    assert "    exporters: onnx" in out and "    runners: local" in out


def test_failing_plugin_cli_hook_does_not_break_others(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(subparsers: Any) -> None:
        raise RuntimeError("no commands today")

    def working(subparsers: Any) -> None:
        parser = subparsers.add_parser("toy", help="a plugin command")
        parser.set_defaults(func=lambda args: 7)

    impls = [
        SimpleNamespace(plugin_name="broken", function=broken),
        SimpleNamespace(plugin_name="toy", function=working),
    ]
    relay = SimpleNamespace(visionforge_cli=SimpleNamespace(get_hookimpls=lambda: impls))
    monkeypatch.setattr("visionforge.plugins.hook", lambda: relay)
    code, _, err = run(capsys, "toy")
    assert code == 7
    assert "warning: plugin 'broken' could not add its commands: RuntimeError" in err


# ----------------------------------------------------------------------------- exit codes


def test_exit_codes_and_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def command(error: BaseException) -> Any:
        def fn(args: Any) -> int:
            raise error

        return fn

    cases: list[tuple[BaseException, int]] = [
        (KeyboardInterrupt(), 130),
        (ParityError("m.onnx: differs"), 1),
        (RuntimeError("boom\nsecond line"), 1),
    ]
    for error, expected in cases:
        monkeypatch.setattr(cli, "cmd_schema", command(error))
        code, _, err = run(capsys, "schema")
        assert code == expected, err
    assert_one_line_error(err, "RuntimeError: boom second line", "--debug")
    code, _, err = run(capsys, "--debug", "schema")
    assert code == 1 and "Traceback (most recent call last)" in err


# ----------------------------------------------------------------------------- checkpoints


def test_unreadable_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "half.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    for command in ("eval", "export", "predict"):
        extra = ["x.png"] if command == "predict" else []
        code, _, err = run(capsys, command, str(bad), *extra)
        assert code == 2
        assert_one_line_error(err, "half.ckpt: not a readable checkpoint")
    code, _, err = run(capsys, "eval", str(tmp_path / "gone.ckpt"))
    assert code == 2
    assert_one_line_error(err, "gone.ckpt: checkpoint not found")


@pytest.mark.slow
def test_checkpoint_of_another_model(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = trained.parent / "run" / "last.ckpt"
    other = tiny_recipe(tmp_path, model={"type": "timm", "name": "test_resnet", "num_classes": 4})
    code, _, err = run(capsys, "eval", str(other), "--checkpoint", str(checkpoint))
    assert code == 2
    assert_one_line_error(err, "last.ckpt: checkpoint does not fit the model", "missing keys")


# ----------------------------------------------------------------------------- train & co


@pytest.mark.slow
def test_train_writes_a_run(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = trained.parent / "run"
    for name in ("last.ckpt", "best.ckpt", "metrics.csv", "manifest.json"):
        assert (run_dir / name).is_file(), name
    code, out, _ = run(capsys, "eval", str(trained), "--json")
    assert code == 0
    metrics = json.loads(out)
    assert set(metrics) == {"top1", "top2"} and 0 <= metrics["top1"] <= metrics["top2"] <= 1


@pytest.mark.slow
def test_eval_of_a_checkpoint_with_reports(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = trained.parent / "run" / "best.ckpt"
    report = tmp_path / "report"
    code, out, err = run(
        capsys,
        "eval",
        str(checkpoint),
        "--set",
        "evaluator.per_class=true",
        "--report",
        str(report),
    )
    assert code == 0
    assert out.splitlines()[0].split() == ["metric", "value"]
    assert {"top1", "top2", "mean_class_acc"} <= {line.split()[0] for line in out.splitlines()}
    assert (report / "per_class.json").is_file()
    assert str(report / "per_class.json") in err


@pytest.mark.slow
def test_predict_prints_topk_with_class_names(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = []
    for i, size in enumerate([(20, 30), (40, 24)]):
        path = tmp_path / f"img{i}.png"
        write_png(torch.randint(0, 256, (3, *size), dtype=torch.uint8), str(path))
        images.append(str(path))
    code, out, _ = run(capsys, "predict", str(trained), *images, images[0], "--topk", "9", "--json")
    assert code == 0
    results = json.loads(out)
    assert [r["image"] for r in results] == [*images, images[0]]
    for result in results:
        top = result["top"]
        assert len(top) == 4  # clipped to the number of classes
        probabilities = [t["probability"] for t in top]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert all(t["class"].endswith(f"_{t['index']}") for t in top)  # synthetic names
    assert results[0]["top"] == results[2]["top"]
    code, out, _ = run(capsys, "predict", str(trained), images[0], "--topk", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == images[0] and len(lines) == 3 and lines[1].split()[0] == "1."


@pytest.mark.slow
def test_predict_bad_image(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    code, _, err = run(capsys, "predict", str(trained), str(text))
    assert code == 2
    assert_one_line_error(err, "notes.png: cannot decode image")
    code, _, err = run(capsys, "predict", str(trained), str(tmp_path / "missing.jpg"))
    assert code == 2
    assert_one_line_error(err, "missing.jpg: file not found")


@pytest.mark.slow
def test_export_then_lineage(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    best = trained.parent / "run" / "best.ckpt"
    out = best.with_suffix(".onnx")
    code, stdout, err = run(
        capsys, "export", str(trained), "--opset", "18", "--set", "export.tolerance=0.001"
    )
    assert code == 0, err
    assert f"using {best}" in err
    assert stdout.startswith(f"wrote {out} (onnx; max abs diff vs PyTorch")
    model = onnx.load(str(out))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 16, 16]

    code, stdout, _ = run(capsys, "lineage", str(out))
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("onnx onnx-") and str(out) in lines[0]
    assert "max_abs_diff=" in lines[0]
    assert lines[1].startswith("<- checkpoint checkpoint-") and str(best) in lines[1]
    code, stdout, _ = run(capsys, "lineage", str(out), "--json")
    chain = json.loads(stdout)
    assert [c["kind"] for c in chain[:2]] == ["onnx", "checkpoint"]
    assert chain[0]["parents"][0]["id"] == chain[1]["id"]
    assert chain[0]["recipe_sha256"] and chain[1]["recipe_sha256"]


@pytest.mark.slow
def test_eval_without_a_trained_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tiny_recipe(tmp_path)
    code, out, err = run(capsys, "eval", str(recipe), "--json")
    assert code == 0
    assert f"note: no checkpoint in {tmp_path / 'run'}; using the model as built" in err
    assert set(json.loads(out)) == {"top1", "top2"}


def test_checkpoint_source_with_checkpoint_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "eval", "a.ckpt", "--checkpoint", "b.ckpt")
    assert code == 2
    assert_one_line_error(err, "--checkpoint b.ckpt: SOURCE a.ckpt is already a checkpoint")

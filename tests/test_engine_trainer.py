"""Trainer end to end on a tiny model: training, outputs, accumulation, clipping, EMA, AMP."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_engine_support import (
    single_thread,  # noqa: F401 (autouse fixture)
    tiny_recipe,
)

import visionforge
from visionforge import lineage
from visionforge.engine import Trainer, evaluate, load_checkpoint, load_model
from visionforge.errors import ConfigError


class StepRecorder:
    """Plugin recording the model weights after every optimizer step."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        self.lrs: list[float] = []

    @visionforge.hookimpl
    def visionforge_train_step_end(self, trainer: Any, step: int, losses: Any) -> None:
        self.weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        self.lrs.append(trainer.current_lr())


@pytest.fixture
def recorder() -> Any:
    plugin = StepRecorder()
    visionforge.plugins.register_plugin("enginetest-recorder", plugin)
    yield plugin
    visionforge.LOADER.pm.unregister(plugin)
    visionforge.LOADER.infos.pop("enginetest-recorder", None)


def final_weights(path: Path) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = load_checkpoint(str(path / "last.ckpt"))["model"]
    return weights


def test_trains_improves_and_writes_outputs(tmp_path: Path) -> None:
    recipe = tiny_recipe(
        tmp_path / "run",
        optimizer={"type": "sgd", "lr": 0.05, "momentum": 0.9},
        data={"train": {"num_samples": 96}},
        trainer={"epochs": 3, "loggers": ["console", "csv", "tensorboard"]},
    )
    trainer = Trainer(recipe)
    result = trainer.fit()
    out = tmp_path / "run"
    for name in (
        "last.ckpt",
        "best.ckpt",
        "metrics.csv",
        "manifest.json",
        "training_curves.png",
        "last.ckpt.manifest.json",
        "best.ckpt.manifest.json",
    ):
        assert (out / name).is_file(), name
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"val/top1", "train/loss", "step/train/loss", "step/lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val/top1")] == [12, 24, 36]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    losses = [float(r["train/loss"]) for r in rows]
    assert losses[-1] < 0.5 * losses[0]
    assert result.metrics["val/top1"] > 0.9  # 3 classes: chance is 1/3
    assert result.best_metric == max(float(r["val/top1"]) for r in rows)
    assert result.last_checkpoint == str(out / "last.ckpt")
    assert result.best_checkpoint == str(out / "best.ckpt")
    assert not result.stopped_by_signal

    raw = torch.load(out / "last.ckpt", weights_only=True)
    assert raw["format"] == "visionforge.checkpoint/1"
    assert raw["position"] == {"epoch": 3, "step_in_epoch": 0, "global_step": 36}
    assert raw["class_names"] == ["class0", "class1", "class2"]
    model, loaded_recipe = load_model(str(out / "last.ckpt"))
    assert loaded_recipe == recipe
    image = torch.rand(2, 3, 16, 16)
    trainer.model.eval()
    torch.testing.assert_close(
        model({"image": image})["logits"], trainer.model({"image": image})["logits"]
    )
    assert evaluate(recipe, str(out / "best.ckpt"))["top1"] == pytest.approx(result.best_metric)


def test_csv_step_rows_when_asked(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path / "run", trainer={"epochs": 1, "csv_log_steps": True})
    Trainer(recipe).fit()
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["kind"], int(r["step"])) for r in rows] == [
        ("step", 2),
        ("step", 4),
        ("step", 6),
        ("epoch", 6),
    ]
    assert all(float(r["lr"]) == 0.2 for r in rows)


def test_periodic_evaluation_and_last_epoch(tmp_path: Path) -> None:
    recipe = tiny_recipe(
        tmp_path / "run", trainer={"epochs": 3, "eval_every_epochs": 2, "max_steps_per_epoch": 2}
    )
    trainer = Trainer(recipe)
    trainer.fit()
    epochs = [r for r in trainer.history if r["kind"] == "epoch"]
    assert [("val/top1" in r) for r in epochs] == [False, True, True]
    assert [r["step"] for r in epochs] == [2, 4, 6]


def test_manifests_link_checkpoints_to_their_dataset(tmp_path: Path) -> None:
    source = tmp_path / "shapes.json"
    source.write_text("{}")
    dataset_id = lineage.write_manifest(str(source), "dataset")["id"]
    recipe = tiny_recipe(
        tmp_path / "run",
        data={"train": {"source": str(source)}},
        trainer={"epochs": 1, "max_steps_per_epoch": 1},
    )
    result = Trainer(recipe).fit()
    chain = lineage.lineage_chain(result.last_checkpoint)
    assert [item["kind"] for item in chain] == ["checkpoint", "dataset"]
    assert chain[1]["id"] == dataset_id
    assert chain[0]["recipe_sha256"] == recipe.sha256()
    run = lineage.read_manifest(str(tmp_path / "run"))
    assert run["kind"] == "run" and run["status"] == "completed"
    sha = lineage.read_manifest(str(source))["sha256"]
    assert run["parents"] == [{"path": str(source), "id": dataset_id, "sha256": sha}]
    assert run["checkpoints"]["last"] == result.last_checkpoint


def test_grad_accumulation_equals_bigger_batch(tmp_path: Path) -> None:
    big = Trainer(tiny_recipe(tmp_path / "big", trainer={"batch_size": 8})).fit()
    accum = Trainer(
        tiny_recipe(tmp_path / "accum", trainer={"batch_size": 4, "grad_accum_steps": 2})
    ).fit()
    assert load_checkpoint(big.last_checkpoint)["position"]["global_step"] == 12
    assert load_checkpoint(accum.last_checkpoint)["position"]["global_step"] == 12
    for key, value in final_weights(tmp_path / "big").items():
        torch.testing.assert_close(
            final_weights(tmp_path / "accum")[key], value, rtol=1e-5, atol=1e-6
        )


def test_clipping_bounds_each_update(tmp_path: Path, recorder: StepRecorder) -> None:
    lr, clip = 0.5, 1e-3
    recipe = tiny_recipe(
        tmp_path / "run",
        optimizer={"type": "sgd", "lr": lr, "momentum": 0.0},
        trainer={"epochs": 1, "clip_grad_norm": clip, "max_steps_per_epoch": 3},
    )
    trainer = Trainer(recipe)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    for weights in recorder.weights:
        delta = torch.cat([(weights[k] - before[k]).flatten() for k in before])
        assert 0 < delta.norm() <= lr * clip * (1 + 1e-4)
        before = weights


def test_ema_follows_timm_formula_and_is_evaluated(tmp_path: Path, recorder: StepRecorder) -> None:
    recipe = tiny_recipe(
        tmp_path / "run",
        trainer={
            "epochs": 1,
            "max_steps_per_epoch": 3,
            "ema": {"decay": 0.5, "warmup": False, "evaluate": True},
        },
    )
    result = Trainer(recipe).fit()
    ckpt = load_checkpoint(result.last_checkpoint)
    w1, w2, w3 = recorder.weights
    # ModelEmaV3: decay 0 at step 1 (copy), then the configured decay
    for key in w1:
        expected = 0.5 * (0.5 * w1[key] + 0.5 * w2[key]) + 0.5 * w3[key]
        torch.testing.assert_close(ckpt["ema"][key], expected)
    assert not torch.equal(ckpt["ema"]["net.5.weight"], ckpt["model"]["net.5.weight"])
    ema_model, _ = load_model(result.last_checkpoint)
    plain_model, _ = load_model(result.last_checkpoint, use_ema=False)
    torch.testing.assert_close(ema_model.state_dict()["net.5.weight"], ckpt["ema"]["net.5.weight"])
    torch.testing.assert_close(
        plain_model.state_dict()["net.5.weight"], ckpt["model"]["net.5.weight"]
    )
    assert evaluate(recipe, result.last_checkpoint)["top1"] == pytest.approx(
        result.metrics["val/top1"]
    )


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu(tmp_path: Path, precision: str) -> None:
    recipe = tiny_recipe(
        tmp_path / "run",
        trainer={"epochs": 1, "precision": precision, "clip_grad_norm": 1.0, "channels_last": True},
    )
    trainer = Trainer(recipe)
    seen: set[torch.dtype] = set()  # the classifier head's output dtype in training steps
    head = trainer.model.net[-1]
    head.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    result = trainer.fit()
    assert torch.isfinite(torch.tensor(result.metrics["train/loss"]))
    assert seen == {torch.bfloat16 if precision == "bf16" else torch.float16}  # autocast ran
    assert head.weight.dtype == torch.float32  # the weights themselves stay fp32
    scaler = load_checkpoint(result.last_checkpoint)["scaler"]
    assert ("scale" in scaler) == (precision == "fp16")


def test_mixup_with_uint8_images_normalized_on_device(tmp_path: Path) -> None:
    blocks: dict[str, Any] = {
        "data": {
            "train": {"uint8": True},
            "val": {"uint8": True},
            "mixup": {"num_classes": 3, "mixup_alpha": 0.2, "cutmix_alpha": 1.0},
            "normalize_on_device": [[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]],
        },
        "trainer": {"epochs": 1, "train_metrics": True},
    }
    first = Trainer(tiny_recipe(tmp_path / "a", **blocks)).fit()
    again = Trainer(tiny_recipe(tmp_path / "b", **blocks)).fit()
    plain = Trainer(
        tiny_recipe(tmp_path / "c", **{**blocks, "data": {**blocks["data"], "mixup": None}})
    ).fit()
    assert 0.0 <= first.metrics["train/top1"] <= 1.0
    assert torch.isfinite(torch.tensor(first.metrics["train/loss"]))
    weights = final_weights(tmp_path / "a")
    assert all(torch.equal(v, final_weights(tmp_path / "b")[k]) for k, v in weights.items())
    assert not torch.equal(weights["net.5.weight"], final_weights(tmp_path / "c")["net.5.weight"])
    assert first.metrics == again.metrics != plain.metrics


def test_float_images_with_normalize_on_device_is_a_clear_error(tmp_path: Path) -> None:
    recipe = tiny_recipe(
        tmp_path / "run",
        data={"normalize_on_device": [[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]},
        trainer={"epochs": 1},
    )
    with pytest.raises(ConfigError, match="normalize_on_device"):
        Trainer(recipe).fit()


def test_missing_optional_logger_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    recipe = tiny_recipe(tmp_path / "run", trainer={"loggers": ["console", "mlflow"]})
    try:
        import mlflow  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="trainer.loggers: 'mlflow'.*pip install mlflow"):
            Trainer(recipe)
    else:
        pytest.skip("mlflow is installed")


def test_dataset_smaller_than_a_batch_is_a_clear_error(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path / "run", data={"train": {"num_samples": 5}})
    with pytest.raises(ConfigError, match="data.train: 5 samples are fewer than one batch"):
        Trainer(recipe)


def test_init_checkpoint_loads_its_weights_and_another_model_names_keys(tmp_path: Path) -> None:
    first = Trainer(tiny_recipe(tmp_path / "a", trainer={"epochs": 1})).fit()
    wider = tiny_recipe(
        tmp_path / "b",
        model={"type": "tiny_net", "norm": True},
        trainer={"init_checkpoint": first.last_checkpoint},
    )
    with pytest.raises(visionforge.VisionforgeError, match=r"missing keys: net\.4\.bias"):
        Trainer(wider)
    trained = load_checkpoint(first.last_checkpoint)["model"]
    started = tiny_recipe(tmp_path / "c", trainer={"init_checkpoint": first.last_checkpoint})
    own = Trainer(started).model.state_dict()
    assert all(torch.equal(own[key], value) for key, value in trained.items())
    fresh = Trainer(tiny_recipe(tmp_path / "d")).model.state_dict()  # the seeded initial weights
    assert not all(torch.equal(fresh[key], value) for key, value in trained.items())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trainer.device: 'cuda' requested but no CUDA"):
        Trainer(tiny_recipe(tmp_path / "run", trainer={"device": "cuda"}))

"""Run folders: new runs never overwrite, ``--resume`` finds the run, the recipe hash decides
what a resume may change."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_engine_support import (
    single_thread,  # noqa: F401 (autouse fixture)
    tiny_recipe,
    tiny_recipe_data,
)

from visionforge import cli
from visionforge.config import recipe_from_dict
from visionforge.engine import Trainer, load_checkpoint
from visionforge.errors import CheckpointError, ConfigError
from visionforge.lineage import file_digest, read_manifest
from visionforge.run_folder import (
    RunExistsError,
    latest_run_folder,
    new_run_folder,
    resume_target,
)


def make_run(folder: Path, *files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).write_bytes(b"x")
    return folder


def test_new_run_folder_takes_the_first_free_number(tmp_path: Path) -> None:
    base = str(tmp_path / "runs" / "exp")
    assert new_run_folder(base) == base  # created, so claimed
    assert new_run_folder(base) == base  # still empty: free
    make_run(Path(base), "last.ckpt")
    assert new_run_folder(base) == f"{base}-2"
    make_run(Path(f"{base}-2"), "notes.txt")  # anything in it: not free
    assert new_run_folder(base) == f"{base}-3"
    assert Path(f"{base}-3").is_dir()


def test_latest_run_folder_orders_by_number(tmp_path: Path) -> None:
    base = tmp_path / "exp"
    assert latest_run_folder(str(base)) is None
    for name in ("exp", "exp-2", "exp-10"):
        make_run(tmp_path / name, "recipe.json")
    make_run(tmp_path / "exp-11", "notes.txt")  # not a run
    make_run(tmp_path / "expanded", "recipe.json")  # another recipe's base
    assert latest_run_folder(str(base)) == f"{base}-10"


def test_resume_target_from_folder_checkpoint_or_latest(tmp_path: Path) -> None:
    base = tmp_path / "exp"
    with pytest.raises(ConfigError, match="no run of this recipe"):
        resume_target(None, str(base))
    make_run(base, "last.ckpt", "epoch_0001.ckpt")
    make_run(tmp_path / "exp-2", "recipe.json")  # failed before its first checkpoint
    assert resume_target(str(base), str(base)).checkpoint == str(base / "last.ckpt")
    epoch = resume_target(str(base / "epoch_0001.ckpt"), "ignored")
    assert (epoch.output, epoch.checkpoint) == (str(base), str(base / "epoch_0001.ckpt"))
    with pytest.raises(ConfigError, match="has no last.ckpt"):
        resume_target(None, str(base))  # the newest run, exp-2, has no checkpoint
    with pytest.raises(ConfigError, match="no such run folder"):
        resume_target(str(tmp_path / "nope"), str(base))


@pytest.mark.parametrize(
    ("override", "same"),
    [
        ("trainer.output=elsewhere", True),
        ("trainer.epochs=50", True),
        ("trainer.loggers=[csv]", True),
        ("trainer.log_every_steps=1", True),
        ("data.loader.num_workers=4", True),
        ("runner={type: local, nproc: 2}", True),
        ("evaluator.k=[1]", True),
        ("name=other", True),
        ("model.width=16", False),
        ("data.train.num_samples=40", False),
        ("loss.label_smoothing=0.1", False),
        ("optimizer.lr=0.5", False),
        ("schedule.warmup_steps=5", False),
        ("trainer.seed=3", False),
        ("trainer.batch_size=4", False),
    ],
)
def test_recipe_hash_covers_what_defines_the_model(override: str, same: bool) -> None:
    tiny_recipe("out")  # registers the tiny components
    data = tiny_recipe_data("out")
    changed = recipe_from_dict(data, [override])
    assert (changed.sha256() == recipe_from_dict(data).sha256()) is same


def test_a_new_trainer_refuses_a_folder_holding_a_run(tmp_path: Path) -> None:
    make_run(tmp_path / "run", "manifest.json")
    with pytest.raises(RunExistsError, match="holds another run; continue it with --resume"):
        Trainer(tiny_recipe(tmp_path / "run"))


def test_exist_ok_replaces_the_whole_run(tmp_path: Path) -> None:
    """Overwriting on request leaves nothing of the old run (an old export would otherwise
    sit beside the new checkpoints as if it came from them)."""
    folder = make_run(tmp_path / "run", "manifest.json", "last.ckpt", "best.onnx")
    Trainer(tiny_recipe(folder), exist_ok=True)
    assert folder.is_dir() and list(folder.iterdir()) == []
    kept = make_run(tmp_path / "notes", "notes.txt")  # not a run: nothing to overwrite
    Trainer(tiny_recipe(kept), exist_ok=True)
    assert (kept / "notes.txt").exists()


def write_recipe(path: Path, **trainer: object) -> Path:
    data = tiny_recipe_data("unused", trainer={"epochs": 1, "max_steps_per_epoch": 2, **trainer})
    del data["trainer"]["output"], data["name"], data["data"]["val"], data["evaluator"]
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow  # six short trainings
def test_train_twice_gets_two_folders_and_resume_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    tiny_recipe("out")  # registers the tiny components in this process
    recipe = str(write_recipe(tmp_path / "exp.yaml"))
    assert cli.main(["train", recipe]) == 0
    assert "run folder: runs/exp (new run)" in capsys.readouterr().out
    first = file_digest("runs/exp/last.ckpt")
    assert cli.main(["train", recipe]) == 0
    assert "run folder: runs/exp-2 (new run)" in capsys.readouterr().out
    assert file_digest("runs/exp/last.ckpt") == first  # the first run is untouched

    # more epochs keep the hash: --resume continues the newest run
    assert cli.main(["train", recipe, "--resume", "--set", "trainer.epochs=2"]) == 0
    assert "run folder: runs/exp-2 (resuming runs/exp-2/last.ckpt)" in capsys.readouterr().out
    assert load_checkpoint("runs/exp-2/last.ckpt")["position"]["global_step"] == 4
    assert read_manifest("runs/exp-2")["status"] == "completed"

    # another learning rate is another recipe: refused unless asked
    changed = ["--set", "optimizer.lr=0.5", "--set", "trainer.epochs=2"]
    assert cli.main(["train", recipe, "--resume", "runs/exp", *changed]) == 2
    err = capsys.readouterr().err
    assert "written by another recipe" in err and "optimizer.lr" in err
    assert file_digest("runs/exp/last.ckpt") == first
    args = ["train", recipe, "--resume", "runs/exp", *changed, "--allow-recipe-change"]
    assert cli.main(args) == 0
    assert load_checkpoint("runs/exp/last.ckpt")["position"]["global_step"] == 4

    assert cli.main(["train", recipe, "--exist-ok"]) == 0
    assert "run folder: runs/exp (overwriting" in capsys.readouterr().out
    assert load_checkpoint("runs/exp/last.ckpt")["position"]["global_step"] == 2
    assert not Path("runs/exp-3").exists()


def test_resume_with_another_model_is_refused_by_the_trainer(tmp_path: Path) -> None:
    first = Trainer(tiny_recipe(tmp_path / "run", trainer={"epochs": 1})).fit()
    other = tiny_recipe(tmp_path / "run", model={"dropout": 0.5}, trainer={"epochs": 2})
    with pytest.raises(CheckpointError, match=r"another recipe .*changed: model\.dropout"):
        Trainer(other, resume=True)
    resumed = Trainer(other, resume=True, allow_recipe_change=True)
    assert resumed.global_step == load_checkpoint(first.last_checkpoint)["position"]["global_step"]


def test_a_recipe_source_uses_the_checkpoint_of_its_newest_run(tmp_path: Path) -> None:
    base = tmp_path / "runs" / "exp"
    make_run(base, "last.ckpt", "best.ckpt")
    make_run(tmp_path / "runs" / "exp-2", "last.ckpt")
    assert cli.run_checkpoint(tiny_recipe(base)) == str(tmp_path / "runs" / "exp-2" / "last.ckpt")

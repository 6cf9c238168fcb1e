"""``visionforge aws sagemaker-entry``: the run inside SageMaker's training container.

Reads the bundle (``recipe.json``, ``entry.json``), SageMaker's environment (``SM_MODEL_DIR``,
``SM_CHANNEL_<NAME>``, ``SM_NUM_GPUS``, ``SM_INPUT_CONFIG_DIR``/``resourceconfig.json``) and
the checkpoint folder the job syncs with S3 (``VISIONFORGE_CHECKPOINT_DIR``, set by the
runner to ``/opt/ml/checkpoints``). Each channel's local folder replaces its recipe field;
the run writes into the checkpoint folder and resumes from its ``last.ckpt`` when the job
restarts (a spot interruption, a retry). One process trains in-process; several GPUs or hosts
run torchrun (node rank = position in the sorted host list, master = the first host). On
SIGTERM (StopTrainingJob, spot reclaim) the trainer writes a checkpoint and the entry exits 0.
At the end the final model, its manifest and metrics go to ``SM_MODEL_DIR`` (on the first
host), which SageMaker packs as ``model.tar.gz``.

A model that runs the dino plugin's compiled multi-scale deformable attention gets its kernel
built (or loaded from the cache) on each host before training; where it cannot be built the
run falls back to the PyTorch reference. One line of the log says which path was taken.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from visionforge.config import recipe_from_dict
from visionforge.errors import ConfigError
from visionforge_aws.bundle import ENTRY_FILE, RECIPE_FILE

CHECKPOINT_ENV = "VISIONFORGE_CHECKPOINT_DIR"
SKIPPED = ("epoch_",)
"""Files of the run folder not copied into the model (per-epoch checkpoints)."""


def channel_env(name: str) -> str:
    """SageMaker's variable for a channel: ``data-train-root`` -> ``SM_CHANNEL_DATA_TRAIN_ROOT``."""
    return "SM_CHANNEL_" + name.upper().replace("-", "_").replace(".", "_")


def _set_field(data: dict[str, Any], dotted: str, value: str) -> None:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value


def container_recipe(bundle: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The bundled recipe with channels mapped onto their fields and output = checkpoints."""
    entry = json.loads((bundle / ENTRY_FILE).read_text())
    data: dict[str, Any] = json.loads((bundle / RECIPE_FILE).read_text())
    for channel, (field, is_file) in entry["fields"].items():
        folder = env.get(channel_env(channel), f"/opt/ml/input/data/{channel}")
        path = Path(folder)
        if is_file:
            files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []
            if len(files) != 1:
                raise ConfigError(
                    f"{field}: channel {channel} ({folder}) should hold one file, not {len(files)}"
                )
            path = files[0]
        _set_field(data, field, str(path))
    data["trainer"]["output"] = env.get(CHECKPOINT_ENV, "/opt/ml/checkpoints")
    return data


def cluster(env: Mapping[str, str]) -> tuple[list[str], int, int]:
    """(sorted hosts, this host's rank, processes per host) from resourceconfig.json."""
    config_dir = Path(env.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config"))
    resource = json.loads((config_dir / "resourceconfig.json").read_text())
    hosts = sorted(resource["hosts"])
    return hosts, hosts.index(resource["current_host"]), max(1, int(env.get("SM_NUM_GPUS", "0")))


OPS_FIELD = "msda_backend"
"""Model config field of the models that run the dino plugin's compiled deformable attention."""


def prepare_ops(recipe_data: dict[str, Any]) -> str:
    """Build (or load from the cache) the compiled op the recipe's model runs, else choose the
    fallback; returns the one line saying which. After a fallback the training processes are
    told to use the PyTorch reference (``VISIONFORGE_MSDA_BACKEND=pytorch``) instead of each
    trying the build again."""
    from visionforge.registry import REGISTRIES

    config = REGISTRIES.models.validate(recipe_data["model"], "model")
    if OPS_FIELD not in type(config).model_fields:
        return "visionforge: compiled ops: none used by this model"
    asked = getattr(config, OPS_FIELD)
    if asked == "pytorch":
        return "visionforge: compiled ops: PyTorch reference (model.msda_backend: pytorch)"
    import torch

    from visionforge_dino.ops import backends, build

    device = recipe_data.get("trainer", {}).get("device", "auto")
    backend = asked or ("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    cached = build.built_library(build.build_spec(backend)) is not None
    if backends.ensure_compiled(backend):
        how = "loaded from the cache" if cached else "built"
        return f"visionforge: compiled ops: {backend} deformable-attention kernel {how}"
    os.environ[backends.BACKEND_ENV] = "pytorch"
    return (
        f"visionforge: compiled ops: falling back to the PyTorch reference "
        f"({backends.failure(backend)})"
    )


def _train_here(recipe_data: dict[str, Any]) -> int:
    from visionforge.engine import Trainer
    from visionforge.engine.signals import StopSignal

    with StopSignal(restore=False):
        result = Trainer(recipe_from_dict(recipe_data), resume=True, exist_ok=True).fit()
    print(f"visionforge: {'stopped' if result.stopped_by_signal else 'completed'}", flush=True)
    return 0


def _train_torchrun(recipe_file: Path, hosts: list[str], rank: int, nproc: int, port: int) -> int:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(len(hosts)),
        "--node-rank",
        str(rank),
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        hosts[0],
        "--master-port",
        str(port),
        "-m",
        "visionforge.engine.worker",
        str(recipe_file),
        "--resume",
        "--exist-ok",
    ]
    process = subprocess.Popen(command, start_new_session=True)
    stopped: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if process.poll() is None:
            stopped.append(signum)
            os.killpg(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = process.wait()
    # torchrun exits non-zero after passing a SIGTERM on; the workers checkpointed and ended
    return 0 if stopped else code


def publish_model(output: Path, model_dir: Path) -> list[Path]:
    """Copy the run's final files (checkpoints but the per-epoch ones, manifests, metrics)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(output.iterdir()):
        if path.is_file() and not path.name.startswith(SKIPPED):
            shutil.copy2(path, model_dir / path.name)
            copied.append(model_dir / path.name)
    return copied


def run(bundle: Path, env: Mapping[str, str]) -> int:
    """Train the bundled recipe in this (simulated or real) container; returns the exit code."""
    data = container_recipe(bundle, env)
    entry = json.loads((bundle / ENTRY_FILE).read_text())
    hosts, rank, nproc = cluster(env)
    output = Path(data["trainer"]["output"])
    output.mkdir(parents=True, exist_ok=True)
    print(f"visionforge: host {rank + 1}/{len(hosts)}, {nproc} process(es), output {output}")
    print(prepare_ops(data), flush=True)
    if len(hosts) * nproc == 1:
        code = _train_here(data)
    else:
        recipe_file = Path(env.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")) / "recipe.json"
        recipe_file.parent.mkdir(parents=True, exist_ok=True)
        recipe_file.write_text(json.dumps(data, indent=2))
        code = _train_torchrun(recipe_file, hosts, rank, nproc, int(entry["master_port"]))
    if code == 0 and rank == 0:
        model_dir = Path(env.get("SM_MODEL_DIR", "/opt/ml/model"))
        copied = publish_model(output, model_dir)
        print(f"visionforge: {len(copied)} files into {model_dir}")
    return code

"""Every shell block of the README, docs/, examples/ and the plugin READMEs is accounted for.

* Install lines (``pip install ...``, in blocks and in inline code) must take one of the
  reviewed forms below, each of which ``.ci/run`` executes in a fresh venv: none can resolve
  to the unrelated ``visionforge`` on the public index.
* Every other block is either in ``RUN`` (executed as written by the slow test, in order, in
  one sandbox folder with generated data) or in ``SKIP`` with the reason it cannot run here.
  A new page's block that is in neither fails the fast test: classify it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).parents[1]
CI = ROOT / ".ci" / "run"


@dataclass(frozen=True)
class Block:
    """A fenced shell block: its file, its commands (continuations joined, comments gone)."""

    file: str
    commands: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        """(file, its first command that is not an install line)."""
        runnable = [c for c in self.commands if not is_install(c)]
        return (self.file, runnable[0] if runnable else "")

    @property
    def script(self) -> str:
        return "\n".join(self.commands)


INSTALL_FORMS: dict[str, str] = {
    r'pip install --find-links dist "visionforge\[(?P<extras>[a-z0-9,]+)\]==0\.1\.0"': (
        'pip install --find-links dist "visionforge[all]==0.1.0"'
    ),
    r'pip install -c constraints\.txt -e \. \$\(printf -- "-e %s " plugins/visionforge-\*\)': (
        'pip install -c constraints.txt -e . $(printf -- "-e %s " plugins/visionforge-*)'
    ),
    r"pip install -e plugins/(?P<plugin>visionforge-[a-z0-9]+)": (
        "pip install -e plugins/visionforge-coco"
    ),
    r"pip install \./examples/plugin-template": "pip install ./examples/plugin-template",
    r"pip install -e visionforge-NAME": "pip install -e visionforge-demo",
    r"pip install nox": "pip install nox",
    r"pipx install nox": "pipx install nox",
}
"""Install line (regex, matched whole) -> the line ``.ci/run`` executes for that form."""

VENDOR_INSTALLS = {
    r"pip install hailo_dataflow_compiler-[^ ]+\.whl": (
        "Hailo's Dataflow Compiler wheel: downloaded by hand from the Hailo Developer Zone"
    ),
}

RUN: tuple[tuple[str, str], ...] = (
    ("examples/quickstart/README.md", "visionforge train examples/quickstart/recipe.yaml"),
    ("examples/quickstart/README.md", "visionforge eval runs/quickstart/best.ckpt"),
    ("docs/cli.md", "visionforge export runs/quickstart/best.ckpt"),
    ("docs/cli.md", "visionforge lineage runs/quickstart/best.onnx"),
    ("docs/plugins/resnet.md", "visionforge resnet presets"),
    ("examples/coco_convert_eval/README.md", "export EX=examples/coco_convert_eval"),
    (
        "examples/coco_convert_eval/README.md",
        "visionforge coco convert /tmp/shapes_split/train/images /tmp/shapes_yolo_again "
        "--from coco --to yolo --ann /tmp/shapes_split/train/annotations.json --split train",
    ),
    (
        "examples/resnet50_imagenet/README.md",
        "python examples/resnet50_imagenet/train_tiny.py --out runs/tiny_resnet",
    ),
    ("examples/dino_rooms/README.md", "export EX=examples/dino_rooms"),
    ("examples/detr_coco/README.md", "export EX=examples/detr_coco"),
    (
        "examples/detection_quickstart/README.md",
        "visionforge train examples/detection_quickstart/recipe.yaml",
    ),
    ("README.md", "python examples/detection_quickstart/make_images.py /tmp/shapes_readme"),
)
"""Blocks the slow test runs as written, in this order (later ones use earlier outputs)."""

SKIP: dict[tuple[str, str], str] = {
    ("docs/plugins/aws.md", "visionforge train examples/sagemaker/recipe.yaml --detach"): (
        "needs an AWS account (a SageMaker role and bucket); plugins/visionforge-aws tests "
        "run submit, runs status/stop and the container entry against moto and SeaweedFS"
    ),
    (
        "docs/plugins/aws.md",
        "visionforge aws sync data/coco s3://my-bucket/datasets/coco --dry-run",
    ): "needs an S3 bucket; plugins/visionforge-aws/tests/test_sync.py syncs against SeaweedFS",
    (
        "docs/plugins/aws.md",
        "visionforge aws publish runs/cards-student --to s3://my-bucket/projects/cards "
        "--name student",
    ): (
        "needs an S3 bucket (and SageMaker for the registry); plugins/visionforge-aws/tests/"
        "test_publish.py publishes a run, reads its lineage back and republishes against "
        "SeaweedFS, the registry and lifecycle rules against moto"
    ),
    (
        "examples/sagemaker/README.md",
        "visionforge train examples/sagemaker/recipe.yaml --detach",
    ): "the same command as docs/plugins/aws.md's first block",
    (
        "docs/plugins/aws.md",
        "visionforge train examples/resnet50_imagenet/ec2_spot.yaml --dry-run",
    ): (
        "needs an AWS account (SSM, EC2, an instance profile, a bucket); plugins/visionforge-aws/"
        "tests/test_ec2.py runs --dry-run, submit and runs status/logs/stop/artifacts against "
        "moto and SeaweedFS"
    ),
    (
        "docs/plugins/aws.md",
        "aws iam create-role --role-name visionforge-ec2 "
        "--assume-role-policy-document file://trust.json",
    ): "creates IAM resources in an AWS account",
    (
        "examples/resnet50_imagenet/README.md",
        "visionforge aws sync data/imagenet s3://my-bucket/datasets/imagenet",
    ): (
        "needs ImageNet and an AWS account; the same commands as docs/plugins/aws.md's EC2 "
        "block, tested there against moto and SeaweedFS"
    ),
    ("README.md", "nox -s tests"): "the whole fast suite: .ci/run runs it",
    ("docs/plugins/distill.md", "python examples/card_distill/make_data.py"): (
        "queries a photo of yours (some_card.png); plugins/visionforge-distill tests run the "
        "same chain on generated cards"
    ),
    ("docs/index.md", "visionforge plugins"): (
        "examples/quickstart/README.md's block (RUN) trains the same recipe; the install line "
        "is .ci/run's"
    ),
    ("docs/writing-a-plugin.md", "visionforge plugins"): (
        "tests/test_plugin_template.py installs the template and trains its recipe"
    ),
    ("examples/plugin-template/README.md", "visionforge plugins"): (
        "tests/test_plugin_template.py installs the template and trains its recipe"
    ),
    ("examples/resnet50_imagenet/README.md", "visionforge resnet prepare "
     "/data/ILSVRC2012_img_val --out data/imagenet/val --devkit /data/ILSVRC2012_devkit_t12 "
     "--mode symlink"): "needs ImageNet (ILSVRC2012) and a GPU for 90 epochs",
    ("docs/plugins/resnet.md", "visionforge resnet prepare /data/val_flat --out "
     "/data/imagenet/val --loc-solution LOC_val_solution.csv --synset-mapping "
     "LOC_synset_mapping.txt"): "needs the ImageNet validation images",
    ("docs/plugins/resnet.md", "visionforge resnet prepare /data/val_flat --out "
     "data/imagenet/val --loc-solution LOC_val_solution.csv"): (
        "needs ImageNet and an S3 bucket"
    ),
    ("docs/plugins/resnet.md", "python benchmarks/resnet_train_step.py --device cuda "
     "--batch-size 128 --precision bf16 --channels-last --steps 30 --workers 8"): "needs a GPU",
    ("docs/plugins/dino-ops.md", "visionforge dino build-ops"): (
        "compiles the C++/CUDA kernels (minutes; CUDA needs a GPU): plugins/visionforge-dino "
        "tests build and check them"
    ),
    ("plugins/visionforge-coco/README.md", "visionforge coco convert yolo_root out --from yolo "
     "--to coco --split train --id-names --link hard"): (
        "placeholder paths; examples/coco_convert_eval runs the same commands on generated data"
    ),
    ("docs/plugins/hailo.md", "visionforge export runs/cards-student/best.ckpt --to hailo "
     "--hw-arch hailo8"): "needs Hailo's Dataflow Compiler (not public) and a trained student",
    ("docs/plugins/hailo.md", "sudo apt install hailo-all"): (
        "runs on a Raspberry Pi with a Hailo accelerator"
    ),
    ("plugins/visionforge-hailo/README.md", "visionforge export runs/cards/best.ckpt --to hailo "
     "--hw-arch hailo8"): "needs Hailo's Dataflow Compiler (not public) and a trained run",
    ("plugins/visionforge-aws/README.md", "visionforge aws sync data/coco "
     "s3://my-bucket/datasets/coco"): (
        "needs AWS credentials and a bucket; the plugin's tests sync against a local S3 server"
    ),
    ("plugins/visionforge-distill/README.md", "visionforge train "
     "examples/card_distill/recipe.yaml"): (
        "trains on photos in data/cards that are not in the repository; the plugin's tests "
        "train on generated cards"
    ),
    ("docs/plugins/detr.md", "python benchmarks/detr_train_step.py --height 320 --width 400 "
     "--steps 3 --profile"): "a benchmark (minutes of CPU), not a check",
    ("docs/plugins/dino.md", "python benchmarks/dino_train_step.py --steps 5"): (
        "a benchmark (minutes of CPU), not a check"
    ),
    ("examples/detr_coco/README.md", "visionforge train examples/detr_coco/recipe.yaml"): (
        "needs COCO 2017 and 16 GPUs for 500 epochs"
    ),
    ("examples/detr_coco/README.md", "visionforge eval examples/detr_coco/recipe.yaml --set "
     "model.weights=/data/weights/detr-r50-e632da11.pth"): (
        "needs COCO val2017 and the official weights (no downloads here); the dino plugin's "
        "parity tests load the official layout"
    ),
    ("examples/detr_coco/README.md", "visionforge coco convert my_yolo/ data/mine --from yolo "
     "--to coco --split train"): (
        "placeholder YOLO dataset and the official weights; the README's toy-size block (RUN) "
        "converts, splits, trains, evaluates, predicts and exports on generated data"
    ),
    ("examples/detr_coco/README.md", "visionforge predict runs/detr_coco/best.ckpt "
     "data/mine_split/val/images --out runs/detr_coco/pred --score-threshold 0.5"): (
        "needs the full-size fine-tuned run above; the README's toy-size block (RUN) predicts "
        "and exports ONNX from a tiny DETR"
    ),
    ("docs/cli.md", "visionforge train examples/quickstart/recipe.yaml"): (
        "a transcript of the run-folder numbering; tests/test_run_folder.py runs train twice, "
        "--resume and --exist-ok through the CLI"
    ),
    ("docs/plugins/resnet.md", "visionforge resnet loader-bench "
     "examples/resnet50_imagenet/recipe.yaml --set data.loader.num_workers=4 --batches 50"): (
        "reads ImageNet at the recipe's paths; plugins/visionforge-resnet/tests/"
        "test_loader_bench.py runs loader-bench on generated JPEGs"
    ),
    ("examples/card_distill/README.md", "python examples/card_distill/make_data.py"): (
        "distillation for many minutes on a CPU; the distill plugin's slow tests run the same "
        "chain (train with a teacher, export, build-index, query) on generated cards"
    ),
    ("examples/dino_coco/README.md", "visionforge validate examples/dino_coco/recipe.yaml"): (
        "needs COCO 2017 under /data/coco (validate checks those paths exist) and 8 GPUs"
    ),
}  # fmt: skip
"""Blocks that cannot run here, with the reason."""

FENCE = re.compile(r"^```(bash|sh|shell|console)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE_INSTALL = re.compile(r"`((?:pip|pipx) install [^`]+)`")


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("examples/*/README.md")]
    files += ROOT.glob("plugins/*/README.md")
    return sorted(set(files))


def commands_of(kind: str, text: str) -> tuple[str, ...]:
    if kind == "console":  # "$ command" lines; the rest is output
        lines = [line[2:] for line in text.splitlines() if line.startswith("$ ")]
    else:
        lines = text.splitlines()
    joined: list[str] = []
    pending = ""
    for raw in lines:
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = (pending + line.strip()).strip()
        pending = ""
        if line:
            joined.append(" ".join(line.split()))
    return tuple(joined)


def blocks() -> list[Block]:
    found = []
    for path in markdown_files():
        rel = str(path.relative_to(ROOT))
        for match in FENCE.finditer(path.read_text()):
            found.append(Block(rel, commands_of(match.group(1), match.group(2))))
    return found


def is_install(command: str) -> bool:
    """Install and environment set-up lines (pip, venvs): .ci/run's part, not this test's."""
    return bool(re.match(r"(pipx? install|python3? -m (pip|venv)|\. \S*bin/activate)", command))


def install_lines() -> list[tuple[str, str]]:
    """Every package-installing line (``pip``/``pipx install``), in blocks and inline code."""
    pip = re.compile(r"(pipx? install|python3? -m pip install)")
    lines = [(b.file, c) for b in blocks() for c in b.commands if pip.match(c)]
    for path in markdown_files():
        for match in INLINE_INSTALL.finditer(path.read_text()):
            lines.append((str(path.relative_to(ROOT)), " ".join(match.group(1).split())))
    return lines


def test_install_lines_take_reviewed_forms_that_ci_runs() -> None:
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    ci = CI.read_text()
    assert install_lines()
    for file, line in install_lines():
        if any(re.fullmatch(p, line) for p in VENDOR_INSTALLS):
            continue
        forms = [(p, ci_line) for p, ci_line in INSTALL_FORMS.items() if re.fullmatch(p, line)]
        assert forms, f"{file}: install line of no reviewed form: {line}"
        pattern, ci_line = forms[0]
        match = re.fullmatch(pattern, line)
        assert match is not None
        groups = match.groupdict()
        if groups.get("extras"):
            assert set(groups["extras"].split(",")) <= extras, f"{file}: {line}"
        if groups.get("plugin"):
            assert (ROOT / "plugins" / groups["plugin"]).is_dir(), f"{file}: {line}"
        assert ci_line in ci, f".ci/run does not run the form of {file}: {line}"


def test_ci_runs_the_readme_one_command_quickstart_as_written() -> None:
    one_command = [
        c for b in blocks() if b.file == "README.md" for c in b.commands if "visionforge train" in c
    ]
    assert len(one_command) == 1, one_command
    assert one_command[0] in " ".join(CI.read_text().split()), one_command[0]


def test_every_block_runs_or_says_why_not() -> None:
    known = set(RUN) | set(SKIP)
    unclassified = []
    for block in blocks():
        runnable = [c for c in block.commands if not is_install(c)]
        if not runnable:
            continue  # install lines only: checked above, run by .ci/run
        if block.key not in known:
            unclassified.append(block.key)
    assert not unclassified, (
        "shell blocks neither run by this test (RUN) nor skipped with a reason (SKIP): "
        f"{unclassified}"
    )
    present = {b.key for b in blocks()}
    stale = [key for key in known if key not in present]
    assert not stale, f"RUN/SKIP entries whose block is gone or changed: {stale}"


@pytest.mark.slow
@pytest.mark.timeout(2400)  # every RUN block in one test: a few minutes idle, more when shared
def test_documented_commands_run_as_written(tmp_path: Path) -> None:
    by_key = {b.key: b for b in blocks()}
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for key in RUN:
        block = by_key[key]
        script = "\n".join(c for c in block.commands if not is_install(c))
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        assert result.returncode == 0, (
            f"{block.file}: block starting {key[1]!r} failed:\n{result.stderr[-3000:]}"
        )

"""The contracts every component codes against (structural: no base class needed).

A training step is ``outputs = model(batch)``; ``losses = loss(outputs, batch)`` returns a
dict whose ``"loss"`` entry is the total to back-propagate. The engine, the CLI and the
runners call exactly what is declared here: optional capabilities are declared as their own
protocols (``StatefulEvaluator``, ``Predictor``, ...) and tested with ``isinstance``, never
probed with ``hasattr``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torchvision import tv_tensors

    from visionforge.config import LoaderConfig, Recipe

# ----------------------------------------------------------------------------- batches

Batch = Mapping[str, Any]
"""A collated batch: ``{"image": Tensor[B,C,H,W], "label": Tensor[B]}`` for classification,
a :class:`DetectionBatch` for detection."""


class DetectionTarget(TypedDict, total=False):
    """One image's ground truth in a detection batch (after the transforms).

    ``boxes`` are absolute ``xyxy`` pixels of the image as it is in the batch (before
    padding); ``labels`` are contiguous class indices ``0..K-1``; ``orig_size`` is the
    ``(height, width)`` of the image as stored on disk, ``size`` its ``(height, width)`` in
    the batch (what ``boxes`` refer to).
    """

    boxes: tv_tensors.BoundingBoxes
    labels: torch.Tensor
    image_id: int
    orig_size: tuple[int, int]
    size: tuple[int, int]
    iscrowd: torch.Tensor
    area: torch.Tensor


class DetectionBatch(TypedDict):
    """What the detection collate returns and detectors take.

    ``image`` is padded (bottom/right) to the batch's largest height and width; ``mask`` is
    True where a pixel is padding; ``target`` holds one :class:`DetectionTarget` per image.
    """

    image: torch.Tensor
    mask: torch.Tensor
    target: list[DetectionTarget]


class Detections(TypedDict):
    """One image's predictions from :meth:`Predictor.postprocess` for a detector: ``boxes``
    ``[N,4]`` xyxy in pixels of the image on disk (``orig_size``), ``scores`` ``[N]``,
    ``labels`` ``[N]`` contiguous class indices (``class_names[label]`` names them)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


class Classification(TypedDict):
    """One image's prediction from :meth:`Predictor.postprocess` for a classifier."""

    probabilities: torch.Tensor
    label: int
    score: float


# ----------------------------------------------------------------------------- data


@runtime_checkable
class Dataset(Protocol):
    """A map-style dataset; items are dicts (``image`` is a ``tv_tensors.Image``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@runtime_checkable
class NamedClasses(Protocol):
    """A dataset, model or evaluator that knows its class names (index = class id)."""

    class_names: list[str]


def class_name(names: Sequence[str] | None, label: int) -> str:
    """The name of class index ``label`` in ``names`` (a :class:`NamedClasses`' list); the
    index itself when ``names`` does not cover it."""
    return names[label] if names is not None and 0 <= label < len(names) else str(label)


@runtime_checkable
class CollatingDataset(Protocol):
    """A dataset whose items need their own collate (e.g. detection: padding + mask)."""

    def collate_fn(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]: ...


@runtime_checkable
class BatchLoader(Protocol):
    """Collated training/eval batches from something other than a torch ``DataLoader`` (a
    DALI pipeline, a loader that decodes on the device). ``dataset`` is the (seeded) dataset
    it serves; ``backend`` names what actually runs (``torch-nvjpeg``, ``dali-cpu``,
    ``dali-mixed``): checkpoints record it, a resume on another one says so."""

    backend: str
    dataset: Any

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


@runtime_checkable
class LoaderProvider(Protocol):
    """A dataset that builds its own loader for ``data.loader`` (``backend: dali``, device
    decoding). ``seeded`` is the trainer's seeded wrapper of it, ``sampler`` yields its
    ``(epoch, index)`` keys; None means: the standard torch DataLoader."""

    def make_loader(
        self,
        seeded: Any,
        sampler: Any,
        batch_size: int,
        cfg: LoaderConfig,
        seed: int,
        *,
        pin_memory: bool,
        device: torch.device,
    ) -> BatchLoader | None: ...


@runtime_checkable
class CategoryMapped(Protocol):
    """A dataset or detector whose contiguous class indices stand for external category ids
    (COCO's 1..90 with gaps): ``category_ids[i]`` is the id of class ``i``. Evaluation,
    predict's JSON and loading weights trained on another label space map through it."""

    class_names: list[str]
    category_ids: list[int]


# ----------------------------------------------------------------------------- models


@runtime_checkable
class Model(Protocol):
    """An ``nn.Module`` called with a batch; returns a dict of outputs.

    Detectors return ``pred_logits`` ``[B,Q,C]`` (before softmax/sigmoid) and ``pred_boxes``
    ``[B,Q,4]`` (cx, cy, w, h relative to the unpadded image, 0..1) as the original DETR/DINO
    do, plus ``aux_outputs`` (a list of such dicts, one per earlier decoder layer) and any
    other terms their loss needs. ``export_module()`` returns the tensor-in, tensor-out
    network used for export.
    """

    def __call__(self, batch: Batch) -> dict[str, Any]: ...

    def export_module(self) -> nn.Module: ...


@runtime_checkable
class Predictor(Protocol):
    """A model that turns its outputs into predictions: post-processing belongs to the
    model, so ``predict``, the evaluators and the ONNX inference graph agree.

    ``postprocess`` returns one dict per image of ``batch``: :class:`Detections` for
    detectors, :class:`Classification` for classifiers.
    """

    def postprocess(self, outputs: Mapping[str, Any], batch: Batch) -> list[dict[str, Any]]: ...


@runtime_checkable
class FrozenModule(Protocol):
    """An auxiliary network a run uses but never trains (a distillation teacher, a frozen
    feature extractor).

    The engine keeps it out of the trained model: eval mode, ``requires_grad=False``, called
    under ``torch.no_grad`` (not inference mode: its outputs feed the loss) and the run's
    autocast, moved to the run's device; never in checkpoints, EMA, DDP or the optimizer.
    Its outputs reach the loss as ``outputs[output_key]``. ``identity()`` is what the run
    manifest records instead of its weights (name, source path or hub id, sha256).
    """

    output_key: str

    def __call__(self, batch: Batch) -> Mapping[str, torch.Tensor]: ...

    def identity(self) -> dict[str, Any]: ...


# ----------------------------------------------------------------------------- losses


@runtime_checkable
class Loss(Protocol):
    """Returns named scalar tensors; ``"loss"`` is the total. Keys may differ between steps
    (auxiliary or denoising terms present only sometimes): the engine averages each key over
    the steps that had it."""

    def __call__(self, outputs: Mapping[str, Any], batch: Batch) -> dict[str, torch.Tensor]: ...


# ----------------------------------------------------------------------------- evaluators


@runtime_checkable
class Evaluator(Protocol):
    """Accumulates predictions over a dataset and computes named metrics.

    Under DDP every rank updates with its own share of the data; ``compute()`` is called on
    every rank and gathers what it needs (once) when a process group is initialized.
    """

    primary_metric: str
    mode: Literal["max", "min"]

    def reset(self) -> None: ...

    def update(self, outputs: Mapping[str, Any], batch: Batch) -> None: ...

    def compute(self) -> dict[str, float]: ...


@runtime_checkable
class StatefulEvaluator(Protocol):
    """An evaluator whose accumulated state goes into checkpoints (train-set metrics
    survive a mid-epoch resume)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class DetailedEvaluator(Protocol):
    """An evaluator with extra metrics kept out of per-epoch logs (per-class values),
    shown by ``visionforge eval``."""

    def details(self) -> dict[str, float]: ...


@runtime_checkable
class ReportingEvaluator(Protocol):
    """An evaluator that writes reports (PR curves, confusion matrices) into a folder and
    returns the paths it wrote."""

    def write_report(self, out_dir: str) -> list[str]: ...


# ------------------------------------------------------------ the trainer, as hooks see it


@runtime_checkable
class TrainerView(Protocol):
    """What hook implementations may read from the trainer (and call ``position()`` on)."""

    recipe: Recipe
    output: str
    epoch: int
    global_step: int
    metrics: dict[str, float]
    model: nn.Module
    device: torch.device

    def position(self) -> dict[str, int]: ...


# ----------------------------------------------------------------------------- runs

RunStatus = Literal["pending", "running", "completed", "failed", "stopped"]
"""``stopped``: ended by a stop request or a signal, with a checkpoint to resume from."""


@runtime_checkable
class RunHandle(Protocol):
    """A submitted run, local or remote, reachable later by ``id`` (``visionforge runs``)."""

    @property
    def id(self) -> str: ...

    def status(self) -> RunStatus: ...

    def logs(self) -> str: ...

    def wait(self, timeout: float | None = None) -> RunStatus:
        """Block until the run ends or ``timeout`` seconds pass; return the status."""
        ...

    def stop(self) -> None:
        """Ask the run to checkpoint and stop (SIGTERM locally, StopTrainingJob, ...)."""
        ...

    def result(self) -> dict[str, float] | None:
        """The final metrics once the run completed (or stopped) cleanly, else None."""
        ...

    def error(self) -> BaseException | None:
        """Why the run failed (None unless ``status() == "failed"``)."""
        ...

    def artifacts(self) -> list[str]:
        """The run's files (local paths or URLs): checkpoints, manifests, logs, plots."""
        ...


@runtime_checkable
class Runner(Protocol):
    """Runs a recipe somewhere (here, torchrun, SageMaker, EC2)."""

    def submit(self, recipe: Recipe, *, resume: bool | str = False) -> RunHandle:
        """Start the run; ``resume`` is True (the run's newest checkpoint) or a checkpoint
        path. Remote runners refuse local paths they cannot reach, naming each field."""
        ...

    def attach(self, run_id: str) -> RunHandle:
        """A handle on a run this runner submitted earlier (possibly from another process)."""
        ...


@runtime_checkable
class DryRunner(Protocol):
    """A runner that can show what ``submit`` would send without sending it
    (``visionforge train RECIPE --dry-run``)."""

    def dry_run(self, recipe: Recipe) -> str:
        """The requests and scripts of a submission, as text; nothing is launched."""
        ...


# ------------------------------------------------------------ artifacts and exporters


@dataclass
class Artifact:
    """A file produced by visionforge, with its lineage manifest."""

    path: str
    kind: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.path).name


ExportSource = Any
"""What an exporter takes: an ``nn.Module`` (kind ``"model"``) or an upstream
:class:`Artifact` (kind ``"onnx"``, ...)."""


@runtime_checkable
class Exporter(Protocol):
    """Turns a model or an upstream artifact into a deployable artifact.

    ``source_kinds`` says what ``export`` accepts (``("model",)`` for ONNX, ``("onnx",)`` for
    Hailo); the CLI runs the chain a target needs (``--to hailo`` from a checkpoint exports
    ONNX first). ``parents`` (ids or paths of upstream artifacts) and ``recipe`` go into the
    new artifact's lineage manifest; ``example`` is an input batch for a model source.
    """

    suffix: str
    source_kinds: tuple[str, ...]

    def export(
        self,
        source: ExportSource,
        *,
        out: str,
        recipe: Recipe | None = None,
        parents: Sequence[str] = (),
        example: torch.Tensor | None = None,
    ) -> Artifact: ...

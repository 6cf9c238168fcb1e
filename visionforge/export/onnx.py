"""The ONNX exporter: torch.onnx (dynamo) export, onnx.checker and an onnxruntime parity check.

``export(model, example, out)`` exports ``model.export_module()`` (or the model itself) with a
dynamic batch axis, checks the graph, runs it in onnxruntime on ``example`` and on a batch of
another size, and fails with :class:`~visionforge.export.ExportError` when the largest absolute
difference to PyTorch exceeds the tolerance. The file appears only once it passed (written in a
staging folder, then moved into place) and gets a lineage manifest.

Detectors export their ``export_module()``: image ``[B, 3, H, W]`` in (normalized as the
model expects), ``boxes`` ``[B, K, 4]`` (xyxy pixels of that image), ``scores`` ``[B, K]`` and
``labels`` ``[B, K]`` (int64, the model's classes) out, best first, top-k without NMS. The
batch axis is dynamic; height and width are fixed to the example's (``export.input_size``):
resize (and pad) inputs to that size, and scale the boxes back to the original image.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn
from torch.utils import _pytree as pytree
from tqdm.auto import tqdm

from visionforge import lineage, storage
from visionforge.components.configs import OnnxExporterConfig
from visionforge.errors import StorageError
from visionforge.export import ExportError, ParityError
from visionforge.interfaces import Artifact, ExportSource

if TYPE_CHECKING:
    from visionforge.config import Recipe

INPUT_NAME = "image"
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def build_onnx(cfg: OnnxExporterConfig) -> OnnxExporter:
    """Registry builder of the ``onnx`` exporter."""
    return OnnxExporter(cfg)


def example_batch_size(cfg: OnnxExporterConfig) -> int:
    """Images in an export example: two for a dynamic batch axis (torch.export specializes
    an axis traced at size 1), else one."""
    return 2 if cfg.dynamic_batch else 1


def export_network(model: nn.Module) -> nn.Module:
    """The tensor-in/tensor-out network of ``model`` (``export_module()`` when it has one)."""
    export_module = getattr(model, "export_module", None)
    return export_module() if callable(export_module) else model


def output_names(outputs: Any) -> list[str]:
    """ONNX output names for a (nested) output: ``output`` for one tensor, else the keys."""
    flat, _ = pytree.tree_flatten_with_path(outputs)
    if len(flat) == 1 and not flat[0][0]:
        return ["output"]
    names = []
    for path, _leaf in flat:
        parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        names.append("_".join(parts) or "output")
    return names


def other_batch(example: torch.Tensor) -> torch.Tensor:
    """A batch two larger than ``example`` made of flipped copies of it (same dtype/range)."""
    size = example.shape[0] + 2
    return torch.cat([example, example.flip(-1), example.flip(-2)])[:size].contiguous()


def _leaves(outputs: Any) -> list[torch.Tensor]:
    leaves = pytree.tree_leaves(outputs)
    if not all(isinstance(leaf, torch.Tensor) for leaf in leaves):
        kinds = sorted({type(leaf).__name__ for leaf in leaves})
        raise ExportError(
            f"the export network must return tensors (or dicts/tuples of them), got {kinds}; "
            "give the model an export_module() returning plain tensors"
        )
    return leaves


def max_abs_diff(
    session: onnxruntime.InferenceSession, network: nn.Module, x: torch.Tensor
) -> float:
    """Largest absolute difference between onnxruntime and PyTorch outputs on ``x``."""
    with torch.no_grad():
        expected = _leaves(network(x))
    got = session.run(None, {session.get_inputs()[0].name: x.detach().cpu().numpy()})
    if len(got) != len(expected):
        raise ExportError(
            f"onnxruntime returned {len(got)} outputs, PyTorch {len(expected)} (batch {len(x)})"
        )
    worst = 0.0
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        want_np = want.detach().cpu().to(torch.float64).numpy()
        if tuple(want_np.shape) != tuple(have.shape):
            raise ExportError(
                f"output {index}: onnxruntime shape {tuple(have.shape)} != PyTorch "
                f"{tuple(want_np.shape)} (batch {len(x)}); is the batch axis really dynamic?"
            )
        if want_np.size:
            worst = max(worst, float(np.max(np.abs(want_np - have.astype(np.float64)))))
    return worst


@contextlib.contextmanager
def _staging_dir(out: str) -> Iterator[Path]:
    """A scratch folder beside a local ``out`` (same filesystem, so moves are renames)."""
    if storage.is_remote(out):
        parent = None
    else:
        parent = Path(out.removeprefix("file://")).parent
        parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".onnx-{uuid.uuid4().hex[:8]}-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _publish(staged: Path, out: str) -> None:
    """Move the staged model (and any external-data files) to ``out``; the model goes last."""
    model_file = staged / Path(out).name
    extras = sorted(p for p in staged.iterdir() if p != model_file)
    if storage.is_remote(out):
        base = out.rsplit("/", 1)[0]
        for item in extras:
            storage.put_file(item, f"{base}/{item.name}")
        storage.put_file(model_file, out)
        return
    target = Path(out.removeprefix("file://"))
    for item in extras:
        os.replace(item, target.with_name(item.name))
    os.replace(model_file, target)


class OnnxExporter:
    """Exports a model to ONNX and proves the file computes what the model computes."""

    suffix = ".onnx"
    source_kinds: tuple[str, ...] = ("model",)

    def __init__(self, cfg: OnnxExporterConfig) -> None:
        self.cfg = cfg

    def export(
        self,
        source: ExportSource,
        *,
        out: str,
        recipe: Recipe | None = None,
        parents: Sequence[str] = (),
        example: torch.Tensor | None = None,
    ) -> Artifact:
        """Write ``out`` (local path or fsspec URL) and its manifest; return the artifact.

        ``source`` is the model; ``example`` one input batch (default: a seeded random batch
        of one with ``input_size``). ``parents`` (e.g. the checkpoint) and ``recipe`` go into
        the lineage manifest together with ``max_abs_diff``.
        """
        out = os.fspath(out)
        if not isinstance(source, nn.Module):
            raise ExportError(
                f"{out}: the onnx exporter takes a model (nn.Module), got {type(source).__name__}"
            )
        model = source
        example = self._example(example, out)
        started = time.perf_counter()
        network = export_network(model)
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                names = output_names(network(example))
            with (
                _staging_dir(out) as staged,
                tqdm(
                    total=3, desc=f"onnx {Path(out).name}", unit="stage", disable=None
                ) as progress,
            ):
                staged_file = staged / Path(out).name
                progress.set_postfix_str("torch.onnx.export")
                self._torch_export(network, example, names, staged_file, out)
                progress.update()
                progress.set_postfix_str("onnx.checker")
                if self.cfg.check:
                    self._check(staged_file, out)
                progress.update()
                progress.set_postfix_str("onnxruntime parity")
                diff = self._parity(staged_file, network, example, out) if self.cfg.check else None
                progress.update()
                _publish(staged, out)
        finally:
            network.train(was_training)
        manifest = lineage.write_manifest(
            out,
            "onnx",
            parents=parents,
            recipe=recipe,
            metrics={"max_abs_diff": diff} if diff is not None else {},
            cost={
                "wall_seconds": round(time.perf_counter() - started, 3),
                "device": example.device.type,
            },
            extra={
                "opset": self.cfg.opset,
                "input": {
                    "name": INPUT_NAME,
                    "shape": list(example.shape),
                    "dtype": str(example.dtype),
                },
                "dynamic_batch": self.cfg.dynamic_batch,
                "outputs": names,
            },
        )
        return Artifact(path=out, kind="onnx", manifest=manifest)

    def _example(self, example: torch.Tensor | None, out: str) -> torch.Tensor:
        if example is None:
            if not self.cfg.input_size:
                raise ExportError(
                    f"{out}: no example input; pass example= or set export.input_size "
                    "(C,H,W), e.g. --set export.input_size=[3,224,224]"
                )
            shape = (example_batch_size(self.cfg), *self.cfg.input_size)
            return torch.randn(shape, generator=torch.Generator().manual_seed(0))
        if not isinstance(example, torch.Tensor):
            raise ExportError(f"{out}: the example input must be a tensor, got {type(example)}")
        return example

    def _torch_export(
        self, network: nn.Module, example: torch.Tensor, names: Sequence[str], dest: Path, out: str
    ) -> None:
        dynamic = ({0: torch.export.Dim("batch", min=1)},) if self.cfg.dynamic_batch else None
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                program = torch.onnx.export(
                    network,
                    (example,),
                    None,
                    dynamo=True,
                    opset_version=self.cfg.opset,
                    input_names=[INPUT_NAME],
                    output_names=list(names),
                    dynamic_shapes=dynamic,
                    verbose=False,
                )
                assert program is not None  # dynamo=True always returns the program
                with storage.write_errors(out):  # a full disk names the output and the space
                    program.save(dest)
        except StorageError:
            raise
        except Exception as err:
            root: BaseException = err
            while root.__cause__ is not None:
                root = root.__cause__
            text = _ANSI_ESCAPE.sub("", str(root)).strip()
            reason = f"{type(root).__name__}: {text.splitlines()[0] if text else ''}"
            raise ExportError(
                f"{out}: torch.onnx.export (opset {self.cfg.opset}) failed: {reason} "
                "(run with --debug for the full trace)"
            ) from err
        opset = next(
            (
                o.version
                for o in onnx.load(os.fspath(dest), load_external_data=False).opset_import
                if o.domain in ("", "ai.onnx")
            ),
            None,
        )
        if opset != self.cfg.opset:
            raise ExportError(
                f"{out}: asked for opset {self.cfg.opset} but the exported model has opset "
                f"{opset} (torch.onnx could not convert it); use opset 18 or newer"
            )

    def _check(self, path: Path, out: str) -> None:
        try:
            onnx.checker.check_model(os.fspath(path), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
            reason = str(err).strip().splitlines()[0]
            raise ExportError(f"{out}: onnx.checker rejected the exported model: {reason}") from err

    def _parity(self, path: Path, network: nn.Module, example: torch.Tensor, out: str) -> float:
        session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        batches = [example, other_batch(example)] if self.cfg.dynamic_batch else [example]
        diff = max(max_abs_diff(session, network, batch) for batch in batches)
        if not diff <= self.cfg.tolerance:
            sizes = " and ".join(str(len(b)) for b in batches)
            raise ParityError(
                f"{out}: onnxruntime differs from PyTorch by max abs {diff:.3g} "
                f"(> tolerance {self.cfg.tolerance:g}) on batch sizes {sizes}; "
                "raise export.tolerance if that is expected, else check the model's ops"
            )
        return diff

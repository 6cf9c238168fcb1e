"""The ``hailo`` exporter: an ONNX artifact -> ``<name>.hef`` with its HARs, ``metadata.json``,
calibration set, model script and lineage manifest.

Everything up to the Dataflow Compiler runs without it (preflight, calibration, model script,
metadata); ``emit_commands`` stops there and writes the DFC command lines instead.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from visionforge import lineage, storage
from visionforge.export import ExportError
from visionforge.export.chain import checkpoint_in_lineage, recipe_of_checkpoint
from visionforge.interfaces import Artifact, ExportSource
from visionforge_hailo import calibration as calib
from visionforge_hailo.configs import HailoExporterConfig
from visionforge_hailo.dfc import DfcJob, command_lines, compile_hef, load_dfc
from visionforge_hailo.model_script import model_script
from visionforge_hailo.preflight import PreflightReport, Reexport, preflight

if TYPE_CHECKING:
    import onnx
    import torch

    from visionforge.config import Recipe

METADATA_FORMAT = "visionforge.hailo/1"


def build_hailo(cfg: HailoExporterConfig) -> HailoExporter:
    """Registry builder of the ``hailo`` exporter; without ``emit_commands`` it checks for the
    DFC first, so ``visionforge export CKPT --to hailo`` fails before exporting ONNX."""
    if not cfg.emit_commands:
        load_dfc(cfg.hw_arch)
    return HailoExporter(cfg)


@dataclass
class OutputPaths:
    """The files written beside ``<stem>.hef``."""

    hef: str

    def _with(self, suffix: str) -> str:
        return os.path.splitext(self.hef)[0] + suffix

    @property
    def net_name(self) -> str:
        stem = os.path.splitext(os.path.basename(self.hef))[0]
        return re.sub(r"\W", "_", stem) or "model"

    @property
    def onnx(self) -> str:
        return self._with(".hailo.onnx")

    @property
    def calibration(self) -> str:
        return self._with(".calib.npy")

    @property
    def model_script(self) -> str:
        return self._with(".alls")

    @property
    def metadata(self) -> str:
        return self._with(".metadata.json")

    @property
    def commands(self) -> str:
        return self._with(".hailo.sh")

    def har(self, stage: str) -> str:
        return self._with(f".{stage}.har")


class HailoExporter:
    """Compiles an ONNX artifact into a Hailo HEF (see the module docstring)."""

    suffix = ".hef"
    source_kinds: tuple[str, ...] = ("onnx",)

    def __init__(self, cfg: HailoExporterConfig) -> None:
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
        """Write ``out`` (a local ``.hef``) and its companions; return the HEF artifact, or
        with ``emit_commands`` the command script artifact.

        ``source`` is an ONNX :class:`Artifact`; ``recipe`` (else the one stored in the
        checkpoint its lineage leads to) gives the calibration data and eval transforms.
        ``example`` is not used (the ONNX input shape is).
        """
        if not isinstance(source, Artifact) or source.kind != "onnx":
            raise ExportError(
                f"{out}: the hailo exporter takes an ONNX artifact, got "
                f"{getattr(source, 'kind', type(source).__name__)}; export to onnx first"
            )
        if storage.is_remote(out) or storage.is_remote(source.path):
            raise ExportError(
                f"{out}: the hailo exporter reads and writes local files; copy {source.path} "
                "here and upload the results afterwards"
            )
        started = time.perf_counter()
        paths = OutputPaths(os.path.abspath(out.removeprefix("file://")))
        os.makedirs(os.path.dirname(paths.hef), exist_ok=True)
        cfg = self.cfg
        dfc = None if cfg.emit_commands else load_dfc(cfg.hw_arch)
        checkpoint = checkpoint_in_lineage(source)
        if recipe is None and checkpoint is not None:
            recipe = recipe_of_checkpoint(checkpoint)
        report = self._preflight(source.path, paths, checkpoint)
        calibration, calib_path, calib_manifest, normalization = self._calibration(
            source, paths, report, recipe
        )
        script = model_script(cfg, normalization, len(calibration))
        storage.write_bytes_atomic(paths.model_script, script.encode())
        class_names = _class_names(checkpoint, calib_manifest)
        metadata = self._metadata(paths, source, report, class_names, normalization)
        storage.write_bytes_atomic(paths.metadata, json.dumps(metadata, indent=2).encode())
        job = DfcJob(
            hw_arch=cfg.hw_arch,
            net_name=paths.net_name,
            onnx=paths.onnx,
            input_name=report.input_name,
            input_shape=report.input_shape,
            end_node_names=list(cfg.end_node_names),
            model_script=script,
            model_script_path=paths.model_script,
            calibration_path=calib_path,
            parsed_har=paths.har("parsed"),
            optimized_har=paths.har("optimized"),
            compiled_har=paths.har("compiled"),
        )
        # the ONNX source first (lineage follows first parents), then the calibration set
        all_parents = [source.path, *(p for p in parents if p != source.path), calib_path]
        extra = {
            "hw_arch": cfg.hw_arch,
            "preflight": report.as_dict(),
            "metadata": paths.metadata,
            "model_script": paths.model_script,
            "calibration": {"path": calib_path, "images": len(calibration)},
        }
        if dfc is None:
            self._write_commands(paths, job)
            manifest = lineage.write_manifest(
                paths.commands,
                "hailo_commands",
                parents=all_parents,
                recipe=recipe,
                cost={"wall_seconds": round(time.perf_counter() - started, 3)},
                extra={**extra, "hef": paths.hef},
            )
            return Artifact(path=paths.commands, kind="hailo_commands", manifest=manifest)
        hef = compile_hef(dfc, job, calibration)
        storage.write_bytes_atomic(paths.hef, hef)
        manifest = lineage.write_manifest(
            paths.hef,
            "hef",
            parents=all_parents,
            recipe=recipe,
            cost={"wall_seconds": round(time.perf_counter() - started, 3)},
            extra={
                **extra,
                "hars": [job.parsed_har, job.optimized_har, job.compiled_har],
                "dfc_version": str(getattr(dfc, "__version__", "unknown")),
            },
        )
        return Artifact(path=paths.hef, kind="hef", manifest=manifest)

    def _preflight(
        self, onnx_path: str, paths: OutputPaths, checkpoint: str | None
    ) -> PreflightReport:
        cfg = self.cfg
        report = preflight(
            onnx_path,
            paths.onnx,
            opset_range=cfg.opset_range,
            max_ir_version=cfg.max_ir_version,
            simplify=cfg.simplify,
            tolerance=cfg.tolerance,
            end_node_names=cfg.end_node_names,
            extra_supported_ops=cfg.extra_supported_ops,
            reexport=_torchscript_reexport(checkpoint, onnx_path) if checkpoint else None,
        )
        if report.unsupported:
            raise ExportError(report.unsupported_message(onnx_path))
        return report

    def _calibration(
        self,
        source: Artifact,
        paths: OutputPaths,
        report: PreflightReport,
        recipe: Recipe | None,
    ) -> tuple[np.ndarray, str, dict[str, Any], calib.Normalization | None]:
        cfg = self.cfg.calibration
        _, channels, height, width = report.input_shape
        hwc = (height, width, channels)
        if isinstance(cfg.data, str) and cfg.data.lower().endswith(".npy"):
            array = calib.load_npy(cfg.data, hwc)
            normalization = (
                _recorded_normalization(cfg.data) if self.cfg.fold_normalization else None
            )
            return array, os.path.abspath(cfg.data), {}, normalization
        if cfg.data is not None:
            block, origin = calib.block_from(cfg.data)
        elif recipe is not None:
            block, origin = calib.recipe_block(recipe)
        else:
            raise ExportError(
                f"{source.path}: no calibration data: its lineage leads to no checkpoint with a "
                "recipe; pass --calibration DATA (a .npy array [N,H,W,C] or a YAML dataset block)"
            )
        prepared = calib.eval_source(block, origin, recipe, self.cfg.fold_normalization)
        array, manifest = calib.write_calibration(
            prepared,
            paths.calibration,
            size=cfg.size,
            seed=cfg.seed,
            input_hwc=hwc,
            recipe=recipe,
        )
        normalization = prepared.normalization if prepared.folded else None
        return array, paths.calibration, manifest, normalization

    def _metadata(
        self,
        paths: OutputPaths,
        source: Artifact,
        report: PreflightReport,
        class_names: list[str] | None,
        normalization: calib.Normalization | None,
    ) -> dict[str, Any]:
        import onnx

        graph = onnx.load(paths.onnx, load_external_data=False).graph
        outputs = []
        for value in graph.output:
            shape = [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]
            meaning = self.cfg.output_meaning.get(value.name) or default_meaning(
                value.name, shape, class_names
            )
            outputs.append({"name": value.name, "shape": shape, "meaning": meaning})
        _, channels, height, width = report.input_shape
        return {
            "format": METADATA_FORMAT,
            "hef": os.path.basename(paths.hef),
            "onnx": source.path,
            "hw_arch": self.cfg.hw_arch,
            "class_names": class_names,
            "input": {
                "name": report.input_name,
                "onnx_shape": report.input_shape,
                "device_shape": [1, height, width, channels],
                "device_layout": "NHWC",
                "range": "0-255 pixels" if normalization else "normalized model input",
            },
            "normalization": (
                {"mean": normalization.mean, "std": normalization.std, "on_chip": True}
                if normalization
                else None
            ),
            "outputs": outputs,
            "end_node_names": list(self.cfg.end_node_names),
        }

    def _write_commands(self, paths: OutputPaths, job: DfcJob) -> None:
        folder = os.path.dirname(paths.hef)

        def rel(path: str) -> str:
            return os.path.relpath(path, folder)

        relative = DfcJob(
            **{
                **job.__dict__,
                "onnx": rel(job.onnx),
                "model_script_path": rel(job.model_script_path),
                "calibration_path": rel(job.calibration_path),
                "parsed_har": rel(job.parsed_har),
                "optimized_har": rel(job.optimized_har),
                "compiled_har": rel(job.compiled_har),
            }
        )
        lines = [
            "#!/usr/bin/env bash",
            f"# Compile {os.path.basename(paths.hef)} with the Hailo Dataflow Compiler "
            f"(DFC {'5' if job.hw_arch == 'hailo10h' else '3'}.x, {job.hw_arch}).",
            "# Written by visionforge export --to hailo --emit-commands; run it where the DFC",
            "# is installed (or in Hailo's AI Software Suite container) with this folder copied.",
            "set -euo pipefail",
            'cd "$(dirname "$0")"',
            *command_lines(relative, "."),
        ]
        if job.net_name != os.path.splitext(os.path.basename(paths.hef))[0]:
            lines.append(f"mv {job.net_name}.hef {os.path.basename(paths.hef)}")
        storage.write_bytes_atomic(paths.commands, ("\n".join(lines) + "\n").encode())
        os.chmod(paths.commands, 0o755)


def default_meaning(name: str, shape: list[Any], class_names: list[str] | None) -> str:
    """What an output holds, for metadata.json (``export.output_meaning`` overrides it)."""
    known = {
        "pred_logits": "per-query class logits [1, Q, K] (before sigmoid/softmax)",
        "pred_boxes": "per-query boxes (cx, cy, w, h) relative to the input, 0..1",
        "boxes": "boxes (x1, y1, x2, y2) in input pixels",
        "scores": "confidence of each box",
        "labels": "class index of each box (class_names[label])",
        "embedding": "embedding vector: compare by cosine similarity / nearest neighbour",
    }
    if name in known:
        return known[name]
    if len(shape) == 2 and class_names and shape[1] == len(class_names):
        return "class logits (before softmax); index i is class_names[i]"
    if len(shape) == 2:
        return f"vector of {shape[1]} values per image (an embedding, or scores)"
    return f"raw network output of shape {shape}"


def _class_names(checkpoint: str | None, calib_manifest: dict[str, Any]) -> list[str] | None:
    if checkpoint is not None:
        from visionforge.engine import load_checkpoint

        names = load_checkpoint(checkpoint).get("class_names")
        if names:
            return [str(n) for n in names]
    names = calib_manifest.get("class_names")
    return [str(n) for n in names] if names else None


def _recorded_normalization(npy: str) -> calib.Normalization | None:
    """The normalization a ``.npy`` calibration set was made for, from its manifest."""
    if not storage.exists(lineage.manifest_path(npy)):
        raise ExportError(
            f"{npy}: a ready calibration array needs its manifest to say whether it is in "
            "0-255 pixels; set export.fold_normalization=false if it holds model inputs"
        )
    recorded = lineage.read_manifest(npy).get("normalization")
    folded = lineage.read_manifest(npy).get("normalization_folded")
    if not folded or not recorded:
        return None
    return calib.Normalization(list(recorded["mean"]), list(recorded["std"]))


def _torchscript_reexport(checkpoint: str, onnx_path: str) -> Reexport:
    """Export the checkpoint's model again with torch's TorchScript exporter at an opset."""

    def run(opset: int) -> onnx.ModelProto:
        import onnx
        import torch

        from visionforge.engine import load_model
        from visionforge.export.onnx import export_network

        reference = onnx.load(onnx_path, load_external_data=False).graph
        dims = [d.dim_value or 1 for d in reference.input[0].type.tensor_type.shape.dim]
        dims[0] = 1
        model, _ = load_model(checkpoint)
        network = export_network(model).cpu().eval()
        example = torch.randn(dims, generator=torch.Generator().manual_seed(0))
        try:
            with warnings.catch_warnings(), tempfile.TemporaryDirectory() as folder:
                warnings.simplefilter("ignore")
                dest = os.path.join(folder, "model.onnx")
                torch.onnx.export(
                    network,
                    (example,),
                    dest,
                    dynamo=False,
                    opset_version=opset,
                    input_names=[reference.input[0].name],
                    output_names=[o.name for o in reference.output],
                )
                return onnx.load(dest)
        except Exception as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(
                f"{checkpoint}: torch {torch.__version__}'s TorchScript exporter could not "
                f"export at opset {opset} ({type(err).__name__}: {reason}); widen "
                "export.opset_range if your DFC accepts newer opsets"
            ) from None

    return run

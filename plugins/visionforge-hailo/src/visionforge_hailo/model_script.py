"""The Dataflow Compiler's model script (``.alls``) from the exporter's options."""

from __future__ import annotations

from collections.abc import Sequence

from visionforge_hailo.calibration import Normalization
from visionforge_hailo.configs import HailoExporterConfig


def _numbers(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def model_script(
    cfg: HailoExporterConfig, normalization: Normalization | None, calibset_size: int
) -> str:
    """Generated lines (normalization layer, optimization flavor, calibration batch size,
    compiler performance), then ``cfg.model_script`` as given."""
    lines = []
    if normalization is not None:
        mean, std = normalization.scaled()
        lines.append(f"normalization1 = normalization({_numbers(mean)}, {_numbers(std)})")
    flavor = [
        f"{key}={value}"
        for key, value in (
            ("optimization_level", cfg.optimization_level),
            ("compression_level", cfg.compression_level),
        )
        if value is not None
    ]
    if flavor:
        lines.append(f"model_optimization_flavor({', '.join(flavor)})")
    if cfg.batch_size is not None:
        lines.append(
            f"model_optimization_config(calibration, batch_size={cfg.batch_size}, "
            f"calibset_size={calibset_size})"
        )
    if cfg.compiler_optimization_level is not None:
        lines.append(
            f"performance_param(compiler_optimization_level={cfg.compiler_optimization_level})"
        )
    lines += [line.rstrip() for line in cfg.model_script]
    return "\n".join(lines) + "\n" if lines else ""

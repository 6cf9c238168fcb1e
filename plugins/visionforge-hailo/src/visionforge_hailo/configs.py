"""Torch-free config of the ``hailo`` exporter (imported when the plugin registers)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from visionforge.config import ComponentConfig

HwArch = Literal["hailo8", "hailo8l", "hailo10h"]


class CalibrationConfig(ComponentConfig):
    """The INT8 calibration set: ``size`` images drawn with ``seed`` from ``data``.

    ``data`` is a dataset block (``{type: image_folder, root: ...}``, any registered dataset),
    a YAML/JSON file holding one, or a ready ``.npy`` array ``[N, H, W, C]`` float32. Default:
    the recipe's ``data.val`` (else ``data.train``), found through the ONNX file's lineage.
    """

    data: dict[str, Any] | str | None = None
    size: int = Field(1024, ge=1, description="images drawn (Hailo recommends 1024)")
    seed: int = Field(0, description="seed of the reproducible draw")


class HailoExporterConfig(ComponentConfig):
    """Preflight an ONNX model, calibrate, write the model script and compile a HEF with the
    Hailo Dataflow Compiler (or write the DFC command lines with ``emit_commands``)."""

    hw_arch: HwArch = Field("hailo8", description="hailo8 / hailo8l (DFC 3.x), hailo10h (5.x)")
    opset_range: tuple[int, int] = Field(
        (11, 13), description="ONNX opsets the DFC accepts; others are converted into it"
    )
    max_ir_version: int = Field(8, ge=3, description="newest ONNX IR version the DFC reads")
    simplify: bool = Field(True, description="simplify the graph with onnxslim")
    tolerance: float = Field(1e-4, gt=0, description="preflight parity: max abs diff vs input")
    end_node_names: list[str] = Field(
        default_factory=list, description="cut the graph after these nodes (host runs the rest)"
    )
    extra_supported_ops: list[str] = Field(
        default_factory=list, description="ONNX op types to accept beyond the default list"
    )
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    fold_normalization: bool = Field(
        True,
        description="normalize on the chip (model script normalization layer): the HEF and the "
        "calibration set take 0-255 pixels",
    )
    optimization_level: int | None = Field(None, ge=0, le=4, description="DFC default if unset")
    compression_level: int | None = Field(None, ge=0, le=5, description="DFC default if unset")
    batch_size: int | None = Field(None, ge=1, description="calibration batch size")
    compiler_optimization_level: Literal[0, 1, 2, "max"] | None = None
    model_script: list[str] = Field(
        default_factory=list, description="model script lines appended after the generated ones"
    )
    output_meaning: dict[str, str] = Field(
        default_factory=dict, description="output name -> what it means (for metadata.json)"
    )
    emit_commands: bool = Field(
        False, description="write the DFC command lines and inputs instead of running the DFC"
    )

    @model_validator(mode="after")
    def _ordered_range(self) -> HailoExporterConfig:
        low, high = self.opset_range
        if not 7 <= low <= high:
            raise ValueError(f"opset_range: expected 7 <= low <= high, got {self.opset_range}")
        return self

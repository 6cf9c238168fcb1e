"""The Hailo Dataflow Compiler boundary: lazy import, the Python flow, the CLI equivalent.

``hailo_sdk_client`` is not on the public index (Hailo Developer Zone, free account); it is
imported only here, when a HEF is really compiled.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from visionforge.export import ExportError

DFC_MAJOR = {"hailo8": 3, "hailo8l": 3, "hailo10h": 5}
"""The DFC major version that compiles for each device family."""

INSTALL_HINT = (
    "download the Dataflow Compiler wheel from the Hailo Developer Zone "
    "(https://hailo.ai/developer-zone/software-downloads/, free account; DFC 3.x for "
    "Hailo-8/8L, DFC 5.x for Hailo-10H; Linux x86_64) and pip install "
    "hailo_dataflow_compiler-<version>-py3-none-linux_x86_64.whl in this environment, or "
    "rerun with --emit-commands to write the DFC command lines for a machine or Hailo's "
    "container that has it"
)


class DfcMissingError(ExportError):
    """The Dataflow Compiler is not installed (or is the wrong major version)."""


def load_dfc(hw_arch: str) -> ModuleType:
    """``hailo_sdk_client``, checked to be the DFC generation that targets ``hw_arch``."""
    try:
        import hailo_sdk_client
    except ImportError as err:
        raise DfcMissingError(
            f"--to hailo needs the Hailo Dataflow Compiler (Python module hailo_sdk_client: "
            f"{err}); {INSTALL_HINT}"
        ) from None
    version = str(getattr(hailo_sdk_client, "__version__", "") or "")
    major = version.split(".")[0]
    if major.isdigit() and int(major) != DFC_MAJOR[hw_arch]:
        raise DfcMissingError(
            f"export.hw_arch {hw_arch}: needs DFC {DFC_MAJOR[hw_arch]}.x but hailo_sdk_client "
            f"{version} is installed; {INSTALL_HINT}"
        )
    return hailo_sdk_client


@dataclass
class DfcJob:
    """Everything one compilation needs (paths are local files)."""

    hw_arch: str
    net_name: str
    onnx: str
    input_name: str
    input_shape: list[int]
    end_node_names: list[str]
    model_script: str
    model_script_path: str
    calibration_path: str
    parsed_har: str
    optimized_har: str
    compiled_har: str


def compile_hef(dfc: ModuleType, job: DfcJob, calibration: np.ndarray) -> bytes:
    """translate -> model script -> optimize -> compile, as the Hailo Model Zoo drives the
    DFC; the HAR of each stage is saved. Returns the HEF bytes."""
    runner: Any = dfc.ClientRunner(hw_arch=job.hw_arch)
    runner.translate_onnx_model(
        job.onnx,
        job.net_name,
        start_node_names=[job.input_name],
        end_node_names=job.end_node_names or None,
        net_input_shapes={job.input_name: job.input_shape},
    )
    runner.save_har(job.parsed_har)
    if job.model_script:
        runner.load_model_script(job.model_script)
    runner.optimize(calibration)
    runner.save_har(job.optimized_har)
    hef = runner.compile()
    runner.save_har(job.compiled_har)
    if not isinstance(hef, (bytes, bytearray)) or not hef:
        raise ExportError(f"{job.net_name}: the DFC's compile() returned no HEF bytes")
    return bytes(hef)


def command_lines(job: DfcJob, output_dir: str) -> list[str]:
    """The ``hailo parser onnx`` / ``hailo optimize`` / ``hailo compiler`` equivalents."""
    shape = "[" + ",".join(str(d) for d in job.input_shape) + "]"
    parse = [
        "hailo", "parser", "onnx", job.onnx,
        "--net-name", job.net_name,
        "--hw-arch", job.hw_arch,
        "--har-path", job.parsed_har,
        "--start-node-names", job.input_name,
        "--tensor-shapes", f"{job.input_name}={shape}",
        "-y",
    ]  # fmt: skip
    if job.end_node_names:
        parse += ["--end-node-names", *job.end_node_names]
    optimize = [
        "hailo", "optimize", job.parsed_har,
        "--hw-arch", job.hw_arch,
        "--calib-set-path", job.calibration_path,
        "--output-har-path", job.optimized_har,
    ]  # fmt: skip
    if job.model_script:
        optimize += ["--model-script", job.model_script_path]
    compiler = [
        "hailo", "compiler", job.optimized_har,
        "--hw-arch", job.hw_arch,
        "--output-dir", output_dir,
        "--output-har-path", job.compiled_har,
    ]  # fmt: skip
    return [_join(parse), _join(optimize), _join(compiler)]


def _join(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)

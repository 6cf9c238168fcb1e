"""Entry module of the hailo plugin: registers the ``hailo`` exporter and its export options
(torch-free)."""

from __future__ import annotations

import argparse

from visionforge import hookimpl
from visionforge.registry import Registries
from visionforge_hailo.configs import HailoExporterConfig


@hookimpl
def visionforge_register(registries: Registries) -> None:
    """Register the ``hailo`` exporter (ONNX artifact -> HEF)."""
    registries.exporters.register(
        "hailo",
        config=HailoExporterConfig,
        builder="visionforge_hailo.exporter:build_hailo",
        description="Hailo HEF via the Dataflow Compiler (preflight, INT8 calibration)",
    )


@hookimpl
def visionforge_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the Hailo options to ``visionforge export`` (they fill the exporter's block)."""
    export = subparsers.choices.get("export")
    if export is None:
        return
    group = export.add_argument_group("hailo exporter (--to hailo)")
    group.add_argument(
        "--emit-commands",
        dest="export.emit_commands",
        action="store_true",
        default=None,
        help="write the DFC command lines, calibration set and model script; no DFC needed",
    )
    group.add_argument(
        "--calibration",
        dest="export.calibration.data",
        metavar="DATA",
        help="calibration data: a .npy array, or a YAML/JSON dataset block "
        "(default: the recipe's val, else train, data)",
    )
    group.add_argument(
        "--calibration-size",
        dest="export.calibration.size",
        type=int,
        metavar="N",
        help="calibration images (default: 1024)",
    )
    group.add_argument(
        "--end-node-names",
        dest="export.end_node_names",
        nargs="+",
        metavar="NODE",
        help="cut the graph after these ONNX nodes (the host runs the rest)",
    )
    group.add_argument(
        "--hw-arch",
        dest="export.hw_arch",
        choices=("hailo8", "hailo8l", "hailo10h"),
        help="target device (default: hailo8)",
    )

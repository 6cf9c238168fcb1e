"""The hailo exporter: DFC missing, --emit-commands, and the DFC flow against a test double
of hailo_sdk_client (calls, order, arguments, files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from visionforge import cli, lineage
from visionforge.export import ExportError
from visionforge.export.chain import load_artifact
from visionforge.interfaces import Exporter
from visionforge_hailo.configs import HailoExporterConfig
from visionforge_hailo.dfc import DfcMissingError
from visionforge_hailo.exporter import HailoExporter, build_hailo


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_is_an_exporter_of_onnx_artifacts() -> None:
    exporter = build_hailo(HailoExporterConfig(emit_commands=True))
    assert isinstance(exporter, Exporter)
    assert exporter.source_kinds == ("onnx",) and exporter.suffix == ".hef"


@pytest.mark.usefixtures("no_dfc")
def test_without_the_dfc_one_line_says_how_to_get_it(
    tmp_path: Path, checkpoint: str, onnx_artifact: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DfcMissingError) as caught:
        HailoExporter(HailoExporterConfig()).export(
            load_artifact(onnx_artifact), out=str(tmp_path / "best.hef")
        )
    message = str(caught.value)
    for part in ("hailo_sdk_client", "Hailo Developer Zone", "DFC 3.x for Hailo-8/8L"):
        assert part in message
    assert "DFC 5.x for Hailo-10H" in message and "pip install" in message
    assert "--emit-commands" in message
    code, out, err = _run(capsys, "export", onnx_artifact, "--to", "hailo")
    assert code == 2 and out == ""
    assert err.startswith("error: --to hailo needs the Hailo Dataflow Compiler")
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    code, out, err = _run(capsys, "export", checkpoint, "--to", "hailo")  # before any ONNX
    assert code == 2 and err.startswith("error: --to hailo needs the Hailo Dataflow Compiler")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.usefixtures("no_dfc")
def test_emit_commands_writes_inputs_and_command_lines(
    tmp_path: Path, onnx_artifact: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys, "export", onnx_artifact, "--to", "hailo", "--emit-commands", "--hw-arch", "hailo8l"
    )
    assert code == 0, err
    script = tmp_path / "best.hailo.sh"
    assert out.strip() == f"wrote {script} (hailo_commands)"
    lines = script.read_text().splitlines()
    parse, optimize, compiler = (line for line in lines if line.startswith("hailo "))
    assert parse.startswith("hailo parser onnx best.hailo.onnx --net-name best --hw-arch hailo8l")
    assert "--start-node-names image --tensor-shapes 'image=[1,3,16,16]'" in parse
    assert optimize == (
        "hailo optimize best.parsed.har --hw-arch hailo8l --calib-set-path best.calib.npy "
        "--output-har-path best.optimized.har --model-script best.alls"
    )
    assert compiler.startswith("hailo compiler best.optimized.har --hw-arch hailo8l")
    alls = (tmp_path / "best.alls").read_text()
    assert (
        alls
        == "normalization1 = normalization([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])\n"
    )
    calibration = np.load(tmp_path / "best.calib.npy")
    assert calibration.shape == (6, 16, 16, 3) and calibration.max() > 1
    metadata = json.loads((tmp_path / "best.metadata.json").read_text())
    assert metadata["class_names"] == ["ace", "king"]
    assert metadata["input"]["device_shape"] == [1, 16, 16, 3]
    assert metadata["normalization"]["on_chip"] is True
    assert metadata["outputs"] == [
        {
            "name": "logits",
            "shape": [1, 2],
            "meaning": "class logits (before softmax); index i is class_names[i]",
        }
    ]
    manifest = lineage.read_manifest(str(script))
    assert [p["path"] for p in manifest["parents"]] == [
        onnx_artifact,
        str(tmp_path / "best.calib.npy"),
    ]
    assert manifest["preflight"]["input_shape"] == [1, 3, 16, 16]
    assert not (tmp_path / "best.hef").exists()


def test_dfc_flow_calls_order_arguments_and_files(
    tmp_path: Path, onnx_artifact: str, fake_dfc: Any
) -> None:
    cfg = HailoExporterConfig(
        optimization_level=2,
        compression_level=1,
        batch_size=2,
        compiler_optimization_level="max",
        model_script=["quantization_param({*output*}, precision_mode=a16_w16)"],
    )
    artifact = HailoExporter(cfg).export(
        load_artifact(onnx_artifact), out=str(tmp_path / "best.hef")
    )
    (runner,) = fake_dfc.instances
    assert runner.hw_arch == "hailo8"
    assert [name for name, _ in runner.calls] == [
        "translate_onnx_model",
        "save_har",
        "load_model_script",
        "optimize",
        "save_har",
        "compile",
        "save_har",
    ]
    translate = runner.calls[0][1]
    assert translate["model"] == str(tmp_path / "best.hailo.onnx")
    assert translate["net_name"] == "best"
    assert translate["start_node_names"] == ["image"] and translate["end_node_names"] is None
    assert translate["net_input_shapes"] == {"image": [1, 3, 16, 16]}
    script = runner.calls[2][1]["model_script"]
    assert script.splitlines() == [
        "normalization1 = normalization([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])",
        "model_optimization_flavor(optimization_level=2, compression_level=1)",
        "model_optimization_config(calibration, batch_size=2, calibset_size=6)",
        "performance_param(compiler_optimization_level=max)",
        "quantization_param({*output*}, precision_mode=a16_w16)",
    ]
    assert script == (tmp_path / "best.alls").read_text()
    calib_data = runner.calls[3][1]["calib_data"]
    np.testing.assert_array_equal(calib_data, np.load(tmp_path / "best.calib.npy"))
    hars = [args["har_path"] for name, args in runner.calls if name == "save_har"]
    assert hars == [
        str(tmp_path / f"best.{stage}.har") for stage in ("parsed", "optimized", "compiled")
    ]
    assert all(Path(h).exists() for h in hars)
    assert (tmp_path / "best.hef").read_bytes() == b"HEF\x00fake-compiled-network"
    assert artifact.kind == "hef" and artifact.path == str(tmp_path / "best.hef")
    chain = lineage.lineage_chain(artifact.path)
    assert [c["kind"] for c in chain] == ["hef", "onnx", "checkpoint"]
    assert chain[0]["parents"][0]["id"] == chain[1]["id"]
    assert chain[0]["sha256"] and chain[0]["dfc_version"] == "3.31.0"
    assert onnx.load(str(tmp_path / "best.hailo.onnx")).ir_version <= 8


def test_wrong_dfc_generation_for_the_device(
    tmp_path: Path, onnx_artifact: str, fake_dfc: Any
) -> None:
    with pytest.raises(DfcMissingError, match=r"hailo10h: needs DFC 5\.x but .* 3\.31\.0"):
        HailoExporter(HailoExporterConfig(hw_arch="hailo10h")).export(
            load_artifact(onnx_artifact), out=str(tmp_path / "best.hef")
        )
    assert fake_dfc.instances == []


def test_unsupported_op_stops_before_the_dfc(
    tmp_path: Path, checkpoint: str, graph: Any, fake_dfc: Any
) -> None:
    path = tmp_path / "det.onnx"
    onnx.save(graph(tail="TopK"), str(path))
    lineage.write_manifest(str(path), "onnx", parents=[checkpoint])
    with pytest.raises(
        ExportError, match=r"TopK \(node '/topk'\); cut .*--end-node-names /head/fc"
    ):
        HailoExporter(HailoExporterConfig()).export(
            load_artifact(str(path)), out=str(tmp_path / "det.hef")
        )
    assert fake_dfc.instances == []
    artifact = HailoExporter(HailoExporterConfig(end_node_names=["/head/fc"])).export(
        load_artifact(str(path)), out=str(tmp_path / "det.hef")
    )
    assert fake_dfc.instances[0].calls[0][1]["end_node_names"] == ["/head/fc"]
    assert artifact.manifest["preflight"]["unsupported"] == []


def test_calibration_override_and_no_lineage(
    tmp_path: Path, graph: Any, fake_dfc: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "given.onnx"
    onnx.save(graph(), str(bare))  # no manifest, no checkpoint: no recipe to calibrate from
    code, _, err = _run(capsys, "export", str(bare), "--to", "hailo")
    assert code == 2 and "no calibration data" in err and "--calibration DATA" in err
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).uniform(-2, 2, (3, 16, 16, 3)).astype(np.float32))
    code, _, err = _run(
        capsys,
        "export",
        str(bare),
        "--to",
        "hailo",
        "--calibration",
        str(calib),
        "--set",
        "x=1",
    )
    assert code == 2 and "no checkpoint in its lineage" in err
    cfg = HailoExporterConfig(fold_normalization=False)
    cfg.calibration.data = str(calib)
    artifact = HailoExporter(cfg).export(load_artifact(str(bare)), out=str(tmp_path / "g.hef"))
    calls = dict(fake_dfc.instances[0].calls)
    assert "load_model_script" not in calls  # nothing to say: no normalization, no options
    np.testing.assert_array_equal(calls["optimize"]["calib_data"], np.load(calib))
    assert [p["path"] for p in artifact.manifest["parents"]] == [str(bare), str(calib)]
    assert (tmp_path / "g.alls").read_text() == ""

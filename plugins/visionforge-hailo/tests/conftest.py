"""Fixtures of the hailo tests: tiny ONNX graphs, image folders, checkpoints and a test double
of Hailo's Dataflow Compiler (``hailo_sdk_client``)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper, numpy_helper
from torchvision.io import write_png

from visionforge import lineage
from visionforge.config import Recipe, load_recipe

HEF_BYTES = b"HEF\x00fake-compiled-network"


def classifier_graph(
    *, opset: int = 13, ir_version: int = 7, tail: str | None = None, size: int = 16
) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm (2 classes), dynamic batch;
    ``tail="TopK"`` appends a TopK node the DFC does not take."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1], name="/stem/conv"),
        helper.make_node("Relu", ["c"], ["r"], name="/stem/relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="/pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/flatten"),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1, name="/head/fc"),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])]
    if tail == "TopK":
        weights.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "k"))
        nodes.append(helper.make_node("TopK", ["logits", "k"], ["top", "idx"], name="/topk"))
        outputs = [
            helper.make_tensor_value_info("top", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 2]),
        ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        outputs,
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def write_images(root: Path, per_class: int = 3) -> list[Path]:
    """RGB PNGs of 20x24 pixels in two class folders (sorted like ImageFolder)."""
    generator = torch.Generator().manual_seed(0)
    paths = []
    for name in ("ace", "king"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8, generator=generator)
            path = root / name / f"{i}.png"
            write_png(image, str(path))
            paths.append(path)
    return sorted(paths)


def image_recipe(folder: Path, **data: Any) -> Recipe:
    """A recipe whose val data is an image folder at 16x16 (eval: resize 18, crop 16)."""
    images = folder / "images"
    write_images(images)
    val = {"type": "image_folder", "root": str(images), "image_size": 16, **data}
    body = {
        "model": {"type": "timm", "name": "test_efficientnet", "num_classes": 2},
        "data": {"train": dict(val, augment="train"), "val": val},
        "trainer": {"output": str(folder / "run"), "device": "cpu"},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(body))
    return load_recipe(str(path))


def write_checkpoint(folder: Path, recipe: Recipe, model: torch.nn.Module | None = None) -> str:
    """A visionforge checkpoint of ``model`` (default: the recipe's, untrained) + manifest."""
    from visionforge.engine.checkpoint import CHECKPOINT_FORMAT, build_model, save_checkpoint

    model = model if model is not None else build_model(recipe)
    path = str(folder / "best.ckpt")
    save_checkpoint(
        {
            "format": CHECKPOINT_FORMAT,
            "recipe": recipe.model_dump(mode="json"),
            "model": model.state_dict(),
            "class_names": ["ace", "king"],
        },
        path,
    )
    lineage.write_manifest(path, "checkpoint", recipe=recipe)
    return path


def write_onnx(path: Path, model: onnx.ModelProto, parents: list[str]) -> str:
    onnx.save(model, str(path))
    lineage.write_manifest(str(path), "onnx", parents=parents)
    return str(path)


class FakeClientRunner:
    """Test double of ``hailo_sdk_client.ClientRunner`` with the method names and argument
    names the Hailo Model Zoo calls (translate_onnx_model / load_model_script / optimize /
    save_har / compile); records every call and writes the HAR files it is asked to."""

    instances: list[FakeClientRunner] = []

    def __init__(self, hw_arch: str = "hailo8", har: str | None = None) -> None:
        self.hw_arch = hw_arch
        self.calls: list[tuple[str, dict[str, Any]]] = []
        FakeClientRunner.instances.append(self)

    def _record(self, name: str, frame_locals: dict[str, Any]) -> None:
        self.calls.append((name, {k: v for k, v in frame_locals.items() if k != "self"}))

    def translate_onnx_model(
        self,
        model: str,
        net_name: str = "model",
        start_node_names: list[str] | None = None,
        end_node_names: list[str] | None = None,
        net_input_shapes: dict[str, list[int]] | None = None,
        augmented_path: str | None = None,
        disable_shape_inference: bool = False,
    ) -> tuple[str, dict[str, Any]]:
        self._record("translate_onnx_model", dict(locals()))
        assert onnx.load(model).graph.node, "the DFC got an empty model"
        return "hn", {}

    def load_model_script(self, model_script: str, append: bool = False) -> None:
        self._record("load_model_script", dict(locals()))

    def optimize(
        self, calib_data: Any, data_type: str = "auto", work_dir: str | None = None
    ) -> None:
        self._record("optimize", dict(locals()))

    def save_har(self, har_path: str, compressed: bool = False) -> None:
        self._record("save_har", dict(locals()))
        Path(har_path).write_bytes(b"HAR:" + str(len(self.calls)).encode())

    def compile(self) -> bytes:
        self._record("compile", {})
        return HEF_BYTES


@pytest.fixture
def fake_dfc(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeClientRunner]]:
    """``hailo_sdk_client`` replaced by a module holding :class:`FakeClientRunner` (3.x)."""
    module = types.ModuleType("hailo_sdk_client")
    module.ClientRunner = FakeClientRunner  # type: ignore[attr-defined]
    module.__version__ = "3.31.0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hailo_sdk_client", module)
    FakeClientRunner.instances = []
    yield FakeClientRunner


@pytest.fixture
def no_dfc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import hailo_sdk_client`` fail even where the DFC is installed."""
    monkeypatch.setitem(sys.modules, "hailo_sdk_client", None)


@pytest.fixture
def graph() -> Any:
    """:func:`classifier_graph` (tiny ONNX classifier factory)."""
    return classifier_graph


@pytest.fixture
def recipe(tmp_path: Path) -> Recipe:
    """:func:`image_recipe` in ``tmp_path``."""
    return image_recipe(tmp_path)


@pytest.fixture
def checkpoint(tmp_path: Path, recipe: Recipe) -> str:
    """An untrained checkpoint of ``recipe`` with its manifest."""
    return write_checkpoint(tmp_path, recipe)


@pytest.fixture
def onnx_artifact(tmp_path: Path, checkpoint: str) -> str:
    """``best.onnx`` (tiny classifier, opset 13) whose manifest names ``checkpoint``."""
    return write_onnx(tmp_path / "best.onnx", classifier_graph(), [checkpoint])

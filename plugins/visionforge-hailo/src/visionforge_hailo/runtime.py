"""Run an exported model where it is deployed: the HEF on a Hailo device through HailoRT
(``hailo_platform``), or the same ONNX in onnxruntime anywhere else, with one call.

``HailoPredictor.from_export("best.hef")(images)`` takes RGB images ``[B, H, W, 3]`` (uint8
pixels, as a camera or ``decode_image`` gives them, laid out NHWC) and returns ``{output
name: array [B, ...]}`` from either backend. ``metadata.json`` (written by the exporter) says
how the pixels are normalized: on the chip when the HEF has a normalization layer, by the
predictor before onnxruntime otherwise.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from visionforge.errors import VisionforgeError

Backend = Literal["auto", "hailort", "onnxruntime"]
Outputs = dict[str, np.ndarray]


def hailort_available() -> bool:
    """True when HailoRT's Python package can be imported."""
    try:
        import hailo_platform  # noqa: F401
    except ImportError:
        return False
    return True


class HailoPredictor:
    """One model, run by HailoRT when present, else by onnxruntime (same input, same output)."""

    def __init__(
        self,
        metadata: dict[str, Any],
        *,
        hef: str | None = None,
        onnx: str | None = None,
        backend: Backend = "auto",
        timeout_ms: int = 10_000,
    ) -> None:
        self.metadata = metadata
        self.output_names = [o["name"] for o in metadata["outputs"]]
        self._output_shapes = [list(o["shape"]) for o in metadata["outputs"]]
        shape = metadata["input"]["device_shape"]
        self.input_hwc = tuple(int(d) for d in shape[1:])
        self.class_names: list[str] | None = metadata.get("class_names")
        norm = metadata.get("normalization")
        self._on_chip = bool(norm and norm.get("on_chip"))
        self._mean = np.asarray(norm["mean"], np.float32) * 255 if norm else None
        self._std = np.asarray(norm["std"], np.float32) * 255 if norm else None
        if backend == "auto":
            backend = "hailort" if hef is not None and hailort_available() else "onnxruntime"
        self.backend: str = backend
        if backend == "hailort":
            if hef is None:
                raise VisionforgeError("backend hailort needs the .hef file")
            self._run = self._hailort(hef, timeout_ms)
        else:
            if onnx is None or not os.path.exists(onnx):
                raise VisionforgeError(
                    f"onnxruntime fallback: ONNX file {onnx} not found; keep the exporter's "
                    "<name>.hailo.onnx beside the HEF, or pass onnx="
                )
            self._run = self._onnxruntime(onnx)

    @classmethod
    def from_export(cls, hef: str, *, backend: Backend = "auto") -> HailoPredictor:
        """The predictor of an exported ``<name>.hef`` (reads ``<name>.metadata.json`` and
        falls back to ``<name>.hailo.onnx``, the graph the HEF was compiled from)."""
        stem = os.path.splitext(hef)[0]
        path = stem + ".metadata.json"
        try:
            with open(path, encoding="utf-8") as f:
                metadata = json.load(f)
        except FileNotFoundError:
            raise VisionforgeError(
                f"{path}: not found; copy the exporter's metadata.json beside the HEF"
            ) from None
        return cls(metadata, hef=hef, onnx=stem + ".hailo.onnx", backend=backend)

    def __call__(self, images: np.ndarray) -> Outputs:
        """Outputs for RGB images ``[B, H, W, 3]`` (or one ``[H, W, 3]``), 0-255 pixels."""
        batch = np.asarray(images)
        if batch.ndim == 3:
            batch = batch[None]
        if tuple(batch.shape[1:]) != self.input_hwc:
            raise VisionforgeError(
                f"images of shape {list(batch.shape)}; the model takes [B, "
                f"{', '.join(map(str, self.input_hwc))}] (resize/crop as the recipe's eval "
                "transforms do)"
            )
        return self._run(batch)

    def _model_input(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 as the ONNX graph takes it (normalized when the chip would do it)."""
        x = batch.astype(np.float32)
        if self._mean is not None and self._std is not None:
            x = (x - self._mean) / self._std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _onnxruntime(self, path: str) -> Callable[[np.ndarray], Outputs]:
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(batch: np.ndarray) -> Outputs:
            rows = [
                session.run(self.output_names, {name: self._model_input(image[None])})
                for image in batch
            ]
            return {
                out: np.concatenate([row[i] for row in rows])
                for i, out in enumerate(self.output_names)
            }

        return run

    def _hailort(self, hef: str, timeout_ms: int) -> Callable[[np.ndarray], Outputs]:
        from hailo_platform import FormatType, VDevice

        self._vdevice = VDevice()
        model = self._vdevice.create_infer_model(hef)
        model.input().set_format_type(FormatType.UINT8 if self._on_chip else FormatType.FLOAT32)
        for output in model.outputs:
            output.set_format_type(FormatType.FLOAT32)
        shapes = {o.name: tuple(o.shape) for o in model.outputs}
        if len(shapes) != len(self.output_names):
            raise VisionforgeError(
                f"{hef}: HailoRT reports {len(shapes)} outputs, metadata.json lists "
                f"{len(self.output_names)}; was the HEF compiled from this export?"
            )
        self._configured = model.configure()
        device_names = list(shapes)  # HailoRT's order, matched to metadata's by position

        def run(batch: np.ndarray) -> Outputs:
            rows = []
            for image in batch:
                pixels = image.astype(np.uint8) if self._on_chip else self._normalized(image)
                bindings = self._configured.create_bindings()
                bindings.input().set_buffer(np.ascontiguousarray(pixels))
                buffers = {n: np.empty(shapes[n], dtype=np.float32) for n in device_names}
                for name, buffer in buffers.items():
                    bindings.output(name).set_buffer(buffer)
                self._configured.run([bindings], timeout_ms)
                rows.append([buffers[n] for n in device_names])
            return {
                out: np.stack([_onnx_layout(row[i], self._output_shapes[i]) for row in rows])
                for i, out in enumerate(self.output_names)
            }

        return run

    def _normalized(self, image: np.ndarray) -> np.ndarray:
        x = image.astype(np.float32)
        if self._mean is not None and self._std is not None:
            x = (x - self._mean) / self._std
        return x


def _onnx_layout(array: np.ndarray, onnx_shape: list[Any]) -> np.ndarray:
    """One image's HailoRT output in the ONNX layout (feature maps come back NHWC)."""
    want = tuple(onnx_shape[1:])
    if array.shape == want:
        return array
    if len(want) == 3 and array.shape == (want[1], want[2], want[0]):
        return array.transpose(2, 0, 1)
    return array.reshape(want)


def measure_latency(
    predictor: Callable[[np.ndarray], Any],
    images: np.ndarray,
    *,
    warmup: int = 10,
    runs: int = 100,
) -> dict[str, float]:
    """Per-call latency of ``predictor(images)`` in milliseconds: mean, std, p50, p90, min."""
    for _ in range(warmup):
        predictor(images)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predictor(images)
        times.append((time.perf_counter() - start) * 1000)
    ordered = sorted(times)
    return {
        "mean_ms": statistics.fmean(times),
        "std_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
        "p50_ms": ordered[len(ordered) // 2],
        "p90_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))],
        "min_ms": ordered[0],
        "runs": float(runs),
    }

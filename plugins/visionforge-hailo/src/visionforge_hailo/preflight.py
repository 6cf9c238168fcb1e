"""Make an ONNX model fit for the Hailo Dataflow Compiler, without the DFC.

Static batch-1 input, opset converted into the range the DFC accepts (onnx's version
converter), IR version lowered, graph simplified (onnxslim), every step checked against the
input model in onnxruntime; op types the DFC does not take are listed with their node names
and the end nodes to cut before them (the host then runs that tail, e.g. a decode/NMS).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime
from onnx import version_converter

from visionforge.export import ExportError, ParityError

SUPPORTED_OPS = frozenset(
    {
        "Abs", "Add", "ArgMax", "AveragePool", "BatchNormalization", "Clip", "Concat",
        "Constant", "Conv", "ConvTranspose", "DepthToSpace", "Div", "Dropout", "Elu", "Erf",
        "Exp", "Flatten", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid",
        "HardSwish", "Identity", "InstanceNormalization", "LayerNormalization", "LeakyRelu",
        "Log", "LRN", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Pad", "Pow", "PRelu",
        "Reciprocal", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape",
        "Resize", "Sigmoid", "Slice", "Softmax", "Softplus", "SpaceToDepth", "Split", "Sqrt",
        "Squeeze", "Sub", "Tanh", "Tile", "Transpose", "Unsqueeze", "Upsample",
    }
)  # fmt: skip
"""ONNX op types the Dataflow Compiler translates (layers listed in Hailo's public material);
``extra_supported_ops`` adds to it. Anything else (NonMaxSuppression, TopK, ScatterND, NonZero,
Loop, If, GatherElements, ...) has to run on the host."""

OPSET_IR = {11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}
"""The IR version each default-domain opset came with (onnx's own table)."""


@dataclass
class PreflightReport:
    """What preflight found and changed; goes into the HEF's manifest."""

    input_name: str
    input_shape: list[int]
    opset: tuple[int, int]
    ir_version: tuple[int, int]
    nodes: tuple[int, int]
    max_abs_diff: float
    outputs: list[str]
    unsupported: list[tuple[str, str]] = field(default_factory=list)
    suggested_end_nodes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def unsupported_message(self, where: str) -> str:
        """One line naming the unsupported ops and the end nodes to cut before them."""
        listed = ", ".join(f"{op} (node {name!r})" for op, name in self.unsupported[:8])
        more = f" and {len(self.unsupported) - 8} more" if len(self.unsupported) > 8 else ""
        cut = " ".join(self.suggested_end_nodes)
        return (
            f"{where}: the Hailo DFC does not support {listed}{more}; cut the graph before "
            f"them with --end-node-names {cut} (export.end_node_names) and run that tail on "
            "the host, or list op types your DFC version takes in export.extra_supported_ops"
        )


def default_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain (``ai.onnx``) opset."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError("the ONNX model imports no default-domain opset")


def fix_batch(model: onnx.ModelProto, where: str) -> tuple[str, list[int]]:
    """Set the (single) image input to batch 1; other dims must be static."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ExportError(
            f"{where}: the Hailo exporter takes a model with one image input, got "
            f"{[i.name for i in inputs]}"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    for index, dim in enumerate(dims[1:], start=1):
        if not dim.HasField("dim_value"):
            raise ExportError(
                f"{where}: input {inputs[0].name!r} axis {index} is dynamic "
                f"({dim.dim_param or '?'}); export with a fixed input size "
                "(export.input_size / the dataset's image_size)"
            )
    dims[0].Clear()
    dims[0].dim_value = 1
    return inputs[0].name, [int(d.dim_value) for d in dims]


Reexport = Callable[[int], onnx.ModelProto]
"""Makes the model again at the given opset (e.g. torch's TorchScript exporter from the
checkpoint in the ONNX file's lineage): the fallback when onnx's converter has no adapter."""


def convert_opset(
    model: onnx.ModelProto,
    opset_range: tuple[int, int],
    where: str,
    reexport: Reexport | None = None,
) -> tuple[int, str]:
    """Convert ``model`` in place into ``opset_range``; return (the opset it had, how)."""
    before = default_opset(model)
    low, high = opset_range
    target = min(max(before, low), high)
    if target == before:
        return before, "unchanged"
    try:
        converted = version_converter.convert_version(model, target)
        how = "onnx version converter"
    except Exception as err:  # the converter raises RuntimeError/ValueError per adapter
        text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        reason = text.rpartition("failed: ")[2]
        if reexport is None:
            raise ExportError(
                f"{where}: onnx's version converter cannot take opset {before} to {target} "
                f"({reason.strip()}); export the model at opset {target} with torch's "
                "TorchScript exporter (the hailo exporter does it when the ONNX file's lineage "
                "leads to its checkpoint) or widen export.opset_range if your DFC accepts it"
            ) from None
        converted = reexport(target)
        how = f"re-exported at opset {target} (onnx's converter: {reason.strip()})"
    fix_batch(converted, where)
    model.CopyFrom(converted)
    return before, how


def name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed nodes a unique ``<op>_<index>`` name (end nodes are cut by name)."""
    taken = {n.name for n in model.graph.node if n.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def find_unsupported(
    model: onnx.ModelProto, supported: Iterable[str], end_node_names: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """``(op_type, node name)`` of nodes the DFC would translate but cannot: every node, or
    with ``end_node_names`` only those the end nodes depend on."""
    allowed = set(supported)
    nodes = _ancestors(model, end_node_names) if end_node_names else list(model.graph.node)
    return [
        (n.op_type, n.name)
        for n in nodes
        if n.domain not in ("", "ai.onnx") or n.op_type not in allowed
    ]


def _ancestors(model: onnx.ModelProto, end_node_names: Sequence[str]) -> list[onnx.NodeProto]:
    by_name = {n.name: n for n in model.graph.node}
    missing = [name for name in end_node_names if name not in by_name]
    if missing:
        raise ExportError(
            f"export.end_node_names: no node named {missing} in the model; node names are "
            "listed by `python -m onnx.tools` or netron, and in the preflight error"
        )
    producer = {out: n for n in model.graph.node for out in n.output}
    keep: set[str] = set()
    stack = [by_name[name] for name in end_node_names]
    while stack:
        node = stack.pop()
        if node.name in keep:
            continue
        keep.add(node.name)
        stack += [producer[i] for i in node.input if i in producer]
    return [n for n in model.graph.node if n.name in keep]


def suggest_end_nodes(model: onnx.ModelProto, unsupported: Sequence[tuple[str, str]]) -> list[str]:
    """The nodes whose outputs feed the unsupported tail (everything downstream of an
    unsupported node): cutting after them leaves a graph the DFC takes."""
    bad = {name for _, name in unsupported}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    tail: set[str] = set()
    stack = [n for n in model.graph.node if n.name in bad]
    while stack:
        node = stack.pop()
        if node.name in tail:
            continue
        tail.add(node.name)
        stack += [c for out in node.output for c in consumers.get(out, [])]
    ends = []
    for node in model.graph.node:
        if node.name in tail or node.op_type == "Constant":
            continue
        feeds_tail = any(c.name in tail for out in node.output for c in consumers.get(out, []))
        if feeds_tail:
            ends.append(node.name)
    return ends


def _run(model: onnx.ModelProto, feed: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    return [np.asarray(o) for o in session.run(None, {name: feed})]


def _max_abs_diff(want: list[np.ndarray], have: list[np.ndarray], where: str) -> float:
    if len(want) != len(have):
        raise ExportError(f"{where}: preflight changed the number of outputs")
    worst = 0.0
    for a, b in zip(want, have, strict=True):
        if a.shape != b.shape:
            raise ExportError(f"{where}: preflight changed an output shape {a.shape} -> {b.shape}")
        if a.size:
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            worst = max(worst, float(np.max(diff)))
    return worst


def preflight(
    source: str,
    dest: str,
    *,
    opset_range: tuple[int, int] = (11, 13),
    max_ir_version: int = 8,
    simplify: bool = True,
    tolerance: float = 1e-4,
    end_node_names: Sequence[str] = (),
    extra_supported_ops: Iterable[str] = (),
    reexport: Reexport | None = None,
) -> PreflightReport:
    """Write the DFC-ready model of ``source`` to ``dest`` and return what was done.

    Raises :class:`ParityError` when the result differs from ``source`` in onnxruntime by more
    than ``tolerance``. Unsupported ops are reported, not raised: the caller decides.
    """
    where = source
    original = onnx.load(source)
    model = onnx.ModelProto()
    model.CopyFrom(original)
    input_name, shape = fix_batch(model, where)
    ir_before = int(model.ir_version)
    opset_before, how = convert_opset(model, opset_range, where, reexport)
    notes = [f"opset: {how}"]
    if simplify:
        import onnxslim

        nodes_before = len(model.graph.node)
        model = onnxslim.slim(model)
        notes.append(f"onnxslim: {nodes_before} -> {len(model.graph.node)} nodes")
    opset_after = default_opset(model)
    ir_cap = min(max_ir_version, OPSET_IR.get(opset_after, max_ir_version))
    if model.ir_version > ir_cap:
        notes.append(f"IR version {model.ir_version} lowered to {ir_cap}")
        model.ir_version = ir_cap
    name_nodes(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        reason = str(err).strip().splitlines()[0]
        raise ExportError(f"{where}: the preflighted model is not valid ONNX: {reason}") from None
    feed = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    diff = _max_abs_diff(_run(original, feed), _run(model, feed), where)
    if not diff <= tolerance:
        raise ParityError(
            f"{where}: after preflight (opset {opset_before} -> {opset_after}, simplify) "
            f"onnxruntime differs by max abs {diff:.3g} (> tolerance {tolerance:g}); "
            "raise export.tolerance if that is expected, or set export.simplify=false"
        )
    unsupported = find_unsupported(model, SUPPORTED_OPS | set(extra_supported_ops), end_node_names)
    onnx.save(model, os.fspath(dest))
    return PreflightReport(
        input_name=input_name,
        input_shape=shape,
        opset=(opset_before, opset_after),
        ir_version=(ir_before, int(model.ir_version)),
        nodes=(len(original.graph.node), len(model.graph.node)),
        max_abs_diff=diff,
        outputs=[o.name for o in model.graph.output],
        unsupported=unsupported,
        suggested_end_nodes=suggest_end_nodes(model, unsupported) if unsupported else [],
        notes=notes,
    )

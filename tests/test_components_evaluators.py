"""topk evaluator against a direct computation; per-class accuracy and reports."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fsspec
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from visionforge import REGISTRIES
from visionforge.components.evaluators import TopKAccuracy
from visionforge.errors import ConfigError


def evaluator(**spec: object) -> TopKAccuracy:
    built = REGISTRIES.evaluators.build({"type": "topk", **spec}, "evaluator")
    assert isinstance(built, TopKAccuracy)
    return built


def direct_topk(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Label counts as a hit when fewer than k classes score strictly higher (distinct scores)."""
    label_scores = logits[torch.arange(len(labels)), labels]
    rank = (logits > label_scores[:, None]).sum(dim=1)
    return float((rank < k).double().mean())


@settings(max_examples=60, deadline=None)
@given(
    num_classes=st.integers(2, 12),
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    ks=st.lists(st.integers(1, 15), min_size=1, max_size=3, unique=True),
    seed=st.integers(0, 2**31),
)
def test_topk_matches_a_direct_computation(
    num_classes: int, sizes: list[int], ks: list[int], seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    # distinct scores per row: a random permutation of 0..K-1
    logits = torch.argsort(torch.rand(total, num_classes, generator=g), dim=1).float()
    labels = torch.randint(0, num_classes, (total,), generator=g)
    ev = evaluator(k=ks)
    for chunk_logits, chunk_labels in zip(logits.split(sizes), labels.split(sizes), strict=True):
        ev.update({"logits": chunk_logits}, {"label": chunk_labels})
    metrics = ev.compute()
    # k >= K is always 1.0: reported only as the primary metric (top1, else the first k)
    assert set(metrics) == {f"top{k}" for k in ks if k < num_classes} | {ev.primary_metric}
    for name, value in metrics.items():
        expected = direct_topk(logits, labels, min(int(name[3:]), num_classes))
        assert value == pytest.approx(expected)
        assert 0.0 <= value <= 1.0


def test_defaults_and_reset() -> None:
    ev = evaluator()
    assert (ev.primary_metric, ev.mode) == ("top1", "max")
    ev.update({"logits": torch.eye(3)}, {"label": torch.tensor([0, 1, 0])})
    assert ev.compute() == pytest.approx({"top1": 2 / 3})  # top5 of 3 classes: always 1
    ev.reset()
    ev.update({"logits": torch.eye(2)}, {"label": torch.tensor([0, 1])})
    assert ev.compute()["top1"] == 1.0


def test_soft_targets_count_their_argmax() -> None:
    ev = evaluator(k=[1])
    soft = torch.tensor([[0.1, 0.9], [0.6, 0.4], [0.3, 0.7]])
    ev.update({"logits": torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])}, {"label": soft})
    assert ev.compute()["top1"] == pytest.approx(1 / 3)


def per_class_run(num_classes: int = 3) -> TopKAccuracy:
    ev = evaluator(per_class=True)
    ev.class_names = [f"c{i}" for i in range(num_classes)]
    predictions = torch.tensor([0, 0, 1, 2, 2, 2])
    labels = torch.tensor([0, 1, 1, 1, 2, 0])
    logits = torch.nn.functional.one_hot(predictions, num_classes).float()
    ev.update({"logits": logits[:4]}, {"label": labels[:4]})
    ev.update({"logits": logits[4:]}, {"label": labels[4:]})
    return ev


def test_per_class_accuracy() -> None:
    ev = per_class_run()
    metrics = ev.compute()
    assert metrics["top1"] == pytest.approx(3 / 6)
    assert metrics["mean_class_acc"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert not any(key.startswith("acc/") for key in metrics)
    details = ev.details()
    assert details["acc/c0"] == pytest.approx(1 / 2)
    assert details["acc/c1"] == pytest.approx(1 / 3)
    assert details["acc/c2"] == pytest.approx(1.0)


def test_state_dict_round_trip_continues_counting() -> None:
    full = per_class_run()
    first = evaluator(per_class=True)
    predictions = torch.tensor([0, 0, 1, 2, 2, 2])
    labels = torch.tensor([0, 1, 1, 1, 2, 0])
    logits = torch.nn.functional.one_hot(predictions, 3).float()
    first.update({"logits": logits[:4]}, {"label": labels[:4]})
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = evaluator(per_class=True)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    resumed.update({"logits": logits[4:]}, {"label": labels[4:]})
    assert resumed.compute() == full.compute()
    resumed.class_names = full.class_names
    assert resumed.details() == full.details()


def test_report_writes_per_class_json_and_confusion_png(tmp_path: Path) -> None:
    paths = per_class_run().write_report(str(tmp_path))
    assert paths == [str(tmp_path / "per_class.json"), str(tmp_path / "confusion_matrix.png")]
    report = json.loads((tmp_path / "per_class.json").read_text())
    assert report["confusion_matrix"] == [[1, 0, 1], [1, 1, 1], [0, 0, 1]]
    assert [c["name"] for c in report["classes"]] == ["c0", "c1", "c2"]
    assert [c["support"] for c in report["classes"]] == [2, 3, 1]
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_to_an_fsspec_url_and_no_png_for_many_classes() -> None:
    ev = evaluator(per_class=True)
    ev.update({"logits": torch.randn(8, 60)}, {"label": torch.arange(8)})
    paths = ev.write_report("memory://vf-topk-report")
    assert paths == ["memory://vf-topk-report/per_class.json"]
    with fsspec.open(paths[0], "rb") as f:
        assert len(json.load(f)["classes"]) == 60


def test_without_per_class_there_is_no_report(tmp_path: Path) -> None:
    ev = evaluator()
    ev.update({"logits": torch.eye(2)}, {"label": torch.tensor([0, 1])})
    assert ev.write_report(str(tmp_path)) == []


def test_errors() -> None:
    with pytest.raises(ConfigError, match=r"no samples"):
        evaluator().compute()
    out_of_range = evaluator(per_class=True)
    out_of_range.update({"logits": torch.zeros(2, 3)}, {"label": torch.tensor([0, 4])})
    with pytest.raises(ConfigError, match=r"labels range over 0..4 but the model has 3 outputs"):
        out_of_range.compute()
    changing = evaluator()
    changing.update({"logits": torch.zeros(2, 3)}, {"label": torch.tensor([0, 1])})
    with pytest.raises(ConfigError, match=r"logits changed from 3 to 4 classes"):
        changing.update({"logits": torch.zeros(2, 4)}, {"label": torch.tensor([0, 1])})
    with pytest.raises(ConfigError, match=r"evaluator.k"):
        evaluator(k=[0])

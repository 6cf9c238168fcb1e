"""image_folder (local and fsspec) and synthetic_classification datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.io import encode_jpeg, encode_png

from visionforge import REGISTRIES
from visionforge.components.datasets import ImageFolder, SyntheticClassification
from visionforge.errors import ConfigError, StorageError

CLASSES = ("cat", "dog", "eel")


def write_image(path: Path, seed: int, fmt: str, size: tuple[int, int] = (24, 40)) -> None:
    image = torch.randint(
        0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )
    data = encode_png(image) if fmt == "png" else encode_jpeg(image, quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.numpy().tobytes())


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """3 classes (given in unsorted order), each with 2 PNG and 2 JPEG files, one nested."""
    root = tmp_path / "images"
    for c, name in enumerate(reversed(CLASSES)):
        for i in range(4):
            fmt = "png" if i % 2 else "jpg"
            sub = "nested/" if i == 3 else ""
            write_image(root / name / f"{sub}{i}.{fmt}", seed=10 * c + i, fmt=fmt)
    return root


def build(**spec: Any) -> Any:
    return REGISTRIES.datasets.build({"type": "image_folder", **spec}, "data.train")


def test_image_folder_lists_sorted_classes_and_all_images(tree: Path) -> None:
    ds = build(root=str(tree), image_size=16)
    assert isinstance(ds, ImageFolder)
    assert ds.class_names == list(CLASSES)
    assert ds.num_classes == 3
    assert len(ds) == 12
    assert ds.labels == [0] * 4 + [1] * 4 + [2] * 4
    assert {Path(p).suffix for p, _ in ds.samples} == {".png", ".jpg"}
    assert any("nested" in p for p, _ in ds.samples)
    item = ds[5]
    assert item["label"] == 1
    assert isinstance(item["image"], tv_tensors.Image)
    assert item["image"].shape == (3, 16, 16)
    assert item["image"].dtype == torch.float32


def test_eval_preset_normalizes_what_the_uint8_preset_returns(tree: Path) -> None:
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    as_float = build(root=str(tree), image_size=16, mean=mean, std=std)
    as_uint8 = build(root=str(tree), image_size=16, mean=mean, std=std, normalize=False)
    raw = as_uint8[2]["image"]
    assert raw.dtype == torch.uint8
    expected = (raw.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[
        :, None, None
    ]
    torch.testing.assert_close(as_float[2]["image"].as_subclass(torch.Tensor), expected)


def test_train_preset_is_random_and_right_sized(tree: Path) -> None:
    ds = build(root=str(tree), image_size=20, augment="train")
    torch.manual_seed(0)
    first = ds[0]["image"]
    second = ds[0]["image"]
    assert first.shape == second.shape == (3, 20, 20)
    assert not torch.equal(first, second)


def test_image_folder_through_fsspec_memory_url(tree: Path) -> None:
    fs = fsspec.filesystem("memory")
    for path in tree.rglob("*.*"):
        fs.pipe(f"/vf-test-tree/{path.relative_to(tree).as_posix()}", path.read_bytes())
    try:
        remote = build(root="memory://vf-test-tree", image_size=16)
        local = build(root=str(tree), image_size=16)
        assert remote.class_names == local.class_names
        assert len(remote) == len(local)
        for i in range(len(local)):
            torch.testing.assert_close(remote[i]["image"], local[i]["image"])
            assert remote[i]["label"] == local[i]["label"]
        batch = next(iter(DataLoader(remote, batch_size=4, num_workers=1)))
        assert batch["image"].shape == (4, 3, 16, 16)
    finally:
        fs.rm("/vf-test-tree", recursive=True)


def test_corrupt_image_error_names_the_file(tree: Path) -> None:
    bad = tree / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = build(root=str(tree), image_size=16)
    index = next(i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.jpg"))
    with pytest.raises(StorageError, match=rf"^{bad}: cannot decode image"):
        ds[index]


def test_missing_root_names_it(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"{tmp_path / 'nothing'}: dataset root not found"):
        build(root=str(tmp_path / "nothing"))


def test_root_without_class_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "flat.png", seed=0, fmt="png")
    with pytest.raises(ConfigError, match=r"no class folders"):
        build(root=str(tmp_path))


def test_empty_class_folder_names_it(tree: Path) -> None:
    (tree / "empty").mkdir()
    (tree / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ConfigError, match=rf"{tree / 'empty'}: class folder has no images"):
        build(root=str(tree))


def test_non_image_files_are_reported_not_silently_dropped(tree: Path) -> None:
    (tree / "cat" / "labels.csv").write_text("a,b")
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) .*/labels\.csv"):
        ds = build(root=str(tree))
    assert len(ds) == 12


def test_hidden_folders_are_not_classes(tree: Path) -> None:
    write_image(tree / ".cache" / "x.png", seed=0, fmt="png")
    assert build(root=str(tree)).class_names == list(CLASSES)


def synthetic(**spec: Any) -> SyntheticClassification:
    ds = REGISTRIES.datasets.build({"type": "synthetic_classification", **spec}, "data.train")
    assert isinstance(ds, SyntheticClassification)
    return ds


def test_synthetic_is_deterministic_and_order_independent() -> None:
    state = torch.get_rng_state()
    a = synthetic(num_classes=3, num_samples=12, seed=7)
    b = synthetic(num_classes=3, num_samples=12, seed=7)
    forward = [a[i]["image"] for i in range(12)]
    backward = [b[i]["image"] for i in reversed(range(12))][::-1]
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must not be touched"
    for x, y in zip(forward, backward, strict=True):
        assert torch.equal(x, y)
    other_seed = synthetic(num_classes=3, num_samples=12, seed=8)
    assert not torch.equal(other_seed[0]["image"], forward[0])


def test_synthetic_items_and_attributes() -> None:
    ds = synthetic(num_classes=5, num_samples=11, image_size=24, channels=1)
    assert len(ds) == 11
    assert ds.num_classes == 5 and len(ds.class_names) == 5
    assert [ds[i]["label"] for i in range(11)] == [i % 5 for i in range(11)]
    image = ds[3]["image"]
    assert isinstance(image, tv_tensors.Image)
    assert image.shape == (1, 24, 24) and image.dtype == torch.float32
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0
    with pytest.raises(IndexError):
        ds[11]


def test_synthetic_classes_are_distinct() -> None:
    """Nearest class-mean on position-free colour features (per-channel brightest-pixel level
    and mean), fitted on seed 0, tested on seed 1."""

    def features(ds: SyntheticClassification) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack([ds[i]["image"] for i in range(len(ds))]).flatten(2)
        colour = torch.cat([pixels.quantile(0.95, dim=2), pixels.mean(dim=2)], dim=1)
        return colour, torch.tensor(ds.labels)

    train_x, train_y = features(synthetic(num_classes=6, num_samples=240, seed=0))
    test_x, test_y = features(synthetic(num_classes=6, num_samples=120, seed=1))
    means = torch.stack([train_x[train_y == c].mean(0) for c in range(6)])
    predicted = torch.cdist(test_x, means).argmin(1)
    assert (predicted == test_y).float().mean() > 0.9


@pytest.mark.slow
def test_resnet18_learns_synthetic_in_three_short_epochs() -> None:
    """ResNet-18 at 32 px, 256 images, 3 epochs of batch 32 (the first quickstart's setting)."""
    torch.manual_seed(0)
    train = synthetic(num_classes=4, num_samples=256, image_size=32)
    val = synthetic(num_classes=4, num_samples=64, image_size=32, seed=1)
    model = REGISTRIES.models.build({"type": "timm", "name": "resnet18", "num_classes": 4})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        model.train()
        for batch in DataLoader(train, batch_size=32, shuffle=True):
            loss = torch.nn.functional.cross_entropy(model(batch)["logits"], batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        batch = next(iter(DataLoader(val, batch_size=64)))
        accuracy = (model(batch)["logits"].argmax(1) == batch["label"]).float().mean()
    assert accuracy >= 0.6, f"val accuracy {accuracy:.2f}; chance is 0.25"


def test_loader_workers_give_the_same_items(tree: Path) -> None:
    ds = build(root=str(tree), image_size=16)
    single = next(iter(DataLoader(ds, batch_size=12)))
    workers = next(iter(DataLoader(ds, batch_size=12, num_workers=2)))
    assert torch.equal(single["image"], workers["image"])
    assert torch.equal(single["label"], workers["label"])


def test_animated_gif_gives_its_first_frame(tree: Path) -> None:
    from PIL import Image

    frames = [Image.new("RGB", (8, 6), colour) for colour in ("red", "blue")]
    path = tree / "eel" / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    ds = build(root=str(tree), normalize=False, image_size=8)
    index = next(i for i, (p, _) in enumerate(ds.samples) if p.endswith("animated.gif"))
    image = ds.load_image(index)
    assert image.shape == (3, 6, 8)
    assert image[0].float().mean() > 200 and image[2].float().mean() < 50  # red, not blue

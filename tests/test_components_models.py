"""timm / torchvision classifier models: forward, pretrained_path loading, name errors."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest
import torch
from torchvision import tv_tensors

from visionforge import REGISTRIES
from visionforge.components.models import ClassifierModel
from visionforge.errors import CheckpointError, ConfigError, StorageError

# small networks keep the tests fast; both have their classifier in "fc"
SMALL = {"timm": "test_resnet", "torchvision": "shufflenet_v2_x0_5"}
OTHER = {"timm": "test_byobnet", "torchvision": "mobilenet_v3_small"}


def build(**spec: object) -> ClassifierModel:
    model = REGISTRIES.models.build(spec, "model")
    assert isinstance(model, ClassifierModel)
    return model.eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("zoo", ["timm", "torchvision"])
def test_forward_takes_batches_tensors_and_tv_images(zoo: str, images: torch.Tensor) -> None:
    model = build(type=zoo, name=SMALL[zoo], num_classes=3)
    assert model.num_classes == 3
    with torch.no_grad():
        from_batch = model({"image": images, "label": torch.tensor([0, 1])})["logits"]
        from_tensor = model(images)["logits"]
        from_tv = model({"image": tv_tensors.Image(images)})["logits"]
        from_export = model.export_module()(images)
    assert from_batch.shape == (2, 3)
    assert type(from_tv) is torch.Tensor
    torch.testing.assert_close(from_tensor, from_batch)
    torch.testing.assert_close(from_tv, from_batch)
    torch.testing.assert_close(from_export, from_batch)


def test_timm_options_reach_the_network() -> None:
    model = build(type="timm", name="resnet18", num_classes=5, in_chans=1, drop_rate=0.2, kwargs={})
    net = model.export_module()
    assert net.conv1.in_channels == 1  # type: ignore[union-attr]
    assert net.drop_rate == 0.2
    assert model(torch.randn(1, 1, 32, 32))["logits"].shape == (1, 5)


def test_timm_without_num_classes_keeps_the_zoo_default() -> None:
    assert build(type="timm", name="test_resnet").num_classes == 1000


@pytest.mark.parametrize("zoo", ["timm", "torchvision"])
def test_pretrained_round_trip_gives_equal_outputs(
    zoo: str, tmp_path: Path, images: torch.Tensor
) -> None:
    source = build(type=zoo, name=SMALL[zoo], num_classes=4)
    path = tmp_path / "weights.pt"
    torch.save(source.export_module().state_dict(), path)
    loaded = build(type=zoo, name=SMALL[zoo], num_classes=4, pretrained_path=str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["logits"], source(images)["logits"])


@pytest.mark.parametrize("zoo", ["timm", "torchvision"])
def test_visionforge_checkpoint_as_pretrained_path(
    zoo: str, tmp_path: Path, images: torch.Tensor
) -> None:
    source = build(type=zoo, name=SMALL[zoo], num_classes=4)
    ema = build(type=zoo, name=SMALL[zoo], num_classes=4)
    path = tmp_path / "last.ckpt"
    ckpt = {"format": "visionforge.checkpoint/1", "model": source.state_dict(), "ema": None}
    torch.save(ckpt, path)
    loaded = build(type=zoo, name=SMALL[zoo], num_classes=4, pretrained_path=str(path))
    torch.save({**ckpt, "ema": ema.state_dict()}, path)
    loaded_ema = build(type=zoo, name=SMALL[zoo], num_classes=4, pretrained_path=str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["logits"], source(images)["logits"])
        torch.testing.assert_close(loaded_ema(images)["logits"], ema(images)["logits"])


@pytest.mark.parametrize(("zoo", "head"), [("timm", "fc"), ("torchvision", "fc")])
def test_other_num_classes_reinitializes_only_the_head(zoo: str, head: str, tmp_path: Path) -> None:
    source = build(type=zoo, name=SMALL[zoo], num_classes=4)
    path = tmp_path / "weights.pt"
    torch.save(source.export_module().state_dict(), path)
    with pytest.warns(UserWarning, match=r"re-initialized"):
        loaded = build(type=zoo, name=SMALL[zoo], num_classes=7, pretrained_path=str(path))
    assert loaded.num_classes == 7
    new_state = loaded.export_module().state_dict()
    for key, value in source.export_module().state_dict().items():
        if key.startswith("fc."):
            assert new_state[key].shape[0] == 7
        else:
            torch.testing.assert_close(new_state[key], value, msg=key)


def test_pretrained_path_from_fsspec_url(images: torch.Tensor) -> None:
    source = build(type="timm", name="test_resnet", num_classes=2)
    url = "memory://weights/test_resnet.pt"
    with fsspec.open(url, "wb") as f:
        torch.save(source.export_module().state_dict(), f)
    loaded = build(type="timm", name="test_resnet", num_classes=2, pretrained_path=url)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["logits"], source(images)["logits"])


def test_timm_adapts_input_channels_of_pretrained_weights(tmp_path: Path) -> None:
    source = build(type="timm", name="test_resnet", num_classes=2)
    path = tmp_path / "weights.pt"
    torch.save(source.export_module().state_dict(), path)
    gray = build(
        type="timm", name="test_resnet", num_classes=2, in_chans=1, pretrained_path=str(path)
    )
    conv = gray.export_module().state_dict()["conv1.0.weight"]
    expected = source.export_module().state_dict()["conv1.0.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(conv, expected)


@pytest.mark.parametrize("zoo", ["timm", "torchvision"])
def test_unknown_name_suggests_a_close_one(zoo: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"model.name: unknown {zoo} model 'resnt50'; "
        r"did you mean 'resnet50'\?",
    ):
        build(type=zoo, name="resnt50")


def test_missing_weights_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(StorageError, match=str(missing)):
        build(type="timm", name="test_resnet", pretrained_path=str(missing))


def test_unreadable_weights_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=rf"{path}: cannot read weights"):
        build(type="torchvision", name=SMALL["torchvision"], pretrained_path=str(path))


@pytest.mark.parametrize("zoo", ["timm", "torchvision"])
def test_weights_of_another_architecture_are_rejected(zoo: str, tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(build(type=zoo, name=OTHER[zoo], num_classes=2).export_module().state_dict(), path)
    with pytest.raises(CheckpointError, match=rf"{path}: does not fit"):
        build(type=zoo, name=SMALL[zoo], num_classes=2, pretrained_path=str(path))


def test_reserved_kwargs_and_torchvision_channels_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"model.kwargs.num_classes"):
        build(type="timm", name="test_resnet", kwargs={"num_classes": 3})
    with pytest.raises(ConfigError, match=r"model.kwargs.weights: weights are never downloaded"):
        build(type="torchvision", name=SMALL["torchvision"], kwargs={"weights": "DEFAULT"})
    with pytest.raises(ConfigError, match=r"model.kwargs: test_resnet: .*'bogus'"):
        build(type="timm", name="test_resnet", kwargs={"bogus": 1})
    with pytest.raises(ConfigError, match=r"model.in_chans"):
        build(type="torchvision", name=SMALL["torchvision"], in_chans=1)


@pytest.mark.parametrize("layout", ["state_dict_key", "ddp_prefix", "safetensors"])
def test_other_weight_file_layouts(layout: str, tmp_path: Path, images: torch.Tensor) -> None:
    source = build(type="timm", name="test_resnet", num_classes=3)
    state = source.export_module().state_dict()
    path = tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pth")
    if layout == "state_dict_key":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif layout == "ddp_prefix":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = build(type="timm", name="test_resnet", num_classes=3, pretrained_path=str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["logits"], source(images)["logits"])


def test_auxiliary_heads_are_returned_beside_the_logits() -> None:
    model = build(
        type="torchvision", name="googlenet", num_classes=3, kwargs={"init_weights": False}
    ).train()
    outputs = model(torch.randn(2, 3, 64, 64))
    assert set(outputs) == {"logits", "aux_logits1", "aux_logits2"}
    assert all(v.shape == (2, 3) for v in outputs.values())
    assert set(model.eval()(torch.randn(1, 3, 64, 64))) == {"logits"}

"""Classification models from timm and torchvision, wrapped to take batches."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import timm
import torch
import torchvision
from torch import nn

from visionforge import storage
from visionforge.components.configs import TimmModelConfig, TorchvisionModelConfig
from visionforge.engine.checkpoint import CHECKPOINT_FORMAT
from visionforge.errors import CheckpointError, ConfigError, StorageError

TORCHVISION_DEFAULT_CLASSES = 1000
_FIELD_KWARGS = ("num_classes", "in_chans", "drop_rate", "drop_path_rate")
_DOWNLOAD_KWARGS = ("pretrained", "weights")


class ClassifierModel(nn.Module):
    """A classification network called with a batch: ``model(batch) -> {"logits": ...}``.

    ``batch`` is a Mapping with ``"image"`` (``[B, C, H, W]`` float) or a bare tensor.
    Networks with auxiliary heads in training mode (Inception, GoogLeNet) also give their
    auxiliary logits under the names torchvision uses (``"aux_logits"``, ...).
    """

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes

    def forward(self, batch: Mapping[str, Any] | torch.Tensor) -> dict[str, torch.Tensor]:
        images = batch if isinstance(batch, torch.Tensor) else batch["image"]
        if type(images) is not torch.Tensor:  # tv_tensors.Image: run the net on plain tensors
            images = images.as_subclass(torch.Tensor)
        out = self.net(images)
        if isinstance(out, torch.Tensor):
            return {"logits": out}
        # a namedtuple with "logits" and auxiliary heads (torchvision Inception, GoogLeNet)
        return {k: v for k, v in out._asdict().items() if v is not None}

    def export_module(self) -> nn.Module:
        """The plain tensor-in, tensor-out network (for ONNX export and prediction)."""
        return self.net


def _unknown_name(zoo: str, name: str, known: Iterable[str], listing: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"see {listing} for the names"
    return ConfigError(f"model.name: unknown {zoo} model {name!r}; {hint}")


def _check_kwargs(kwargs: Mapping[str, Any]) -> None:
    for key in kwargs:
        if key in _FIELD_KWARGS:
            raise ConfigError(
                f"model.kwargs.{key}: set it as a field of the model block, not in kwargs"
            )
        if key in _DOWNLOAD_KWARGS:
            raise ConfigError(
                f"model.kwargs.{key}: weights are never downloaded; set model.pretrained_path "
                "to a local file or URL"
            )


def _create(factory: Callable[..., nn.Module], name: str, **kwargs: Any) -> nn.Module:
    """``factory(name, **kwargs)``; an argument the network does not take is a ConfigError."""
    try:
        return factory(name, **kwargs)
    except TypeError as err:
        raise ConfigError(f"model.kwargs: {name}: {err}") from None


def load_weights(path: str) -> dict[str, torch.Tensor]:
    """Read a state_dict from a local path or URL.

    Accepts a plain state_dict, a visionforge checkpoint (its EMA weights when it has them,
    else its ``model`` weights, as ``load_model`` does; wrapper prefix removed), a
    ``{"state_dict": ...}`` / ``{"model": ...}`` training checkpoint or a ``.safetensors``
    file. A DDP ``module.`` prefix is removed.
    """
    try:
        with storage.local_copy(path) as local:
            if local.suffix == ".safetensors":
                from safetensors.torch import load_file

                obj: Any = load_file(str(local), device="cpu")
            else:
                obj = torch.load(local, map_location="cpu", weights_only=True)
    except StorageError:
        raise
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: cannot read weights ({first_line}); expected a state_dict, "
            "a .safetensors file or a visionforge checkpoint"
        ) from None
    prefix = ""
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        obj, prefix = obj["ema"] if obj.get("ema") is not None else obj["model"], "net."
    elif isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    state = timm.models.clean_state_dict(dict(obj))  # drops a DDP "module." prefix
    if prefix and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _names(value: str | Iterable[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _check_fits(
    net: nn.Module, state: Mapping[str, torch.Tensor], path: str, head: tuple[str, ...] = ()
) -> None:
    """Raise CheckpointError unless ``state`` has exactly the network's keys; keys under the
    ``head`` prefixes may be missing (a headless backbone checkpoint)."""
    own = set(net.state_dict())
    unexpected = sorted(set(state) - own)
    missing = sorted(k for k in own - set(state) if not k.startswith(head))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not fit this model: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}; "
            "pass weights saved from the same architecture"
        )


def _load_timm_pretrained(
    net: nn.Module, state: dict[str, torch.Tensor], path: str, in_chans: int
) -> None:
    """Load ``state`` with timm's pretrained loader: a head of another size is dropped and
    re-initialized, input-conv weights are adapted to ``in_chans`` as timm does."""
    pretrained_cfg: dict[str, Any] = dict(getattr(net, "pretrained_cfg", None) or {})
    classifiers = _names(pretrained_cfg.get("classifier"))
    _check_fits(net, state, path, head=tuple(f"{c}." for c in classifiers))
    pretrained_cfg.update(state_dict=state, custom_load=False)
    file_classes = None
    for classifier in classifiers:
        weight = state.get(f"{classifier}.weight")
        if weight is not None:
            file_classes = pretrained_cfg["num_classes"] = int(weight.shape[0])
            break
    for conv in _names(pretrained_cfg.get("first_conv")):
        weight = state.get(f"{conv}.weight")
        if weight is not None and weight.ndim == 4:
            size = tuple(pretrained_cfg.get("input_size") or (3, 224, 224))
            pretrained_cfg["input_size"] = (int(weight.shape[1]), *size[1:])
            break
    num_classes = int(net.num_classes)  # type: ignore[arg-type]
    try:
        timm.models.load_pretrained(
            net,
            pretrained_cfg=pretrained_cfg,
            num_classes=num_classes,
            in_chans=in_chans,
        )
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: does not fit this model: {str(err).strip().splitlines()[0]}; "
            "pass weights saved from the same architecture"
        ) from None
    if file_classes is not None and file_classes != num_classes:
        warnings.warn(
            f"model.pretrained_path: {path} has a {file_classes}-class head; "
            f"re-initialized it for {num_classes} classes",
            stacklevel=3,
        )


def build_timm(cfg: TimmModelConfig) -> ClassifierModel:
    """Any timm classifier via ``timm.create_model``; ``pretrained_path`` goes through timm's
    pretrained loader, so a different ``num_classes`` re-initializes the head."""
    if not timm.is_model(cfg.name):
        raise _unknown_name("timm", cfg.name, timm.list_models(), "timm.list_models()")
    _check_kwargs(cfg.kwargs)
    kwargs: dict[str, Any] = dict(cfg.kwargs)
    if cfg.num_classes is not None:
        kwargs["num_classes"] = cfg.num_classes
    net = _create(
        timm.create_model,
        cfg.name,
        in_chans=cfg.in_chans,
        drop_rate=cfg.drop_rate,
        drop_path_rate=cfg.drop_path_rate,
        **kwargs,
    )
    if cfg.pretrained_path is not None:
        state = load_weights(cfg.pretrained_path)
        _load_timm_pretrained(net, state, cfg.pretrained_path, cfg.in_chans)
    return ClassifierModel(net, int(net.num_classes))  # type: ignore[arg-type]


def _load_dropping_mismatched(net: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Load ``state`` strictly except for head keys (the last layer) whose shape differs (another
    class count), which keep their fresh initialization; warn naming them."""
    _check_fits(net, state, path)
    own = net.state_dict()
    head = next(reversed(own)).rsplit(".", 1)[0] + "."
    mismatched = [k for k, v in state.items() if own[k].shape != v.shape]
    if any(not k.startswith(head) for k in mismatched):
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched]
        raise CheckpointError(
            f"{path}: does not fit this model: shapes differ for {', '.join(shapes[:3])}; "
            "pass weights saved from the same architecture"
        )
    net.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    if mismatched:
        warnings.warn(
            f"model.pretrained_path: {path}: re-initialized {', '.join(mismatched)} "
            "(shape differs from the model, e.g. another num_classes)",
            stacklevel=3,
        )


def build_torchvision(cfg: TorchvisionModelConfig) -> ClassifierModel:
    """Any torchvision classification model via ``torchvision.models.get_model``."""
    known = torchvision.models.list_models(module=torchvision.models)
    if cfg.name not in known:
        raise _unknown_name(
            "torchvision", cfg.name, known, "torchvision.models.list_models(torchvision.models)"
        )
    if cfg.in_chans != 3:
        raise ConfigError(
            f"model.in_chans: torchvision models take 3 channels, got {cfg.in_chans}; "
            "use type: timm for other channel counts"
        )
    _check_kwargs(cfg.kwargs)
    num_classes = cfg.num_classes or TORCHVISION_DEFAULT_CLASSES
    net = _create(
        torchvision.models.get_model, cfg.name, weights=None, num_classes=num_classes, **cfg.kwargs
    )
    if cfg.pretrained_path is not None:
        _load_dropping_mismatched(net, load_weights(cfg.pretrained_path), cfg.pretrained_path)
    return ClassifierModel(net, num_classes)

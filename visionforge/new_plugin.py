"""``visionforge new-plugin NAME``: write a working plugin package to start from.

The package registers one model and one dataset (a tiny CNN and generated stripe images),
ships a recipe that trains them and a test, and installs with ``pip install -e``.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from visionforge.errors import ConfigError

NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")

FILES: dict[str, str] = {
    "pyproject.toml": """\
[build-system]
requires = ["setuptools>=77", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "A visionforge plugin: $name"
requires-python = ">=3.10"
# "<1": the public index holds an unrelated project named visionforge (1.0.0); install
# visionforge first (from its checkout or its wheels) so pip never picks that one.
dependencies = ["visionforge>=0.1.0,<1"]

# The whole plugin contract: an entry point in the "visionforge" group naming the module
# that holds the @hookimpl functions.
[project.entry-points.visionforge]
$name = "$package.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
$package = ["py.typed"]
""",
    "README.md": """\
# $dist

A visionforge plugin: the model `${name}_cnn` and the dataset `${name}_stripes`.

```bash
pip install -e .
visionforge plugins                       # lists "$name" with its components
visionforge train recipe.yaml
pytest tests
```

Replace the components in `src/$package/components.py` (torch code, imported only when a
recipe builds them) and their configs in `configs.py` (pydantic, torch-free).
""",
    "recipe.yaml": """\
# Trains this plugin's model on its dataset: visionforge train recipe.yaml
name: $name
model: {type: ${name}_cnn, num_classes: 2, width: 8}
data:
  train: {type: ${name}_stripes, num_samples: 128}
  val: {type: ${name}_stripes, num_samples: 32, seed: 1}
loss: {type: cross_entropy}
optimizer: {type: adamw, lr: 0.01, weight_decay: 0.0}
trainer: {epochs: 3, batch_size: 16, seed: 0}
evaluator: {type: topk, k: [1]}
""",
    "src/$package/__init__.py": '''\
"""A visionforge plugin: $name."""

__version__ = "0.1.0"
''',
    "src/$package/py.typed": "",
    "src/$package/plugin.py": '''\
"""Entry module: registers the components. Builders are lazy "module:function" strings, so
`visionforge plugins` and recipe validation never import torch."""

from __future__ import annotations

from visionforge import hookimpl
from visionforge.registry import Registries

from $package.configs import StripesConfig, TinyCNNConfig


@hookimpl
def visionforge_register(registries: Registries) -> None:
    registries.models.register(
        "${name}_cnn",
        config=TinyCNNConfig,
        builder="$package.components:build_tiny_cnn",
    )
    registries.datasets.register(
        "${name}_stripes",
        config=StripesConfig,
        builder="$package.components:build_stripes",
    )
''',
    "src/$package/configs.py": '''\
"""Config classes: pydantic only, so registering and validating stay torch-free."""

from __future__ import annotations

from pydantic import Field

from visionforge import ComponentConfig


class TinyCNNConfig(ComponentConfig):
    """A two-layer CNN classifier."""

    num_classes: int = Field(2, ge=2)
    width: int = Field(8, ge=1)


class StripesConfig(ComponentConfig):
    """Images with horizontal (class 0) or vertical (class 1) stripes."""

    num_samples: int = Field(64, ge=1)
    image_size: int = Field(16, ge=4)
    seed: int = 0
''',
    "src/$package/components.py": '''\
"""The components themselves (torch), imported only when a recipe builds them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchvision import tv_tensors

from $package.configs import StripesConfig, TinyCNNConfig


class TinyCNN(nn.Module):
    """Called with a batch, returns ``{"logits": ...}`` like every visionforge classifier."""

    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(width * 16, num_classes),
        )

    def forward(self, batch: Mapping[str, Any] | torch.Tensor) -> dict[str, torch.Tensor]:
        images = batch["image"] if isinstance(batch, Mapping) else batch
        return {"logits": self.net(images)}

    def export_module(self) -> nn.Module:
        """The tensor-in, tensor-out network (ONNX export)."""
        return self.net


def build_tiny_cnn(cfg: TinyCNNConfig) -> TinyCNN:
    return TinyCNN(cfg.num_classes, cfg.width)


class Stripes(torch.utils.data.Dataset[dict[str, Any]]):
    """Deterministic noisy stripe images; the label is the stripe direction."""

    num_classes = 2
    class_names = ["horizontal", "vertical"]

    def __init__(self, cfg: StripesConfig) -> None:
        self.cfg = cfg

    def __len__(self) -> int:
        return self.cfg.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        size = self.cfg.image_size
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + index)
        label = index % 2
        phase = int(torch.randint(0, 4, (), generator=gen))
        stripes = ((torch.arange(size) + phase) // 2 % 2).float()
        image = stripes[:, None].expand(size, size) if label == 0 else stripes.expand(size, size)
        image = image + 0.3 * torch.randn(size, size, generator=gen)
        return {"image": tv_tensors.Image(image[None]), "label": label}


def build_stripes(cfg: StripesConfig) -> Stripes:
    return Stripes(cfg)
''',
    "tests/test_plugin.py": '''\
"""The plugin registers its components and its recipe validates and builds them."""

from __future__ import annotations

from pathlib import Path

from visionforge import REGISTRIES
from visionforge.config import load_recipe

RECIPE = Path(__file__).parents[1] / "recipe.yaml"


def test_components_are_registered() -> None:
    assert "${name}_cnn" in REGISTRIES.models.names()
    assert "${name}_stripes" in REGISTRIES.datasets.names()


def test_recipe_builds_a_model_that_takes_a_batch() -> None:
    recipe = load_recipe(RECIPE)
    model = REGISTRIES.models.build(recipe.model.as_dict(), "model")
    dataset = REGISTRIES.datasets.build(recipe.data.train.as_dict(), "data.train")
    item = dataset[0]
    logits = model({"image": item["image"][None]})["logits"]
    assert logits.shape == (1, 2)
''',
}
"""Relative path -> content; both are string.Template texts (``$package``, ``$name``, ``$dist``)."""


def new_plugin(name: str, parent: str | Path = ".") -> Path:
    """Write the package ``visionforge-NAME`` into ``parent``; returns its folder."""
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"new-plugin {name!r}: use lowercase letters, digits and underscores, starting "
            "with a letter (it becomes the entry-point and package name)"
        )
    values = {"name": name, "package": f"visionforge_{name}", "dist": f"visionforge-{name}"}
    root = Path(parent) / values["dist"]
    if root.exists():
        raise ConfigError(f"new-plugin {name!r}: {root} already exists; choose another name")
    for relative, content in FILES.items():
        path = root / Template(relative).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(content).substitute(values))
    return root

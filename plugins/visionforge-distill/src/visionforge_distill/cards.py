"""Generated card-like images: one folder per class, one (or more) image(s) per class.

A card is a portrait rectangle with a border, a title bar and an "artwork" panel of shapes
whose colours, positions and sizes come from a generator seeded by the class; extra images
of a class ("variants") change the background tint and add a little noise, as printings of
one card do. Used by the tests, the ``card_distill`` example and the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.io import write_png
from tqdm.auto import tqdm

HEIGHT_RATIO = 1.4  # cards are portrait, 63 x 88 mm


def card(label: int, variant: int = 0, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A ``[3, H, W]`` uint8 card image of class ``label``."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + label)
    height = round(width * HEIGHT_RATIO)
    frame = torch.rand(3, generator=gen)
    image = frame[:, None, None].expand(3, height, width).clone()
    border = max(2, width // 16)
    inner = torch.rand(3, generator=gen) * 0.6 + 0.2
    image[:, border:-border, border:-border] = inner[:, None, None]
    title = torch.rand(3, generator=gen)
    image[:, border : border + height // 10, border:-border] = title[:, None, None]
    top, bottom = border + height // 8, height // 2 + height // 8
    ys = torch.linspace(0, 1, bottom - top)[:, None]
    xs = torch.linspace(0, 1, width - 2 * border)[None, :]
    panel = image[:, top:bottom, border:-border]
    for _ in range(3):
        colour = torch.rand(3, generator=gen)
        cy, cx, radius = torch.rand(3, generator=gen).tolist()
        if torch.rand((), generator=gen) < 0.5:
            mask = (ys - cy) ** 2 + (xs - cx) ** 2 < (0.1 + 0.25 * radius) ** 2
        else:
            mask = ((ys - cy).abs() < 0.08 + 0.2 * radius) & ((xs - cx).abs() < 0.3)
        panel[:, mask] = colour[:, None]
    stripes = int(torch.randint(2, 6, (), generator=gen))
    text_top = height // 2 + height // 6
    for row in range(stripes):
        y = text_top + row * max(2, height // 20)
        length = int(width * (0.3 + 0.5 * float(torch.rand((), generator=gen))))
        image[:, y : y + max(1, height // 60), border * 2 : border * 2 + length] = 0.1
    if variant:
        vgen = torch.Generator().manual_seed(seed * 7919 + label * 104_729 + variant)
        image = image * (0.9 + 0.2 * torch.rand(3, 1, 1, generator=vgen))
        image = image + 0.03 * torch.randn(image.shape, generator=vgen)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def make_cards(
    root: str | Path, num_classes: int, *, per_class: int = 1, width: int = 64, seed: int = 0
) -> Path:
    """Write ``root/card_XXXXX/variant_Y.png`` for every class; return ``root``."""
    folder = Path(root)
    digits = max(5, len(str(num_classes - 1)))
    for label in tqdm(range(num_classes), desc="cards", unit="class", disable=None):
        class_dir = folder / f"card_{label:0{digits}d}"
        class_dir.mkdir(parents=True, exist_ok=True)
        for variant in range(per_class):
            write_png(card(label, variant, width, seed), str(class_dir / f"variant_{variant}.png"))
    return folder

"""Generate a floor-plan-like YOLO dataset: rooms as rectangles, walls as thin boxes.

    python examples/dino_rooms/make_floorplans.py OUT_DIR [--images 60] [--size 256] [--seed 0]

Stands in for CubiCasa5K-style data: each plan is a rectangle split recursively into rooms
(class 0 ``room``, the room's interior) drawn with black walls (class 1 ``wall``, one thin
box per wall segment). Every tenth image is an empty sheet with no label file (a background
image, as Ultralytics datasets have). Written in the Ultralytics layout: ``data.yaml``,
``images/train/*.jpg``, ``labels/train/*.txt``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


@dataclass
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def yolo(self, cls: int, size: int) -> str:
        cx, cy = (self.x0 + self.x1) / 2 / size, (self.y0 + self.y1) / 2 / size
        w, h = (self.x1 - self.x0) / size, (self.y1 - self.y0) / size
        return f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def split_rooms(rng: np.random.Generator, box: Box, depth: int, min_side: float) -> list[Box]:
    """Split ``box`` along its longer side at a random point until rooms are small."""
    w, h = box.x1 - box.x0, box.y1 - box.y0
    if depth == 0 or max(w, h) < 2 * min_side or rng.uniform() < 0.15 * (4 - depth):
        return [box]
    if w >= h:
        cut = rng.uniform(box.x0 + min_side, box.x1 - min_side)
        parts = [Box(box.x0, box.y0, cut, box.y1), Box(cut, box.y0, box.x1, box.y1)]
    else:
        cut = rng.uniform(box.y0 + min_side, box.y1 - min_side)
        parts = [Box(box.x0, box.y0, box.x1, cut), Box(box.x0, cut, box.x1, box.y1)]
    return [room for part in parts for room in split_rooms(rng, part, depth - 1, min_side)]


def walls_of(rooms: list[Box], thickness: float) -> list[Box]:
    """One thin box per distinct room edge (shared edges once)."""
    edges: set[tuple[float, float, float, float]] = set()
    for r in rooms:
        for edge in (
            (r.x0, r.y0, r.x1, r.y0),
            (r.x0, r.y1, r.x1, r.y1),
            (r.x0, r.y0, r.x0, r.y1),
            (r.x1, r.y0, r.x1, r.y1),
        ):
            edges.add(tuple(round(v, 3) for v in edge))  # type: ignore[arg-type]
    half = thickness / 2
    return [Box(x0 - half, y0 - half, x1 + half, y1 + half) for x0, y0, x1, y1 in sorted(edges)]


def plan(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[str]]:
    margin = size * rng.uniform(0.06, 0.15)
    outline = Box(margin, margin, size - margin * rng.uniform(0.8, 1.2), size - margin)
    rooms = split_rooms(rng, outline, depth=3, min_side=size * 0.14)
    thickness = max(2.0, size * 0.015)
    walls = walls_of(rooms, thickness)
    image = Image.new("RGB", (size, size), (250, 248, 240))
    draw = ImageDraw.Draw(image)
    for room in rooms:
        tint = tuple(int(v) for v in rng.integers(215, 250, 3))
        draw.rectangle([room.x0, room.y0, room.x1, room.y1], fill=tint)
    for wall in walls:
        draw.rectangle([wall.x0, wall.y0, wall.x1, wall.y1], fill=(30, 30, 30))
    half = thickness / 2
    interiors = [Box(r.x0 + half, r.y0 + half, r.x1 - half, r.y1 - half) for r in rooms]
    rows = [b.yolo(0, size) for b in interiors] + [w.yolo(1, size) for w in walls]
    return image, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    images = args.out / "images" / "train"
    labels = args.out / "labels" / "train"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for index in range(args.images):
        stem = f"plan_{index:05d}"
        if index % 10 == 9:  # background: an empty sheet, no label file
            Image.new("RGB", (args.size, args.size), (250, 248, 240)).save(images / f"{stem}.jpg")
            continue
        image, rows = plan(rng, args.size)
        image.save(images / f"{stem}.jpg", quality=92)
        (labels / f"{stem}.txt").write_text("\n".join(rows) + "\n")
    (args.out / "data.yaml").write_text(
        f"path: {args.out.resolve()}\ntrain: images/train\nnames:\n  0: room\n  1: wall\n"
    )
    print(f"wrote {args.images} floor plans to {args.out}")


if __name__ == "__main__":
    main()

"""Make the example's inputs: a generated YOLO dataset, and later noisy detections to evaluate.

    python examples/coco_convert_eval/make_data.py yolo OUT_DIR
    python examples/coco_convert_eval/make_data.py detections GT.json DT.json

``detections`` stands in for a trained detector: it jitters the ground-truth boxes, drops
some, mislabels a few and adds background boxes, all with random scores (seeded).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from visionforge_coco.synthetic import ShapesSpec, write_synthetic


def fake_detections(gt: dict, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    sizes = {img["id"]: (img["width"], img["height"]) for img in gt["images"]}
    dets = []
    for ann in gt["annotations"]:
        if rng.uniform() < 0.15:
            continue  # missed object
        x, y, w, h = ann["bbox"]
        dx, dy = rng.normal(0, 0.08, 2) * (w, h)
        cat = ann["category_id"] if rng.uniform() < 0.9 else int(rng.choice(cats))
        dets.append(
            {
                "image_id": ann["image_id"],
                "category_id": cat,
                "bbox": [x + dx, y + dy, w, h],
                "score": float(rng.uniform(0.3, 1.0)),
            }
        )
    for image_id, (width, height) in sizes.items():
        for _ in range(int(rng.integers(0, 3))):
            w, h = rng.uniform(8, width / 3), rng.uniform(8, height / 3)
            dets.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.choice(cats)),
                    "bbox": [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h],
                    "score": float(rng.uniform(0.0, 0.6)),
                }
            )
    return dets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("yolo")
    p.add_argument("out")
    p.add_argument("--images", type=int, default=200)
    p = sub.add_parser("detections")
    p.add_argument("gt")
    p.add_argument("dt")
    args = parser.parse_args()
    if args.what == "yolo":
        spec = ShapesSpec(num_images=args.images, image_size=160, seed=0)
        write_synthetic(args.out, spec, "yolo", image_format="jpg")
        print(f"wrote a YOLO dataset of {args.images} images to {args.out}")
    else:
        gt = json.loads(Path(args.gt).read_text())
        dets = fake_detections(gt)
        Path(args.dt).write_text(json.dumps(dets))
        print(f"wrote {len(dets)} detections to {args.dt}")


if __name__ == "__main__":
    main()

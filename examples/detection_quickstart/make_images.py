"""Write new images of the quickstart's kind to predict on (a COCO folder: images/ +
annotations.json), drawn with another seed than the recipe's training and validation sets.

    python examples/detection_quickstart/make_images.py OUT_DIR [--images 8] [--seed 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visionforge.config import load_recipe
from visionforge_coco.configs import SyntheticShapesConfig
from visionforge_coco.synthetic import ShapesSpec, write_synthetic

RECIPE = Path(__file__).with_name("recipe.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (COCO layout)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2, help="0 and 1 are train and val")
    args = parser.parse_args()
    val = load_recipe(str(RECIPE)).data.val
    assert val is not None, f"{RECIPE}: data.val is the spec the images follow"
    fields = SyntheticShapesConfig.model_validate(val.model_dump(exclude={"type"}))
    spec = ShapesSpec(
        num_images=args.images,
        image_size=fields.shape_size,
        num_classes=fields.num_classes,
        min_objects=fields.min_objects,
        max_objects=fields.max_objects,
        min_size=fields.min_size,
        max_size=fields.max_size,
        max_overlap=fields.max_overlap,
        seed=args.seed,
    )
    write_synthetic(args.out, spec, "coco", progress=False)
    print(f"wrote {args.images} images to {args.out}/images")


if __name__ == "__main__":
    main()

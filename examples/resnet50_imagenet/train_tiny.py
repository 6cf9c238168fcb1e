"""Run the ResNet50 ImageNet recipe end to end on a generated tiny ImageNet, from Python.

Only sizes change (classes, image size, batch, epochs, depth 18 by default for speed);
the optimizer, schedule shape, mixup/cutmix, label smoothing and drop path are the recipe's.
Takes a few minutes on a laptop CPU:

    python examples/resnet50_imagenet/train_tiny.py --out runs/tiny_resnet
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visionforge.config import load_recipe
from visionforge.engine import Trainer
from visionforge_resnet.curve import compare_with_reference
from visionforge_resnet.tinydata import make_tiny_imagenet

RECIPE = Path(__file__).with_name("recipe.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/tiny_resnet"))
    parser.add_argument("--depth", type=int, default=18, choices=[18, 34, 50, 101])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--precision", default="fp32", help="bf16 on a GPU")
    args = parser.parse_args()

    data = args.out / "data"
    if not (data / "train").exists():
        make_tiny_imagenet(data, num_classes=args.classes, train_per_class=32, progress=True)
    recipe = load_recipe(
        RECIPE,
        [
            f"model.depth={args.depth}",
            f"model.num_classes={args.classes}",
            f"data.mixup.num_classes={args.classes}",
            f"data.train.root={data / 'train'}",
            f"data.val.root={data / 'val'}",
            "data.train.image_size=32",
            "data.val.image_size=32",
            "data.loader.num_workers=2",
            "trainer.batch_size=32",
            f"trainer.epochs={args.epochs}",
            f"trainer.precision={args.precision}",
            f"trainer.output={args.out / 'run'}",
            "trainer.loggers=[console, csv]",
            "schedule.warmup_epochs=1",
        ],
    )
    result = Trainer(recipe).fit()
    print(f"val top-1 {result.metrics['val/top1']:.2%}, best checkpoint {result.best_checkpoint}")
    print(compare_with_reference(result.output).table())


if __name__ == "__main__":
    main()

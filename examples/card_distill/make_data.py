"""Generate the card_distill example's data: card images and a stand-in teacher.

    python examples/card_distill/make_data.py            # 64 classes, one card each

writes ``examples/card_distill/data/cards/card_NNNNN/variant_0.png`` and, unless
``data/teacher`` already holds a model, a randomly initialized small DINOv2 saved with
``save_pretrained`` (no network here). For real distillation put a pretrained DINOv2 there
instead (on a machine with network: ``AutoModel.from_pretrained("facebook/dinov2-base")
.save_pretrained("examples/card_distill/data/teacher")``) and set ``model.embedding_dim``
to its hidden size (768 for ViT-B/14).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import Dinov2Config, Dinov2Model

from visionforge_distill.cards import make_cards

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args()
    make_cards(args.out / "cards", args.classes, width=80)
    teacher = args.out / "teacher"
    if not (teacher / "config.json").exists():
        torch.manual_seed(0)
        config = Dinov2Config(
            hidden_size=192,
            num_hidden_layers=6,
            num_attention_heads=3,
            patch_size=14,
            image_size=112,
        )
        Dinov2Model(config).save_pretrained(teacher)
        print(f"{teacher}: stand-in DINOv2 (random weights, hidden size 192)")
    print(f"{args.out / 'cards'}: {args.classes} classes")


if __name__ == "__main__":
    main()

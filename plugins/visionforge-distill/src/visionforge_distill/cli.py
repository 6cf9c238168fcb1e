"""``visionforge distill build-index|query``: the reference database a device searches."""

from __future__ import annotations

import argparse
import json

BACKEND_CHOICES = ("auto", "faiss", "usearch", "torch")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``distill`` command group."""
    group = subparsers.add_parser("distill", help="distillation: reference index and queries")
    commands = group.add_subparsers(dest="distill_command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build-index",
        help="embed a class-folder image set with a student and write the reference index",
    )
    build.add_argument("model", help="student checkpoint (.ckpt) or ONNX file (.onnx)")
    build.add_argument("images", help="class-folder root: one folder per class")
    build.add_argument("--out", required=True, help="new folder for the reference database")
    build.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    build.add_argument("--approximate", action="store_true", help="HNSW instead of exact search")
    build.add_argument("--image-size", type=int, default=None, help="default: the model's")
    build.add_argument("--batch-size", type=int, default=32)
    build.set_defaults(func=_run_build)

    query = commands.add_parser("query", help="nearest reference images of query images")
    query.add_argument("reference", help="folder written by build-index")
    query.add_argument("images", nargs="+", help="query image files")
    query.add_argument("-k", type=int, default=5, help="neighbours per image (default 5)")
    query.add_argument("--model", default=None, help="default: the model that built the index")
    query.add_argument("--json", action="store_true", help="print JSON lines")
    query.set_defaults(func=_run_query)

    cards = commands.add_parser(
        "make-cards", help="generate card-like images, one folder per class (examples, tests)"
    )
    cards.add_argument("out", help="new folder: OUT/card_NNNNN/variant_V.png")
    cards.add_argument("--classes", type=int, required=True)
    cards.add_argument("--per-class", type=int, default=1, help="images per class (default 1)")
    cards.add_argument("--width", type=int, default=64, help="pixels (height = 1.4 x width)")
    cards.add_argument("--seed", type=int, default=0)
    cards.set_defaults(func=_run_make_cards)


def _run_build(args: argparse.Namespace) -> int:
    from visionforge_distill.reference import build_reference

    manifest = build_reference(
        args.model,
        args.images,
        args.out,
        backend=args.backend,
        approximate=args.approximate,
        image_size=args.image_size,
        batch_size=args.batch_size,
    )
    print(
        f"{args.out}: {manifest['count']} embeddings of dim {manifest['dim']}, "
        f"{manifest['backend']} index ({'approximate' if args.approximate else 'exact'})"
    )
    return 0


def _run_query(args: argparse.Namespace) -> int:
    from visionforge_distill.reference import query_reference

    results = query_reference(args.reference, args.images, k=args.k, model=args.model)
    for path, matches in zip(args.images, results, strict=True):
        if args.json:
            rows = [{"class": m.class_name, "score": m.score, "file": m.file} for m in matches]
            print(json.dumps({"image": path, "matches": rows}))
            continue
        print(path)
        for rank, m in enumerate(matches, 1):
            print(f"  {rank}. {m.class_name}  {m.score:.4f}  {m.file}")
    return 0


def _run_make_cards(args: argparse.Namespace) -> int:
    from visionforge_distill.cards import make_cards

    make_cards(args.out, args.classes, per_class=args.per_class, width=args.width, seed=args.seed)
    print(f"{args.out}: {args.classes} classes x {args.per_class} image(s)")
    return 0

"""``visionforge resnet ...`` commands: prepare, make-tiny, recipe, presets, curve, loader-bench."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from visionforge.errors import ConfigError
from visionforge_resnet.presets import PRESETS, imagenet_recipe


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``resnet`` command group."""
    group = subparsers.add_parser(
        "resnet", help="ImageNet-style classification: prepare data, recipes, reference curve"
    )
    commands = group.add_subparsers(dest="resnet_command", required=True, metavar="COMMAND")
    _add_prepare(commands)
    _add_make_tiny(commands)
    _add_recipe(commands)
    _add_presets(commands)
    _add_curve(commands)
    _add_loader_bench(commands)


def _add_prepare(commands: argparse._SubParsersAction) -> None:
    from visionforge_resnet.prepare import MODES

    p = commands.add_parser(
        "prepare",
        help="arrange the flat ImageNet val images into val/<wnid>/ folders",
        description=(
            "Sort the flat validation images (ILSVRC2012_val_*.JPEG) into class folders from "
            "the ground truth: the CSV form (--loc-solution, optionally --synset-mapping) or "
            "the devkit form (--devkit, or --ground-truth with --synsets)."
        ),
    )
    p.add_argument("images", type=Path, help="folder of the flat validation images")
    p.add_argument("--out", type=Path, required=True, help="new folder for val/<wnid>/ images")
    p.add_argument("--loc-solution", type=Path, help="LOC_val_solution.csv")
    p.add_argument("--synset-mapping", type=Path, help="LOC_synset_mapping.txt (checks wnids)")
    p.add_argument("--devkit", type=Path, help="ILSVRC2012_devkit_t12 folder")
    p.add_argument("--ground-truth", type=Path, help="ILSVRC2012_validation_ground_truth.txt")
    p.add_argument(
        "--synsets",
        type=Path,
        help="devkit meta.mat, or a text list of wnids in ILSVRC2012_ID order",
    )
    p.add_argument(
        "--mode", choices=MODES, default="copy", help="how images get there (default: copy)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from visionforge_resnet.prepare import arrange_validation, load_ground_truth

    truth = load_ground_truth(
        loc_solution=args.loc_solution,
        synset_mapping=args.synset_mapping,
        devkit_dir=args.devkit,
        ground_truth=args.ground_truth,
        synsets=args.synsets,
    )
    result = arrange_validation(
        args.images, args.out, truth, mode=args.mode, progress=not args.quiet
    )
    counts = result.images_per_class.values()
    print(
        f"{result.out}: {result.num_images} images in {len(counts)} class folders "
        f"({min(counts)}-{max(counts)} per class, {args.mode})"
    )
    if result.classes_without_images:
        shown = ", ".join(result.classes_without_images[:5])
        print(
            f"warning: {len(result.classes_without_images)} known class(es) have no validation "
            f"image and got no folder: {shown}"
        )
    return 0


def _add_make_tiny(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "make-tiny",
        help="generate a tiny ImageNet-layout dataset (train/<wnid>, val/<wnid>)",
    )
    p.add_argument("root", type=Path, help="folder to create the dataset in")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train-per-class", type=int, default=20)
    p.add_argument("--val-per-class", type=int, default=5)
    p.add_argument("--image-size", type=int, default=48, help="shorter side, pixels")
    p.add_argument(
        "--flat-val",
        action="store_true",
        help="leave val flat with devkit ground truth (to try 'resnet prepare')",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_make_tiny)


def _run_make_tiny(args: argparse.Namespace) -> int:
    from visionforge_resnet.tinydata import make_tiny_imagenet

    try:
        tiny = make_tiny_imagenet(
            args.root,
            num_classes=args.classes,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            image_size=args.image_size,
            flat_val=args.flat_val,
            seed=args.seed,
            progress=True,
        )
    except (ValueError, FileExistsError) as err:
        raise ConfigError(f"resnet make-tiny: {err}") from None
    val = tiny.val_flat if args.flat_val else tiny.val
    print(f"{tiny.root}: train {tiny.train}, val {val}, {len(tiny.wnids)} classes")
    return 0


def _add_recipe(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "recipe",
        help="write the ImageNet recipe for a preset or any timm classifier",
    )
    p.add_argument(
        "--arch",
        default="resnet50",
        help=f"{', '.join(PRESETS)} or any timm classifier name (default: resnet50)",
    )
    p.add_argument("--train", default="data/imagenet/train", help="train/<wnid>/ folder")
    p.add_argument("--val", default="data/imagenet/val", help="val/<wnid>/ folder")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--batch-size", type=int, default=128, help="per process")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument(
        "--workers",
        type=int,
        help="DataLoader workers (default: the CPUs per process, at most 8)",
    )
    p.add_argument("--drop-path", type=float, help="override the preset's drop path rate")
    p.add_argument("--ema", action="store_true", help="keep an EMA of the weights")
    p.add_argument("--output", help="run folder or s3:// URL (default runs/<name>)")
    p.add_argument("-o", "--out", type=Path, help="write the YAML here (default: stdout)")
    p.set_defaults(func=_run_recipe)


def _run_recipe(args: argparse.Namespace) -> int:
    from visionforge.config import recipe_from_dict

    if args.arch not in PRESETS:
        import timm

        if not timm.is_model(args.arch):
            raise ConfigError(
                f"--arch {args.arch!r}: not a preset ({', '.join(PRESETS)}) nor a timm model; "
                "list timm names with timm.list_models()"
            )
    name = f"{args.arch}_imagenet"
    data = imagenet_recipe(
        args.arch,
        train_root=args.train,
        val_root=args.val,
        num_classes=args.num_classes,
        output=args.output or f"runs/{name}",
        name=name,
        drop_path_rate=args.drop_path,
        batch_size=args.batch_size,
        epochs=args.epochs,
        image_size=args.image_size,
        num_workers=args.workers,
        ema=args.ema,
    )
    recipe_from_dict(data, source=f"resnet recipe --arch {args.arch}")
    text = yaml.safe_dump(data, sort_keys=False)
    if args.out is None:
        print(text, end="")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


def _add_presets(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("presets", help="list the backbone presets")
    p.set_defaults(func=_run_presets)


def _run_presets(args: argparse.Namespace) -> int:
    for preset in PRESETS.values():
        print(f"{preset.name:<10} drop_path {preset.drop_path_rate:<5} {preset.note}")
    print("any other timm classifier: visionforge resnet recipe --arch NAME")
    return 0


def _add_curve(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "curve",
        help="compare a run's val top-1 with the reference ResNet50 run (table + PNG)",
    )
    p.add_argument("run", help="run folder (with metrics.csv) or a metrics.csv path")
    p.add_argument("--png", help="where to write the plot (default: RUN/reference_curve.png)")
    p.set_defaults(func=_run_curve)


def _run_curve(args: argparse.Namespace) -> int:
    from visionforge_resnet.curve import compare_with_reference

    report = compare_with_reference(args.run, png=args.png)
    print(report.table())
    print(f"plot: {report.png}")
    return 0


def _add_loader_bench(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "loader-bench",
        help="images/s of a recipe's training input pipeline, with and without the model",
        description=(
            "Measure the recipe's own training loader (dataset, decoder, workers, collate, "
            "device normalization), the training step alone and both together, so you see "
            "whether the accelerator will wait for data before a long run."
        ),
    )
    p.add_argument("recipe", help="recipe file (YAML/JSON)")
    p.add_argument("--batches", type=int, default=50, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    p.add_argument("--no-model", action="store_true", help="measure the data pipeline only")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set data.loader.num_workers=4",
    )
    p.set_defaults(func=_run_loader_bench)


def _run_loader_bench(args: argparse.Namespace) -> int:
    from visionforge.config import load_recipe
    from visionforge_resnet.loader_bench import loader_bench

    recipe = load_recipe(args.recipe, args.overrides)
    result = loader_bench(
        recipe, batches=args.batches, warmup=args.warmup, with_model=not args.no_model
    )
    print(result.table())
    return 0

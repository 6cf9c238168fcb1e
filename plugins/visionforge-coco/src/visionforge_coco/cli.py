"""``visionforge coco convert|split|verify|stats|eval``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from visionforge.errors import ConfigError
from visionforge_coco.problems import DataFormatError, write_problem_report


def add_coco_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``coco`` command group to the ``visionforge`` parser."""
    coco = subparsers.add_parser(
        "coco", help="COCO/YOLO datasets: convert, split, verify, stats, eval"
    )
    commands = coco.add_subparsers(dest="coco_command", required=True, metavar="COMMAND")

    p = commands.add_parser("convert", help="YOLO -> COCO or COCO -> YOLO")
    p.add_argument("src", help="YOLO root with data.yaml (--from yolo) or COCO images dir")
    p.add_argument("dst", help="output directory (written as a whole at the end)")
    p.add_argument("--from", dest="src_format", choices=["yolo", "coco"], required=True)
    p.add_argument("--to", dest="dst_format", choices=["yolo", "coco"], required=True)
    p.add_argument("--ann", help="COCO annotations JSON (--from coco)")
    p.add_argument(
        "--split",
        help="yolo->coco: convert only this split into DST; "
        "coco->yolo: the split to write (default train)",
    )
    p.add_argument("--id-names", action="store_true", help="name images {image_id:06d}<ext>")
    p.add_argument("--link", choices=["copy", "hard", "sym"], default="copy")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip invalid items and list them in the report instead of stopping",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="clip YOLO coordinates this far outside [0, 1] (default 0.01)",
    )
    p.add_argument(
        "--strict-labels",
        action="store_true",
        help="yolo->coco: an image without a label file is an error "
        "(default: a background image, counted in the report)",
    )
    p.add_argument(
        "--rows",
        choices=["auto", "box", "polygon"],
        default="auto",
        help="coco->yolo row kind (auto: polygons when every object has one)",
    )
    p.add_argument(
        "--crowd",
        choices=["keep", "box"],
        default="keep",
        help="coco->yolo crowd annotations: keep in crowd.json or write as boxes",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads (default: yolo->coco 1, its work holds the GIL; coco->yolo 4 x cores)",
    )
    p.set_defaults(func=cmd_convert)

    p = commands.add_parser("split", help="reproducible train/val/test split of a COCO dataset")
    p.add_argument("src", help="COCO dataset dir (annotations.json + images/) or JSON")
    p.add_argument("dst", help="output: DST/<split>/{images/, annotations.json}")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.7, 0.2, 0.1])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--stratify", action="store_true", help="balance class presence")
    p.add_argument("--group-by", help="image field keeping related images in one split")
    p.add_argument("--link", choices=["copy", "hard", "sym"], default="copy")
    p.set_defaults(func=cmd_split)

    p = commands.add_parser(
        "verify", help="check a COCO dataset or YOLO root (exit 1 on problems, 2 when unusable)"
    )
    p.add_argument("dataset", help="COCO dataset dir / annotations JSON, or YOLO root")
    p.add_argument("--fix", metavar="OUT", help="write a repaired copy and fix_report.json")
    p.add_argument("--first", type=int, default=20, help="problems to print (default 20)")
    p.add_argument("--report", help="write every problem to this JSON file")
    p.add_argument(
        "--strict-labels",
        action="store_true",
        help="YOLO root: an image without a label file is a problem "
        "(default: a background image, counted)",
    )
    p.set_defaults(func=cmd_verify)

    p = commands.add_parser("stats", help="class counts, boxes per image, box sizes")
    p.add_argument("dataset", help="COCO dataset dir or annotations JSON")
    p.add_argument("--out", required=True, help="directory for stats.json and stats.png")
    p.set_defaults(func=cmd_stats)

    p = commands.add_parser("eval", help="COCO metrics of a detections JSON")
    p.add_argument("--gt", required=True, help="ground-truth COCO JSON")
    p.add_argument("--dt", required=True, help="detections JSON (COCO results format)")
    p.add_argument("--iou-type", choices=["bbox", "segm"], default="bbox")
    p.add_argument("--engine", choices=["faster", "pycocotools"], default="faster")
    p.add_argument("--out", help="directory for metrics.json, tables and PNGs")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    p.set_defaults(func=cmd_eval)


def _progress() -> bool:
    return sys.stderr.isatty()


def cmd_convert(args: argparse.Namespace) -> int:
    from visionforge_coco.convert import REPORT_FILE, coco_to_yolo, yolo_to_coco

    if args.src_format == args.dst_format:
        raise ConfigError(f"--from {args.src_format} --to {args.dst_format}: nothing to convert")
    if args.src_format == "yolo":
        report = yolo_to_coco(
            args.src,
            args.dst,
            split=args.split,
            id_names=args.id_names,
            link=args.link,
            skip_invalid=args.skip_invalid,
            tolerance=args.tolerance,
            strict_labels=args.strict_labels,
            workers=args.workers or 1,
            progress=_progress(),
        )
        where = Path(args.dst) / REPORT_FILE
    else:
        if args.ann is None:
            raise ConfigError("--from coco needs --ann ANNOTATIONS.json (SRC is the images dir)")
        if args.id_names:
            raise ConfigError("--id-names applies to --to coco only")
        if args.strict_labels:
            raise ConfigError("--strict-labels applies to --from yolo only")
        split = args.split or "train"
        report = coco_to_yolo(
            args.src,
            args.ann,
            args.dst,
            split=split,
            link=args.link,
            rows=args.rows,
            crowd=args.crowd,
            skip_invalid=args.skip_invalid,
            workers=args.workers,
            progress=_progress(),
        )
        where = Path(args.dst) / f"{split}_{REPORT_FILE}"
    for problem in report.skipped[:20]:
        print(f"skipped: {problem}")
    print(report.summary() + (f"; report: {where}" if report.skipped or report.notes else ""))
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from visionforge_coco.split import split_dataset

    report = split_dataset(
        args.src,
        args.dst,
        ratios=args.ratios,
        seed=args.seed,
        stratify=args.stratify,
        group_by=args.group_by,
        link=args.link,
        progress=_progress(),
    )
    print(report.summary())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from visionforge_coco.cocofile import dataset_paths
    from visionforge_coco.verify import fix_coco, verify_dataset

    try:
        report = verify_dataset(
            args.dataset, progress=_progress(), strict_labels=args.strict_labels
        )
    except DataFormatError as err:
        print(f"unusable: {err}")
        return 2
    print(report.format(args.first))
    if args.report:
        write_problem_report(args.report, report.problems, dataset=report.dataset)
    if args.fix:
        if (Path(args.dataset) / "data.yaml").is_file():
            raise ConfigError(
                "--fix repairs COCO datasets; convert the YOLO root with --skip-invalid instead"
            )
        ann, images = dataset_paths(args.dataset)
        print(fix_coco(ann, images, args.fix, progress=_progress()).summary())
    return 0 if report.ok else 1


def cmd_stats(args: argparse.Namespace) -> int:
    from visionforge_coco.stats import write_stats

    written = write_stats(args.dataset, args.out)
    stats = json.loads(Path(written[0]).read_text())
    print(
        f"{stats['images']} images, {stats['annotations']} annotations, "
        f"{len(stats['class_counts'])} classes -> {', '.join(written)}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from visionforge_coco.evaluation import METRIC_NAMES, evaluate_coco

    result = evaluate_coco(args.gt, args.dt, iou_type=args.iou_type, engine=args.engine)
    flat = result.flat_metrics()
    for name in METRIC_NAMES:
        print(f"{name:>6} {flat[name]:.4f}")
    print(
        f"{'F1':>6} {result.f1.f1:.4f} (precision {result.f1.precision:.4f}, recall "
        f"{result.f1.recall:.4f} at score >= {result.f1.threshold:.4f})"
    )
    written: list[str] = []
    if args.out:
        from visionforge_coco.report import write_eval_report

        written = write_eval_report(result, args.out, plots=not args.no_plots)
    suffix = f"; wrote {args.out}/metrics.json and {len(written) - 1} more" if written else ""
    print(f"eval: AP {flat['AP']:.4f} AP50 {flat['AP50']:.4f} F1 {result.f1.f1:.4f}{suffix}")
    return 0

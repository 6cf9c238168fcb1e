"""YOLO <-> COCO conversion: boxes, polygons, crowd annotations, 1-based category ids.

Outputs are built in a staging directory and swapped in at the end (see ``staging``), so a
failed conversion never leaves a partial dataset. Images are copied, hard-linked or
symlinked; unchanged outputs of a previous run are reused, not rewritten.
"""

from __future__ import annotations

import gc
import math
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import yaml
from pycocotools import mask as mask_utils
from tqdm import tqdm

from visionforge_coco.cocofile import (
    annotation_problems,
    category_problems,
    dumps_coco,
    image_problems,
    load_coco,
    safe_relative,
    structure_problems,
)
from visionforge_coco.crowd import (
    CrowdRegions,
    annotation_from_region,
    crowd_path,
    crowd_problems,
    read_crowd,
    region_from_annotation,
)
from visionforge_coco.imageinfo import image_size
from visionforge_coco.problems import DataFormatError, Problem
from visionforge_coco.provenance import record_dataset
from visionforge_coco.staging import LinkMode, StagedDir
from visionforge_coco.yolo import (
    SPLITS,
    LabelRow,
    Pair,
    format_row,
    labels_dir_for,
    pair_images_and_labels,
    parse_label_text,
    read_data_yaml,
)

REPORT_FILE = "conversion_report.json"

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ConvertReport:
    """What a conversion did; ``skipped`` lists every item left out (``--skip-invalid``).

    ``background``: images written without objects, ``without_label_file`` of them had no
    label file (YOLO -> COCO).
    """

    output: str
    images: int = 0
    annotations: int = 0
    clipped: int = 0
    crowd: int = 0
    background: int = 0
    without_label_file: int = 0
    skipped: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    rewritten: int = 0
    reused: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.images} images, {self.annotations} annotations -> {self.output} "
            f"({self.background} background, {self.without_label_file} without a label "
            f"file, {self.clipped} clipped, {self.crowd} crowd, {len(self.skipped)} "
            f"skipped, {self.reused} unchanged files reused) in {self.seconds:.2f}s"
        )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("seconds")
        return data


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int | None, desc: str, progress: bool
) -> list[R]:
    """``[fn(x) for x in items]`` in order with a tqdm bar: on a thread pool (I/O-bound work)
    in chunks, or in this thread when ``workers == 1``."""
    workers = workers or min(16, (os.cpu_count() or 1) * 4)
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        if workers == 1:
            results = []
            for item in items:
                results.append(fn(item))
                bar.update()
            return results
        size = max(1, min(256, math.ceil(len(items) / (workers * 4))))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]

        def run(chunk: Sequence[T]) -> list[R]:
            return [fn(item) for item in chunk]

        results = []
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done in pool.map(run, chunks):
                results.extend(done)
                bar.update(len(done))
        return results


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: a conversion allocates hundreds of thousands of
    small dicts and tuples without cycles, and the collections they trigger cost about a
    quarter of the run. Reference counting still frees everything."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _stop_on(problems: list[Problem], skip_invalid: bool) -> None:
    if problems and not skip_invalid:
        more = f"; {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
        raise DataFormatError(
            f"{problems[0]}{more} (fix them, or pass --skip-invalid to skip and report them)"
        )


# ---------------------------------------------------------------- YOLO -> COCO


class Inspection(NamedTuple):
    """What one image and its label file hold: size, rows, problems, clipped count, and
    whether it has a label file."""

    width: int
    height: int
    rows: list[LabelRow]
    problems: list[Problem]
    clipped: int
    labelled: bool = True


def _read_text(path: str) -> str:
    """A small file's UTF-8 text with the fewest system calls (open, read until EOF, close)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def missing_label_problem(pair: Pair) -> Problem:
    """The problem of an image without a label file where one is required (strict)."""
    label = posixpath.splitext(pair.rel)[0] + ".txt"
    return Problem(
        pair.image_file,
        f"image without a label file, which strict labels require (add an empty {label} "
        "under labels/ for a background image)",
    )


def inspect_pair(
    pair: Pair, num_classes: int, tolerance: float, strict_labels: bool = False
) -> Inspection:
    """Read the image header and parse the label file of one pair. Without a label file
    the image is a background image (no objects), or a problem with ``strict_labels``."""
    problems: list[Problem] = []
    width = height = 0
    try:
        width, height = image_size(pair.image_file)
    except DataFormatError as err:
        problems.append(Problem(pair.image_file, str(err).split(": ", 1)[-1]))
    if pair.label_file is None:
        if strict_labels:
            problems.append(missing_label_problem(pair))
        return Inspection(width, height, [], problems, 0, labelled=False)
    text = _read_text(pair.label_file)
    parsed = parse_label_text(text, pair.label_file, num_classes, tolerance)
    return Inspection(width, height, parsed.rows, problems + parsed.problems, parsed.clipped)


def inspect_pairs(
    pairs: Sequence[Pair],
    num_classes: int,
    tolerance: float,
    strict_labels: bool,
    workers: int | None,
    desc: str,
    progress: bool,
) -> list[Inspection]:
    """``inspect_pair`` for every pair, in order, on a thread pool: file reads (often from
    disk) overlap, header and label parsing share the interpreter."""
    return parallel_map(
        lambda p: inspect_pair(p, num_classes, tolerance, strict_labels),
        pairs,
        workers,
        f"read {desc}",
        progress,
    )


def _polygon_area(points: list[float], width: int, height: int) -> float:
    rle = mask_utils.frPyObjects([points], height, width)
    return float(mask_utils.area(mask_utils.merge(rle)))


def _coco_annotation(
    ann_id: int, image_id: int, row: LabelRow, width: int, height: int
) -> dict[str, Any]:
    if row.kind == "box":
        cx, cy, w, h = row.coords
        bw, bh = w * width, h * height
        return {
            "id": ann_id, "image_id": image_id, "category_id": row.class_id + 1,
            "bbox": [cx * width - bw / 2, cy * height - bh / 2, bw, bh], "area": bw * bh,
            "iscrowd": 0,
        }  # fmt: skip
    xs = [v * width for v in row.coords[0::2]]
    ys = [v * height for v in row.coords[1::2]]
    points = [c for xy in zip(xs, ys, strict=True) for c in xy]
    x0, y0 = min(xs), min(ys)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": row.class_id + 1,
        "bbox": [x0, y0, max(xs) - x0, max(ys) - y0],
        "area": _polygon_area(points, width, height),
        "segmentation": [points],
        "iscrowd": 0,
    }


def yolo_to_coco(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    split: str | None = None,
    id_names: bool = False,
    link: LinkMode = "copy",
    skip_invalid: bool = False,
    tolerance: float = 0.01,
    strict_labels: bool = False,
    workers: int | None = 1,
    progress: bool = True,
) -> ConvertReport:
    """Convert a YOLO root (with data.yaml) to COCO.

    With ``split`` DST gets ``images/`` and ``annotations.json``; without, one such folder
    per split in data.yaml (``DST/<split>/...``). Category ids are 1-based, named from
    data.yaml; crowd regions (``crowd.json``) get theirs from their class the same way.
    An image without a label file is a background image, or a problem with
    ``strict_labels``. ``id_names`` names files ``{image_id:06d}<ext>``. The per-image
    work (header and label parsing) holds the GIL, so it runs in this thread by default;
    ``workers`` threads (None: automatic) only pay off when reading files is slow
    (network storage).
    """
    with paused_gc():
        return _yolo_to_coco(
            src,
            dst,
            split,
            id_names,
            link,
            skip_invalid,
            tolerance,
            strict_labels,
            workers,
            progress,
        )


def _yolo_to_coco(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    split: str | None,
    id_names: bool,
    link: LinkMode,
    skip_invalid: bool,
    tolerance: float,
    strict_labels: bool,
    workers: int | None,
    progress: bool,
) -> ConvertReport:
    start = time.perf_counter()
    data = read_data_yaml(src)
    if split is not None and split not in data.splits:
        known = ", ".join(data.splits)
        raise DataFormatError(f"{data.path}: no split {split!r} (has: {known})")
    splits = [split] if split is not None else list(data.splits)
    report = ConvertReport(output=os.fspath(dst))
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(data.names)]
    with StagedDir(dst) as out:
        for name in splits:
            prefix = "" if split is not None else f"{name}/"
            coco = _convert_yolo_split(
                data.splits[name],
                data.num_classes,
                out,
                prefix,
                name,
                id_names,
                link,
                skip_invalid,
                tolerance,
                strict_labels,
                workers,
                progress,
                report,
            )
            coco["categories"] = categories
            out.write_bytes(f"{prefix}annotations.json", dumps_coco(coco))
        report.seconds = time.perf_counter() - start
        report.rewritten, report.reused = out.rewritten, out.reused
        out.write_bytes(REPORT_FILE, dumps_coco(report.as_json()))
    for name in splits:
        prefix = "" if split is not None else f"{name}/"
        record_dataset(
            Path(dst) / f"{prefix}annotations.json", [data.path], operation="yolo2coco", split=name
        )
    return report


def _output_name(image_id: int, pair: Pair, id_names: bool) -> str:
    """The COCO ``file_name``: the relative path, or ``{image_id:06d}<ext>``."""
    return f"{image_id:06d}{posixpath.splitext(pair.rel)[1].lower()}" if id_names else pair.rel


def _convert_yolo_split(
    images_dir: Path,
    num_classes: int,
    out: StagedDir,
    prefix: str,
    split: str,
    id_names: bool,
    link: LinkMode,
    skip_invalid: bool,
    tolerance: float,
    strict_labels: bool,
    workers: int | None,
    progress: bool,
    report: ConvertReport,
) -> dict[str, Any]:
    pairing = pair_images_and_labels(images_dir)
    labels_dir = labels_dir_for(images_dir)
    crowd = read_crowd(labels_dir)
    problems = [
        Problem(str(p), "label file without an image (same path under images/ expected)")
        for p in pairing.orphan_labels
    ]
    bad_crowd = crowd_problems(
        crowd, crowd_path(labels_dir), num_classes, {p.rel for p in pairing.pairs}
    )
    problems.extend(p for rel in sorted(bad_crowd) for p in bad_crowd[rel])
    inspected = inspect_pairs(
        pairing.pairs, num_classes, tolerance, strict_labels, workers, split, progress
    )
    problems.extend(p for found in inspected for p in found.problems)
    _stop_on(problems, skip_invalid)
    report.skipped.extend(problems)
    # image ids follow the sorted paths, so they do not depend on which images were skipped
    valid = [
        (i + 1, pair, found, _output_name(i + 1, pair, id_names))
        for i, (pair, found) in enumerate(zip(pairing.pairs, inspected, strict=True))
        if not found.problems and pair.rel not in bad_crowd
    ]

    def place(entry: tuple[int, Pair, Inspection, str]) -> None:
        out.place(entry[1].image_file, f"{prefix}images/{entry[3]}", link)

    parallel_map(place, valid, workers, f"{link} images {split}", progress)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, pair, found, name in valid:
        images.append(
            {"id": image_id, "file_name": name, "width": found.width, "height": found.height}
        )
        first_id = len(annotations) + 1
        annotations += [
            _coco_annotation(ann_id, image_id, row, found.width, found.height)
            for ann_id, row in enumerate(found.rows, start=first_id)
        ]
        regions = crowd.get(pair.rel, [])
        annotations += [
            annotation_from_region(region, ann_id, image_id)
            for ann_id, region in enumerate(regions, start=len(annotations) + 1)
        ]
        report.crowd += len(regions)
        report.background += not found.rows and not regions
        report.without_label_file += not found.labelled
        report.clipped += found.clipped
    report.images += len(images)
    report.annotations += len(annotations)
    return {"images": images, "annotations": annotations}


# ---------------------------------------------------------------- COCO -> YOLO

RowMode = Literal["auto", "box", "polygon"]
CrowdMode = Literal["keep", "box"]


def _norm_box(bbox: Sequence[float], width: int, height: int) -> list[float]:
    x, y, w, h = bbox
    return [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height]


def _norm_polygon(points: Sequence[float], width: int, height: int) -> list[float]:
    return [v / (width if i % 2 == 0 else height) for i, v in enumerate(points)]


def _has_polygon(ann: dict[str, Any]) -> bool:
    seg = ann.get("segmentation")
    return isinstance(seg, list) and len(seg) > 0


def _bad_indices(problems: Iterable[tuple[int, Problem]], kept: list[Problem]) -> set[int]:
    bad = set()
    for index, problem in problems:
        bad.add(index)
        kept.append(problem)
    return bad


def coco_to_yolo(
    images_dir: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    split: str = "train",
    link: LinkMode = "copy",
    rows: RowMode = "auto",
    crowd: CrowdMode = "keep",
    skip_invalid: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ConvertReport:
    """Convert COCO (images dir + annotations JSON) into the YOLO root ``dst``, split ``split``.

    Class ``i`` is the i-th category by ascending id; data.yaml lists the names. ``rows``:
    ``auto`` writes polygons when every non-crowd annotation has one, else boxes. Crowd
    annotations go to ``labels/<split>/crowd.json`` with their class (``keep``, see
    ``visionforge_coco.crowd``) or become box rows (``box``).
    Other splits already in ``dst`` are kept.
    """
    start = time.perf_counter()
    if split not in SPLITS:
        raise DataFormatError(f"--split {split!r}: a YOLO split is one of {', '.join(SPLITS)}")
    source = os.fspath(annotations)
    data = load_coco(source, check=False)
    fatal = structure_problems(data, source) or list(category_problems(data, source))
    if fatal:
        raise DataFormatError(f"{fatal[0]} (categories define the YOLO classes: fix them first)")
    report = ConvertReport(output=os.fspath(dst))
    problems: list[Problem] = []
    bad_images = _bad_indices(image_problems(data, source), problems)
    bad_anns = _bad_indices(annotation_problems(data, source), problems)
    _stop_on(problems, skip_invalid)
    report.skipped.extend(problems)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    class_of = {c["id"]: i for i, c in enumerate(cats)}
    images = [img for i, img in enumerate(data["images"]) if i not in bad_images]
    by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in images}
    for i, ann in enumerate(data["annotations"]):
        if i not in bad_anns and ann["image_id"] in by_image:
            by_image[ann["image_id"]].append(ann)
    plain = [a for anns in by_image.values() for a in anns if not a.get("iscrowd")]
    use_polygons = rows == "polygon" or (
        rows == "auto" and bool(plain) and all(_has_polygon(a) for a in plain)
    )
    root = Path(images_dir)
    crowd_out: CrowdRegions = {}

    with StagedDir(dst) as out:
        _carry_other_splits(out, split)

        def work(img: dict[str, Any]) -> tuple[Problem | None, list[Problem]]:
            rel = safe_relative(img["file_name"])
            assert rel is not None
            src_path = root / rel
            if not src_path.is_file():
                where = f"{source}: image id {img['id']}"
                return Problem(where, f"image file {src_path} not found"), []
            lines, notes = _yolo_lines(
                img, by_image[img["id"]], class_of, use_polygons, crowd, crowd_out, rel, source
            )
            out.place(src_path, f"images/{split}/{rel}", link)
            label_rel = posixpath.splitext(rel)[0] + ".txt"
            out.write_bytes(f"labels/{split}/{label_rel}", "".join(lines).encode())
            return None, notes

        results = parallel_map(work, images, workers, f"coco->yolo {split}", progress)
        missing = [p for p, _ in results if p is not None]
        _stop_on(missing, skip_invalid)
        report.skipped.extend(missing)
        report.notes.extend(n for _, notes in results for n in notes)
        written = [img for img, (p, _) in zip(images, results, strict=True) if p is None]
        report.images = len(written)
        report.annotations = sum(len(by_image[img["id"]]) for img in written)
        report.crowd = sum(1 for img in written for a in by_image[img["id"]] if a.get("iscrowd"))
        report.background = sum(1 for img in written if not by_image[img["id"]])
        if crowd_out:
            out.write_bytes(
                crowd_path(Path("labels", split)).as_posix(),
                dumps_coco(dict(sorted(crowd_out.items()))),
            )
        out.write_bytes("data.yaml", _data_yaml(out, split, [c["name"] for c in cats]))
        report.seconds = time.perf_counter() - start
        report.rewritten, report.reused = out.rewritten, out.reused
        out.write_bytes(f"{split}_{REPORT_FILE}", dumps_coco(report.as_json()))
    record_dataset(Path(dst) / "data.yaml", [source], operation="coco2yolo", split=split)
    return report


def _yolo_lines(
    img: dict[str, Any],
    anns: list[dict[str, Any]],
    class_of: dict[int, int],
    use_polygons: bool,
    crowd: CrowdMode,
    crowd_out: CrowdRegions,
    rel: str,
    source: str,
) -> tuple[list[str], list[Problem]]:
    width, height = img["width"], img["height"]
    lines: list[str] = []
    notes: list[Problem] = []
    for ann in anns:
        where = f"{source}: annotation id {ann['id']}"
        cls = class_of[ann["category_id"]]
        if ann.get("iscrowd"):
            if crowd == "keep":
                crowd_out.setdefault(rel, []).append(region_from_annotation(ann, cls))
                continue
            notes.append(Problem(where, "crowd annotation converted to an ordinary box row"))
        elif use_polygons and _has_polygon(ann):
            parts = ann["segmentation"]
            part = max(parts, key=lambda p: _polygon_area(p, width, height))
            if len(parts) > 1:
                notes.append(Problem(where, f"{len(parts)}-part polygon: kept its largest part"))
            lines.append(format_row(cls, _norm_polygon(part, width, height)) + "\n")
            continue
        elif use_polygons:
            notes.append(Problem(where, "no polygon: written as a box-shaped polygon"))
            x, y, w, h = ann["bbox"]
            corners = [x, y, x + w, y, x + w, y + h, x, y + h]
            lines.append(format_row(cls, _norm_polygon(corners, width, height)) + "\n")
            continue
        lines.append(format_row(cls, _norm_box(ann["bbox"], width, height)) + "\n")
    return lines, notes


def _carry_other_splits(out: StagedDir, split: str) -> None:
    """Hard-link the files of the other splits of an existing YOLO root into the stage."""
    if not out.final.is_dir():
        return
    for top in ("images", "labels"):
        base = out.final / top
        if not base.is_dir():
            continue
        for child in base.iterdir():
            if child.name == split:
                continue
            for dirpath, _, files in os.walk(child):
                for name in files:
                    rel = (Path(dirpath) / name).relative_to(out.final).as_posix()
                    os.link(out.final / rel, out.path(rel))
    for report in out.final.glob(f"*_{REPORT_FILE}"):
        if not report.name.startswith(f"{split}_"):
            os.link(report, out.path(report.name))


def _data_yaml(out: StagedDir, split: str, names: list[str]) -> bytes:
    entries: dict[str, Any] = {"path": "."}
    old = out.final / "data.yaml"
    if old.is_file():
        previous = read_data_yaml(old)
        if previous.names != names:
            raise DataFormatError(
                f"{old}: has classes {previous.names}, this conversion {names}; "
                "convert into a new directory"
            )
        for name in previous.splits:
            if name != split:
                entries[name] = f"images/{name}"
    entries[split] = f"images/{split}"
    ordered = {"path": ".", **{s: entries[s] for s in SPLITS if s in entries}}
    ordered["nc"] = len(names)
    ordered["names"] = names
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True).encode()

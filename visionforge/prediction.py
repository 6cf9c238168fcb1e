"""``visionforge predict`` for models that post-process their own outputs (the Predictor
protocol): detectors get a PNG per image with boxes, class names and scores drawn, and a
COCO results JSON; category ids come from the model's label space (CategoryMapped).

Images are read from files, folders or fsspec prefixes (``s3://bucket/images/``), resized
like the recipe's evaluation data, padded into batches (``detection_collate``) and given to
``model.postprocess``, which returns boxes in pixels of each image as read.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, encode_png
from torchvision.transforms import v2
from torchvision.utils import draw_bounding_boxes
from tqdm.auto import tqdm

from visionforge import storage
from visionforge.config import Recipe
from visionforge.data import IMAGENET_MEAN, IMAGENET_STD, detection_collate
from visionforge.engine.batch import ImagePreparer, move_to_device
from visionforge.errors import ConfigError, VisionforgeError
from visionforge.interfaces import CategoryMapped, NamedClasses, Predictor, class_name
from visionforge.registry import REGISTRIES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def expand_inputs(sources: Sequence[str]) -> list[str]:
    """Files as given; folders and URL prefixes replaced by their image files (sorted)."""
    found: list[str] = []
    for source in sources:
        fs, path = storage.filesystem(source)
        if fs.isdir(path):
            inside = sorted(p for p in fs.find(path) if p.lower().endswith(IMAGE_SUFFIXES))
            if not inside:
                raise ConfigError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
            remote = storage.is_remote(source)
            found += [fs.unstrip_protocol(p) if remote else p for p in inside]
        elif fs.exists(path):
            found.append(source)
        else:
            raise ConfigError(f"{source}: no such image file or folder")
    return found


def read_rgb(path: str) -> torch.Tensor:
    """A ``[3, H, W]`` uint8 image (EXIF orientation applied), or one line naming the file."""
    data = storage.read_bytes(path)
    try:
        return decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            mode=ImageReadMode.RGB,
            apply_exif_orientation=True,
        )
    except RuntimeError as err:
        raise VisionforgeError(
            f"{path}: cannot decode image ({str(err).strip().splitlines()[0]}); use a JPEG, "
            "PNG, GIF or WEBP file"
        ) from None


def detection_eval_transform(recipe: Recipe) -> tuple[v2.Transform, int]:
    """(transform, pad_to_multiple) matching the evaluation data of the recipe: the val
    (else train) dataset's ``multiscale``/``eval_size``/``max_side`` or ``image_size``
    resize and ``normalize``, as its ``augment: eval`` preset does."""
    spec, where = (
        (recipe.data.val, "data.val") if recipe.data.val else (recipe.data.train, "data.train")
    )
    fields = REGISTRIES.datasets.validate(spec.as_dict(), where).model_dump()
    steps: list[v2.Transform] = []
    if fields.get("multiscale"):
        resize = v2.RandomShortestSize(fields["eval_size"], max_size=fields["max_side"])
        steps.append(resize)
    elif isinstance(fields.get("image_size"), int):
        steps.append(v2.Resize((fields["image_size"], fields["image_size"]), antialias=True))
    if fields.get("normalize"):
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps or [v2.Identity()]), int(fields.get("pad_to_multiple", 1))


@dataclass
class ImageResult:
    """One image's kept detections, in pixels of the image as read."""

    path: str
    image: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def _item(image: torch.Tensor, index: int, transform: Callable[[Any], Any]) -> dict[str, Any]:
    height, width = int(image.shape[-2]), int(image.shape[-1])
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.zeros(0, 4), format="XYXY", canvas_size=(height, width)
        ),
        "labels": torch.zeros(0, dtype=torch.int64),
        "image_id": index,
        "orig_size": (height, width),
    }
    item = transform({"image": tv_tensors.Image(image), "target": target})
    return {"image": item["image"], "target": {**item["target"], "orig_size": (height, width)}}


@torch.no_grad()
def detect(
    model: nn.Module,
    recipe: Recipe,
    paths: Sequence[str],
    *,
    device: torch.device,
    score_threshold: float,
    batch_size: int,
) -> list[ImageResult]:
    """Run ``model`` (a Predictor returning detections) over ``paths`` in padded batches."""
    if not isinstance(model, Predictor):
        raise ConfigError(f"model {recipe.model.type!r}: not a Predictor (no postprocess)")
    transform, pad_to_multiple = detection_eval_transform(recipe)
    prepare = ImagePreparer(recipe.data.normalize_on_device, channels_last=False)
    results: list[ImageResult] = []
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    for chunk_index, chunk in enumerate(tqdm(chunks, desc="predict", unit="batch", disable=None)):
        images = [read_rgb(p) for p in chunk]
        first = chunk_index * batch_size
        items = [_item(image, first + i + 1, transform) for i, image in enumerate(images)]
        batch = prepare(
            move_to_device(detection_collate(items, pad_to_multiple=pad_to_multiple), device)
        )
        predictions = model.postprocess(model(batch), batch)
        for path, image, pred in zip(chunk, images, predictions, strict=True):
            if "boxes" not in pred:
                raise ConfigError(
                    f"model {recipe.model.type!r}: postprocess returned {sorted(pred)}, not "
                    "detections (boxes, scores, labels)"
                )
            keep = pred["scores"] >= score_threshold
            results.append(
                ImageResult(
                    path,
                    image,
                    pred["boxes"][keep].float().cpu(),
                    pred["scores"][keep].float().cpu(),
                    pred["labels"][keep].cpu(),
                )
            )
    return results


def label_space(model: nn.Module) -> tuple[list[str] | None, list[int] | None]:
    """(class names, category ids) the model's labels stand for, where it records them."""
    names = [str(n) for n in model.class_names] if isinstance(model, NamedClasses) else None
    ids = list(model.category_ids) if isinstance(model, CategoryMapped) else None
    return names, ids


def _colour(label: int) -> tuple[int, int, int]:
    from matplotlib import colormaps

    r, g, b, _ = colormaps["tab20"](label % 20)
    return int(r * 255), int(g * 255), int(b * 255)


MIN_DRAWN_SIDE = 512
"""Images whose longer side is shorter are enlarged (by a whole factor, nearest pixel) before
the boxes are drawn, so class names and scores stay legible on small inputs."""


def draw(result: ImageResult, names: list[str] | None) -> bytes:
    """The image with its boxes, class names and scores drawn, as PNG bytes; images smaller
    than :data:`MIN_DRAWN_SIDE` are enlarged first (the COCO results keep the image's own
    pixels)."""
    image, boxes = result.image, result.boxes
    factor = -(-MIN_DRAWN_SIDE // max(image.shape[-2:]))  # ceil
    if factor > 1:
        image = image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
        boxes = boxes * factor
    labels = [
        f"{class_name(names, int(c))} {float(s):.2f}"
        for c, s in zip(result.labels, result.scores, strict=True)
    ]
    from matplotlib import font_manager

    side = max(image.shape[-2:])
    colours = [_colour(int(c)) for c in result.labels]
    drawn = draw_bounding_boxes(
        image,
        boxes,
        labels=labels,
        colors=colours,
        width=max(2, round(side / 300)),
        font=font_manager.findfont("DejaVu Sans"),
        font_size=max(10, round(side / 40)),
        label_colors="white",
        label_background_colors=colours,
        fill_labels=True,
    )
    return bytes(encode_png(drawn).numpy().tobytes())


def output_names(paths: Sequence[str]) -> list[str]:
    """``<stem>.png`` per input, numbered where two inputs share a stem."""
    stems = [PurePath(posixpath.basename(p.rstrip("/"))).stem for p in paths]
    return [
        f"{stem}.png" if stems.count(stem) == 1 else f"{stem}_{i + 1}.png"
        for i, stem in enumerate(stems)
    ]


def write_outputs(results: Sequence[ImageResult], model: nn.Module, out: str) -> list[str]:
    """PNGs, ``detections.json`` (COCO results: image_id, category_id, bbox xywh, score)
    and ``images.json`` (id, file_name, width, height of each input) in ``out``."""
    names, category_ids = label_space(model)
    storage.makedirs(out)
    written: list[str] = []
    detections: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for image_id, (result, name) in enumerate(
        zip(results, output_names([r.path for r in results]), strict=True), start=1
    ):
        target = storage.join(out, name)
        storage.write_bytes_atomic(target, draw(result, names))
        written.append(target)
        height, width = result.image.shape[-2:]
        images.append({"id": image_id, "file_name": result.path, "width": width, "height": height})
        for box, score, label in zip(
            result.boxes.tolist(), result.scores.tolist(), result.labels.tolist(), strict=True
        ):
            x0, y0, x1, y1 = box
            category = category_ids[label] if category_ids is not None else label
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(category),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": score,
                }
            )
    for name, payload in (("detections.json", detections), ("images.json", images)):
        target = storage.join(out, name)
        storage.write_bytes_atomic(target, json.dumps(payload, indent=1).encode())
        written.append(target)
    return written


def default_out(checkpoint: str | None) -> str:
    """``predictions/`` beside the checkpoint, else in the current folder."""
    if checkpoint is None:
        return "predictions"
    join = posixpath if storage.is_remote(checkpoint) else os.path
    return join.join(join.dirname(checkpoint), "predictions")

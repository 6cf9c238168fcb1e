"""The ``visionforge`` command: train, eval, predict, export, validate, schema, plugins, lineage.

Plugins add command groups through the ``visionforge_cli(subparsers)`` hook. Building the parser
is cheap (no torch): heavy imports happen inside the command functions. User errors
(:class:`~visionforge.errors.VisionforgeError`, pydantic validation errors) print one line
``error: ...`` and exit with 2 (or the error's ``exit_code``, 1 for "ran but failed");
``--debug`` adds the traceback. Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import BaseModel, ValidationError

from visionforge import __version__, storage
from visionforge.config import Recipe, blame, load_recipe, recipe_from_dict
from visionforge.errors import ConfigError, VisionforgeError
from visionforge.registry import REGISTRIES, format_validation_error
from visionforge.run_folder import RUN_CHECKPOINTS

if TYPE_CHECKING:
    import torch

Command = Callable[[argparse.Namespace], int]

RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
PREDICT_BATCH = 32


# ----------------------------------------------------------------------------- helpers


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Left-aligned columns separated by two spaces."""
    table = [list(header), *map(list, rows)] if header else [list(r) for r in rows]
    if not table:
        return ""
    widths = [max(len(row[i]) for row in table if i < len(row)) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip()
        for row in table
    ]
    return "\n".join(lines)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """A two-column metric table; floats with 4 significant digits."""
    rows = [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in metrics.items()]
    return format_table(rows, ("metric", "value"))


def absolute(path: str) -> str:
    """Local paths made absolute (lineage manifests then point at the same file from anywhere)."""
    return path if "://" in path else os.path.abspath(path)


def is_recipe_path(path: str) -> bool:
    """Recipes are YAML/JSON files; anything else given as SOURCE is taken as a checkpoint."""
    return path.lower().endswith(RECIPE_SUFFIXES)


def run_checkpoint(recipe: Recipe) -> str | None:
    """``best.ckpt`` (else ``last.ckpt``) of the recipe's newest run (``OUTPUT``, ``OUTPUT-2``,
    ...: the highest-numbered that holds a run), if training wrote one."""
    from visionforge.run_folder import latest_run_folder

    output = latest_run_folder(str(recipe.trainer.output)) or str(recipe.trainer.output)
    for name in RUN_CHECKPOINTS:
        candidate = absolute(storage.join(output, name))
        if storage.exists(candidate):
            return candidate
    return None


def resolve_source(
    source: str, checkpoint: str | None, overrides: Sequence[str]
) -> tuple[Recipe, str | None]:
    """(recipe, checkpoint) from ``RECIPE|CKPT`` and ``--checkpoint``, with ``--set`` applied.

    A checkpoint brings its own recipe; a recipe without ``--checkpoint`` uses the run's
    best/last checkpoint when training wrote one, else the model as built from the recipe.
    """
    if is_recipe_path(source):
        recipe = load_recipe(source, overrides)
        if checkpoint is None:
            checkpoint = run_checkpoint(recipe)
            _note(
                f"using {checkpoint}"
                if checkpoint
                else f"note: no checkpoint in {recipe.trainer.output}; using the model as "
                "built from the recipe (pass --checkpoint to choose one)"
            )
        return recipe, checkpoint and absolute(checkpoint)
    if checkpoint is not None:
        raise ConfigError(
            f"--checkpoint {checkpoint}: SOURCE {source} is already a checkpoint; "
            "give a recipe as SOURCE to combine it with --checkpoint"
        )
    from visionforge.engine import load_checkpoint
    from visionforge.export.chain import source_kind

    kind = source_kind(source)
    if kind != "checkpoint":
        raise ConfigError(
            f"SOURCE {source}: an exported {kind} artifact, not a checkpoint; give the "
            "recipe or checkpoint it was exported from"
        )
    stored = load_checkpoint(source)["recipe"]
    recipe = recipe_from_dict(stored, overrides, source=f"{source} (stored recipe)")
    return recipe, absolute(source)


def _dataset_config(recipe: Recipe) -> tuple[BaseModel, str]:
    if recipe.data.val is not None:
        return REGISTRIES.datasets.validate(recipe.data.val.as_dict(), "data.val"), "data.val"
    return REGISTRIES.datasets.validate(recipe.data.train.as_dict(), "data.train"), "data.train"


def _input_channels(recipe: Recipe, dataset_cfg: BaseModel) -> int:
    model_cfg = REGISTRIES.models.validate(recipe.model.as_dict(), "model")
    channels = getattr(model_cfg, "in_chans", None) or getattr(dataset_cfg, "channels", None)
    return int(channels or 3)


def example_shape(recipe: Recipe, exporter_cfg: BaseModel) -> tuple[int, ...]:
    """C, H, W of the export example: ``export.input_size``, else from the dataset config."""
    size = getattr(exporter_cfg, "input_size", None)
    if size:
        return tuple(int(s) for s in size)
    dataset_cfg, path = _dataset_config(recipe)
    image_size = getattr(dataset_cfg, "image_size", None)
    if image_size is None:
        raise ConfigError(
            f"export.input_size: {path} does not say its image size; set it, "
            "e.g. --set export.input_size=[3,224,224]"
        )
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return (_input_channels(recipe, dataset_cfg), int(height), int(width))


def default_export_path(recipe: Recipe, checkpoint: str | None, suffix: str) -> str:
    """Beside the checkpoint (``best.ckpt`` -> ``best.onnx``), else ``OUTPUT/model.onnx``."""
    if checkpoint is None:
        return absolute(storage.join(str(recipe.trainer.output), f"model{suffix}"))
    join = posixpath if storage.is_remote(checkpoint) else os.path
    stem = join.splitext(checkpoint)[0]
    return stem + suffix


# ----------------------------------------------------------------------------- commands


def _run_options(runner: Any, args: argparse.Namespace) -> dict[str, bool]:
    """``--exist-ok`` / ``--allow-recipe-change`` for runners whose ``submit`` takes them."""
    import inspect

    asked = {
        "exist_ok": ("--exist-ok", args.exist_ok),
        "allow_recipe_change": ("--allow-recipe-change", args.allow_recipe_change),
    }
    accepted = inspect.signature(runner.submit).parameters
    for name, (flag, value) in asked.items():
        if value and name not in accepted:
            raise ConfigError(f"{flag}: the {type(runner).__name__} runner does not support it")
    return {name: True for name, (_, value) in asked.items() if value}


def _detach(runner: Any) -> None:
    """Make a local runner hand its run to a background supervisor (remote runners always
    return right after submission)."""
    from visionforge.runners.local import LocalRunner

    if isinstance(runner, LocalRunner):
        runner.detach = True


def _dry_run(runner: Any, recipe: Recipe) -> int:
    """Print what the runner would submit; launch nothing."""
    from visionforge.interfaces import DryRunner

    if not isinstance(runner, DryRunner):
        raise ConfigError(f"--dry-run: the {type(runner).__name__} runner does not support it")
    print(runner.dry_run(recipe))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a recipe with its runner into a new run folder (or resume one); print metrics.

    SIGTERM/SIGINT from here on end in a checkpoint, status ``stopped`` and exit code 0."""
    from visionforge.engine.signals import StopSignal

    with StopSignal(restore=False):
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from visionforge import lineage
    from visionforge.run_folder import new_run_folder, resume_target
    from visionforge.runners import RunFailedError

    overrides = [*args.overrides, *(["runner.upload_local=true"] if args.upload_local else [])]
    recipe = load_recipe(args.recipe, overrides)
    runner = REGISTRIES.runners.build(recipe.runner.as_dict(), "runner")
    if args.dry_run:
        return _dry_run(runner, recipe)
    options = _run_options(runner, args)
    resume: bool | str = False
    if args.resume is not False:
        target = resume_target(
            args.resume if isinstance(args.resume, str) else None, str(recipe.trainer.output)
        )
        recipe.trainer.output, resume = target.output, target.checkpoint
        how = f"resuming {target.checkpoint}"
    elif args.exist_ok:
        how = "overwriting whatever run it holds (--exist-ok)"
    else:
        recipe.trainer.output = new_run_folder(str(recipe.trainer.output))
        how = "new run"
    print(f"run folder: {recipe.trainer.output} ({how})", flush=True)
    _note(f"training {recipe.name} ({recipe.runner.type} runner)")
    if args.detach:
        _detach(runner)
    handle = runner.submit(recipe, resume=resume, **options)
    _note(f"run id: {handle.id}")
    if args.detach:
        print(handle.id)
        _note(f"follow it with: visionforge runs logs {handle.id} --follow")
        return 0
    status = handle.wait()
    if status == "failed":
        error = handle.error()
        if error is not None:
            raise error
        raise RunFailedError(f"run failed; last log lines: {_one_line(handle.logs()[-500:])}")
    metrics = handle.result()
    if metrics is None:
        try:
            metrics = lineage.read_manifest(str(recipe.trainer.output)).get("metrics") or {}
        except VisionforgeError:
            metrics = {}
    if metrics:
        print(format_metrics(metrics))
    if status == "stopped":
        _note(
            "stopped by a signal; continue with: visionforge train "
            f"{args.recipe} --resume {recipe.trainer.output}"
        )
    print(f"{status}: outputs in {recipe.trainer.output}")
    for path in handle.artifacts():
        print(f"  {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on the recipe's val (or train) split and print the metrics."""
    recipe, checkpoint = resolve_source(args.source, args.checkpoint, args.overrides)
    from visionforge.engine import evaluate

    metrics = evaluate(recipe, checkpoint, split=args.split, report_dir=args.report)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_metrics(metrics))
    if args.report:
        from visionforge.runners.local import list_artifacts

        written = list_artifacts(args.report)
        if written:
            _note("reports:\n" + "\n".join(f"  {path}" for path in written))
        else:
            _note(
                f"note: evaluator {recipe.evaluator.type if recipe.evaluator else None!r} wrote "
                "no reports with these settings (topk writes them with per_class: true)"
            )
    return 0


def _read_image(path: str, channels: int) -> torch.Tensor:
    import torch
    from torchvision.io import ImageReadMode, decode_image

    data = storage.read_bytes(path)
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except RuntimeError as err:
        raise VisionforgeError(
            f"{path}: cannot decode image ({_one_line(str(err))}); "
            "use a JPEG, PNG, GIF or WEBP file"
        ) from None


def _predict_preprocess(recipe: Recipe) -> tuple[int, Callable[[torch.Tensor], torch.Tensor]]:
    """(channels, image -> model input) following the eval transform of the recipe's data."""
    import torch
    from torchvision import tv_tensors

    from visionforge.data import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        classification_transforms,
        device_normalize,
    )

    dataset_cfg, path = _dataset_config(recipe)
    image_size = getattr(dataset_cfg, "image_size", None)
    if not isinstance(image_size, int):
        raise ConfigError(
            f"{path}.image_size: predict needs the square input size the model was trained "
            f"at; set it with --set {path}.image_size=224"
        )
    options = {
        key: getattr(dataset_cfg, key)
        for key in ("resize_ratio", "mean", "std", "normalize")
        if getattr(dataset_cfg, key, None) is not None
    }
    transform = classification_transforms(image_size, "eval", **options)
    mean, std = recipe.data.normalize_on_device or (
        options.get("mean", IMAGENET_MEAN),
        options.get("std", IMAGENET_STD),
    )

    def preprocess(image: torch.Tensor) -> torch.Tensor:
        out = transform(tv_tensors.Image(image))
        if not out.is_floating_point():
            out = device_normalize(out.unsqueeze(0), mean, std)[0]
        return out.as_subclass(torch.Tensor)

    return _input_channels(recipe, dataset_cfg), preprocess


def _predict_detections(model: Any, recipe: Recipe, checkpoint: str | None, args: Any) -> int:
    """Detectors (Predictor models): PNGs with boxes drawn and a COCO results JSON."""
    from visionforge import prediction
    from visionforge.engine.distributed import choose_device

    out = args.out or prediction.default_out(checkpoint)
    device = choose_device(args.device, option="--device")
    model.to(device).eval()
    results = prediction.detect(
        model,
        recipe,
        prediction.expand_inputs(args.images),
        device=device,
        score_threshold=args.score_threshold,
        batch_size=args.batch_size,
    )
    written = prediction.write_outputs(results, model, out)
    kept = sum(len(r.scores) for r in results)
    print(
        f"{len(results)} image(s), {kept} detection(s) with score >= {args.score_threshold:g} "
        f"-> {out} ({len(written)} files: PNGs, detections.json, images.json)"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Detectors: draw and save detections; classifiers: print the top-k classes."""
    import torch
    from tqdm.auto import tqdm

    from visionforge.engine import load_model
    from visionforge.engine.distributed import choose_device
    from visionforge.interfaces import NamedClasses, Predictor

    recipe, checkpoint = resolve_source(args.source, args.checkpoint, args.overrides)
    model, recipe = load_model(recipe, checkpoint)
    if isinstance(model, Predictor):
        return _predict_detections(model, recipe, checkpoint, args)
    channels, preprocess = _predict_preprocess(recipe)
    device = choose_device(args.device, option="--device")
    model.to(device).eval()
    names = list(model.class_names) if isinstance(model, NamedClasses) else None
    results: list[dict[str, Any]] = []
    chunks = [args.images[i : i + PREDICT_BATCH] for i in range(0, len(args.images), PREDICT_BATCH)]
    for chunk in tqdm(chunks, desc="predict", unit="batch", disable=None):
        batch = torch.stack([preprocess(_read_image(p, channels)) for p in chunk]).to(device)
        with torch.no_grad():
            outputs = model({"image": batch})
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if not isinstance(logits, torch.Tensor):
            keys = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise VisionforgeError(
                f"model {recipe.model.type!r}: predict prints classes and needs a classifier "
                f"returning 'logits', got {keys}; use the plugin's own predict command"
            )
        probs = logits.float().softmax(dim=-1).cpu()
        k = min(args.topk, probs.shape[-1])
        top = probs.topk(k, dim=-1)
        for path, values, indices in zip(chunk, top.values, top.indices, strict=True):
            ranked = [
                {
                    "class": names[i] if names and i < len(names) else f"class {i}",
                    "index": int(i),
                    "probability": float(v),
                }
                for v, i in zip(values.tolist(), indices.tolist(), strict=True)
            ]
            results.append({"image": path, "top": ranked})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for item in results:
        print(item["image"])
        rows = [
            (f"{rank}.", r["class"], f"{100 * r['probability']:.2f}%")
            for rank, r in enumerate(item["top"], start=1)
        ]
        print("\n".join("  " + line for line in format_table(rows).splitlines()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a recipe's or checkpoint's model, or an exported artifact (``best.onnx``), through
    the exporters ``--to`` needs (``--to hailo`` from a checkpoint exports ONNX first).

    Options a plugin adds to this command with ``dest="export.FIELD"`` (default None) go into
    the target exporter's config block when given.
    """
    from visionforge.export.chain import (
        chain_outputs,
        checkpoint_in_lineage,
        describe,
        load_artifact,
        plan_chain,
        recipe_of_checkpoint,
        run_chain,
        source_kind,
    )

    kind = source_kind(args.source)
    artifact = None
    recipe: Recipe | None
    checkpoint: str | None
    if kind in ("recipe", "checkpoint"):
        recipe, checkpoint = resolve_source(args.source, args.checkpoint, args.overrides)
    else:
        if args.checkpoint is not None:
            raise ConfigError(
                f"--checkpoint {args.checkpoint}: SOURCE {args.source} is an exported {kind} "
                "artifact; give a recipe as SOURCE to combine it with --checkpoint"
            )
        artifact = load_artifact(absolute(args.source))
        checkpoint = checkpoint_in_lineage(artifact)
        recipe = recipe_of_checkpoint(checkpoint, args.overrides) if checkpoint else None
        if recipe is None and args.overrides:
            raise ConfigError(
                f"--set: {args.source} has no checkpoint in its lineage, so there is no recipe "
                "to override"
            )
    options = _export_options(args)

    def block_for(name: str) -> dict[str, Any]:
        block: dict[str, Any] = {"type": name}
        if (
            recipe is not None
            and recipe.export is not None
            and (REGISTRIES.exporters.get(recipe.export.type) is REGISTRIES.exporters.get(name))
        ):
            block = recipe.export.model_dump()
        if name == args.to:
            block = _merged(block, options)
        if args.opset is not None and name == "onnx":
            block["opset"] = args.opset
        return block

    steps = plan_chain(args.to, "model" if artifact is None else artifact.kind, block_for)
    suffix = steps[-1].exporter.suffix
    if args.out:
        out = absolute(args.out)
    elif artifact is not None:
        out = os.path.splitext(artifact.path)[0] + suffix
    else:
        assert recipe is not None
        out = default_export_path(recipe, checkpoint, suffix)
    if artifact is None:
        assert recipe is not None
        source, recipe, example = _export_model(recipe, checkpoint, steps[0].block)
        parents = [checkpoint] if checkpoint else []
    else:
        source, example, parents = artifact, None, [artifact.path]
    artifacts = run_chain(
        steps,
        source,
        outs=chain_outputs(out, steps),
        recipe=recipe,
        parents=parents,
        example=example,
    )
    for made in artifacts:
        print(f"wrote {describe(made)}")
    return 0


def _export_options(args: argparse.Namespace) -> dict[str, Any]:
    """``{FIELD: value}`` from the options plugins added as ``dest="export.FIELD"``."""
    options: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith("export.") and value is not None:
            *parents, leaf = dest.removeprefix("export.").split(".")
            node = options
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
    return options


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, nested blocks merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        inner = merged.get(key)
        if isinstance(value, Mapping) and isinstance(inner, Mapping):
            merged[key] = _merged(inner, value)
        else:
            merged[key] = value
    return merged


def _export_model(
    recipe: Recipe, checkpoint: str | None, block: Mapping[str, Any]
) -> tuple[Any, Recipe, torch.Tensor]:
    """(model on the CPU in eval mode, its recipe, a seeded example batch: two images for a
    dynamic batch axis, which torch.export would specialize if traced at one)."""
    import torch

    from visionforge.components.configs import OnnxExporterConfig
    from visionforge.engine import load_model
    from visionforge.export.onnx import example_batch_size

    cfg = REGISTRIES.exporters.validate(block, "export")
    shape = example_shape(recipe, cfg)
    model, recipe = load_model(recipe, checkpoint)
    model.cpu().eval()
    batch = example_batch_size(cfg) if isinstance(cfg, OnnxExporterConfig) else 1
    example = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(0))
    return model, recipe, example


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a recipe (every component block against its registry entry) and check that
    the local files and folders it reads exist."""
    recipe = load_recipe(args.recipe, args.overrides)
    missing = recipe.missing_inputs()
    if missing:
        problems = [
            f"{blame(field, args.overrides, args.recipe)}: {field}: {path} does not exist"
            for field, path in missing
        ]
        raise ConfigError(
            "; ".join(problems) + "; fix the path (relative paths are taken from the current "
            f"folder, {os.getcwd()})",
            paths=[field for field, _ in missing],
        )
    parts = [f"model {recipe.model.type}", f"data.train {recipe.data.train.type}"]
    if recipe.data.val is not None:
        parts.append(f"data.val {recipe.data.val.type}")
    parts.append(f"loss {recipe.loss.type}")
    if recipe.evaluator is not None:
        parts.append(f"evaluator {recipe.evaluator.type}")
    parts.append(f"runner {recipe.runner.type}")
    trainer = recipe.trainer
    print(
        f"ok: {args.recipe}: {', '.join(parts)}; {trainer.epochs} epoch(s) of batch "
        f"{trainer.batch_size}, {recipe.optimizer.type} lr {recipe.optimizer.lr:g}, "
        f"output {trainer.output}"
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Write the JSON Schema of recipes with every installed component."""
    from visionforge.config import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2) + "\n"
    if args.out:
        storage.write_bytes_atomic(args.out, text.encode())
        _note(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    """Write a working plugin package (model, dataset, recipe, test) to start from."""
    from visionforge.new_plugin import new_plugin

    root = new_plugin(args.name, args.dir)
    print(f"wrote {root}")
    print(f"next: pip install -e {root} && visionforge train {root / 'recipe.yaml'}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """List plugins: version, module, what each registered, and load errors."""
    from visionforge.plugins import plugin_infos

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # failures are shown in the table
        infos = plugin_infos()
    rows = []
    for info in infos:
        status = f"error: {info.error}" if info.error else ("ok" if info.loaded else "not loaded")
        cli_error = CLI_HOOK_ERRORS.get(info.name)
        if cli_error:
            status += f"; commands failed: {cli_error}"
        rows.append((info.name, info.version, info.module, status))
    lines = format_table(rows, ("plugin", "version", "module", "status")).splitlines()
    print(lines[0])
    for line, info in zip(lines[1:], infos, strict=True):
        print(line)
        for kind, names in sorted(info.components.items()):
            print(f"    {kind}: {', '.join(n.partition(':')[2] or n for n in names)}")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print where an artifact came from, newest first."""
    from visionforge.lineage import format_chain, lineage_chain

    chain = lineage_chain(args.path)
    print(json.dumps(chain, indent=2) if args.json else format_chain(chain))
    return 0


# ----------------------------------------------------------------------------- parser

CLI_HOOK_ERRORS: dict[str, str] = {}
"""Plugins whose ``visionforge_cli`` hook failed while the parser was built: name -> error."""


def _recipe_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set trainer.epochs=3 (repeatable; YAML values)",
    )
    return parent


def _source_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, parents=[_recipe_options()])
    parent.add_argument("source", metavar="RECIPE|CKPT", help="recipe file or checkpoint")
    parent.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="weights for a RECIPE source (default: the run's best.ckpt, else last.ckpt)",
    )
    return parent


def _add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    recipe_opts = _recipe_options()
    source_opts = _source_options()

    p = sub.add_parser("train", parents=[recipe_opts], help="train a recipe with its runner")
    p.add_argument("recipe", metavar="RECIPE", help="recipe file (YAML/JSON, path or URL)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN|CKPT",
        help="continue a run: the newest run folder of this recipe, a RUN folder (its "
        "last.ckpt) or a checkpoint (e.g. RUN/epoch_0030.ckpt); default: start a new run in "
        "the first free folder of OUTPUT, OUTPUT-2, ...",
    )
    p.add_argument(
        "--exist-ok",
        action="store_true",
        help="start the new run in trainer.output even if it holds another run (overwrites)",
    )
    p.add_argument(
        "--allow-recipe-change",
        action="store_true",
        help="resume although the recipe's hash differs from the checkpoint's",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="return after submission and print the run id (see: visionforge runs)",
    )
    p.add_argument(
        "--upload-local",
        action="store_true",
        help="remote runners: upload the recipe's local input paths (else they are refused)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="remote runners: print the requests and start-up script they would send; "
        "upload and launch nothing",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", parents=[source_opts], help="evaluate a checkpoint")
    p.add_argument("--split", choices=("val", "train"), default="val", help="default: val")
    p.add_argument("--report", metavar="DIR", help="write the evaluator's reports (PNG/JSON)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", parents=[source_opts], help="detect objects / classify images")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or URLs")
    p.add_argument("--topk", type=int, default=5, help="classes shown per image (default: 5)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="detectors: folder (or URL) for the drawn PNGs and detections.json "
        "(default: predictions/ beside the checkpoint); IMAGE may be a folder or s3:// prefix",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        help="detectors: keep detections scoring at least this (default: 0.3)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="detectors: images per batch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", parents=[source_opts], help="export a model (ONNX, ...)")
    p.add_argument("--to", default="onnx", metavar="EXPORTER", help="exporter (default: onnx)")
    p.add_argument("--out", metavar="PATH", help="output file (default: beside the checkpoint)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's, 18)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("validate", parents=[recipe_opts], help="check a recipe")
    p.add_argument("recipe", metavar="RECIPE", help="recipe file (YAML/JSON, path or URL)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="JSON Schema of recipes with all installed components")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("new-plugin", help="write a new plugin package to start from")
    p.add_argument("name", metavar="NAME", help="visionforge-NAME, package visionforge_NAME")
    p.add_argument("--dir", default=".", metavar="DIR", help="parent folder (default: here)")
    p.set_defaults(func=cmd_new_plugin)

    p = sub.add_parser("plugins", help="list installed plugins and their components")
    p.set_defaults(func=cmd_plugins)

    from visionforge.runners.commands import add_runs_command

    add_runs_command(sub)

    p = sub.add_parser("lineage", help="print an artifact's lineage chain")
    p.add_argument("path", metavar="PATH", help="artifact (checkpoint, ONNX, run folder, ...)")
    p.add_argument("--json", action="store_true", help="print the manifests as JSON")
    p.set_defaults(func=cmd_lineage)


def _add_plugin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Let each plugin add its commands; one that fails is reported and skipped."""
    from visionforge.plugins import hook

    CLI_HOOK_ERRORS.clear()
    for impl in hook().visionforge_cli.get_hookimpls():
        try:
            impl.function(subparsers=sub)
        except Exception as err:
            CLI_HOOK_ERRORS[impl.plugin_name] = f"{type(err).__name__}: {_one_line(str(err))}"
            _note(
                f"warning: plugin {impl.plugin_name!r} could not add its commands: "
                f"{CLI_HOOK_ERRORS[impl.plugin_name]}"
            )


def build_parser() -> argparse.ArgumentParser:
    """The full parser, plugin commands included."""
    parser = argparse.ArgumentParser(
        prog="visionforge",
        description="Train, evaluate, export and trace vision models from recipe files.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"visionforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_commands(sub)
    _add_plugin_commands(sub)
    return parser


# ----------------------------------------------------------------------------- entry point


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"warning: {_one_line(str(message))}", file=sys.stderr)


def _report(err: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(err)
    if isinstance(err, ValidationError):
        text = format_validation_error(err, "")
    elif isinstance(err, VisionforgeError):
        text = str(err)
    else:
        hint = "" if debug else " (run with --debug for the traceback)"
        text = f"{type(err).__name__}: {err}{hint}"
    print(f"error: {_one_line(text) or type(err).__name__}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    arguments, debug = _pop_debug(list(sys.argv[1:] if argv is None else argv))
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning
        try:
            parser = build_parser()
        except VisionforgeError as err:  # e.g. a broken plugin under VISIONFORGE_STRICT_PLUGINS
            _report(err, debug)
            return err.exit_code
        try:
            args = parser.parse_args(arguments)
        except SystemExit as exit_request:
            return exit_request.code if isinstance(exit_request.code, int) else 2
        args.debug = debug
        func: Command = args.func
        try:
            return int(func(args) or 0)
        except KeyboardInterrupt:
            _note("interrupted")
            return 130
        except (VisionforgeError, ValidationError) as err:
            _report(err, debug)
            return err.exit_code if isinstance(err, VisionforgeError) else 2
        except Exception as err:
            _report(err, debug)
            return 1


def _pop_debug(arguments: list[str]) -> tuple[list[str], bool]:
    """Take ``--debug`` from anywhere before ``--`` (before or after the subcommand)."""
    end = arguments.index("--") if "--" in arguments else len(arguments)
    head = [a for a in arguments[:end] if a != "--debug"]
    return head + arguments[end:], len(head) < end


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]

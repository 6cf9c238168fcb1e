"""Recipes and component configs (pydantic v2), YAML/JSON loading and ``--set`` overrides."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visionforge import storage
from visionforge.errors import ConfigError, RegistryError
from visionforge.registry import REGISTRIES, Registry, validation_problems


class InputPathMarker:
    """Marks a config field as a file or folder the run reads (see :data:`InputPath`)."""

    def __repr__(self) -> str:
        return "InputPath"


InputPath = Annotated[str, InputPathMarker()]
"""A ``str`` field naming a local path or URL the run reads (a dataset root, an annotations
file, weights). ``visionforge validate`` checks that local ones exist, naming the field."""


class ComponentConfig(BaseModel):
    """Base class for the config of a registered component: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ComponentSpec(BaseModel):
    """A recipe block ``{type: NAME, **fields}``; fields are checked by the registry entry."""

    model_config = ConfigDict(extra="allow")

    type: str

    def fields(self) -> dict[str, Any]:
        """The block without ``type``."""
        return dict(self.model_extra or {})

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.fields()}


class ParamGroupRule(BaseModel):
    """Parameters whose name matches ``pattern`` (fnmatch glob) get their own lr/decay."""

    model_config = ConfigDict(extra="forbid")

    pattern: str
    lr_mult: float = 1.0
    weight_decay: float | None = None


class _OptimizerBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    no_decay_norm_and_bias: bool = Field(
        False, description="exclude normalization weights and biases from weight decay"
    )
    param_groups: list[ParamGroupRule] = Field(default_factory=list)
    reference_batch_size: int | None = Field(
        None, gt=0, description="scale lr by effective_batch / reference_batch_size"
    )


class SGDConfig(_OptimizerBase):
    type: Literal["sgd"] = "sgd"
    momentum: float = Field(0.0, ge=0)
    nesterov: bool = False


class AdamWConfig(_OptimizerBase):
    type: Literal["adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


OptimizerConfig = Annotated[SGDConfig | AdamWConfig, Field(discriminator="type")]


class ScheduleConfig(BaseModel):
    """Learning-rate schedule, stepped every optimizer step: linear warmup, then ``type``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["constant", "cosine", "step", "multistep"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_steps: int | None = Field(None, ge=0, description="overrides warmup_epochs")
    warmup_lr_init: float = Field(0.0, ge=0, description="lr at step 0 of the warmup")
    min_lr: float = Field(0.0, ge=0, description="cosine: final lr")
    step_epochs: float = Field(30.0, gt=0, description="step: decay every this many epochs")
    milestones: list[float] = Field(default_factory=list, description="multistep: epochs")
    gamma: float = Field(0.1, gt=0, description="step/multistep: decay factor")


class EMAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decay: float = Field(0.9998, gt=0, lt=1)
    warmup: bool = True
    evaluate: bool = Field(True, description="evaluate (and pick best) with the EMA weights")


LoggerName = Literal["console", "csv", "tensorboard", "mlflow", "wandb"]


def _default_loggers() -> list[LoggerName]:
    return ["console", "csv"]


class TrainerConfig(BaseModel):
    """How to train: loop length, device, precision, checkpointing and logging."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1, description="per process")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_accum_steps: int = Field(1, ge=1)
    clip_grad_norm: float | None = Field(None, gt=0)
    ema: EMAConfig | None = None
    compile: bool = False
    channels_last: bool = False
    eval_every_epochs: int = Field(1, ge=1)
    checkpoint_every_steps: int | None = Field(None, ge=1, description="besides every epoch")
    keep_epoch_checkpoints: bool = Field(
        False, description="also keep epoch_NNNN.ckpt after every epoch (resume from any epoch)"
    )
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cut epochs short")
    output: str | None = Field(None, description="local path or fsspec URL; runs/<name>")
    loggers: list[LoggerName] = Field(default_factory=_default_loggers)
    log_every_steps: int | None = Field(
        None, ge=1, description="default: every step for runs of up to 1000 steps, else 10"
    )
    csv_log_steps: bool = Field(False, description="metrics.csv also gets a row per log step")
    train_metrics: bool = Field(
        False, description="also run the evaluator on training batches (train/<metric>)"
    )
    drop_last: bool = Field(
        True, description="skip the last incomplete global batch of each epoch (reshuffled)"
    )
    deterministic: bool = False
    init_checkpoint: InputPath | None = Field(None, description="weights to start from")


class MixupConfig(BaseModel):
    """timm Mixup/CutMix on training batches; labels become soft targets."""

    model_config = ConfigDict(extra="forbid")

    mixup_alpha: float = Field(0.2, ge=0)
    cutmix_alpha: float = Field(1.0, ge=0)
    prob: float = Field(1.0, ge=0, le=1)
    switch_prob: float = Field(0.5, ge=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    num_classes: int = Field(..., ge=2)


class LoaderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_workers: int | None = Field(
        None,
        ge=0,
        description="loader processes; default: the CPUs this process may use divided by the "
        "processes per machine, at most 8 (0: load in the training process)",
    )
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = Field(None, ge=1)
    backend: Literal["torch", "dali"] = Field(
        "torch",
        description="torch: DataLoader worker processes; dali: an NVIDIA DALI pipeline built by "
        "the dataset (num_workers = its CPU threads; nvJPEG on a CUDA training device), for "
        "datasets that offer one (imagenet_folder); exact resume on the same backend only",
    )
    backend_fallback: Literal["warn", "error"] = Field(
        "warn",
        description="when the backend or the decoder cannot run here (DALI not installed, no "
        "CUDA for device decoding): warn = one log line naming what is missing, then the "
        "torch/CPU path; error = stop with that line",
    )


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: ComponentSpec
    val: ComponentSpec | None = None
    loader: LoaderConfig = Field(default_factory=LoaderConfig)
    mixup: MixupConfig | None = None
    normalize_on_device: tuple[list[float], list[float]] | None = Field(
        None, description="(mean, std): normalize uint8 batches on the training device"
    )


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = "onnx"


TRAINER_FIELDS_NOT_HASHED = frozenset(
    {
        "output",
        "epochs",
        "device",
        "compile",
        "loggers",
        "log_every_steps",
        "csv_log_steps",
        "eval_every_epochs",
        "checkpoint_every_steps",
        "keep_epoch_checkpoints",
        "train_metrics",
    }
)
"""Trainer fields that say where, how long or how visibly a run goes, not what it trains."""


class Recipe(BaseModel):
    """A whole training recipe; component blocks are checked with :meth:`check_components`."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str | None = None
    model: ComponentSpec
    data: DataConfig
    loss: ComponentSpec = Field(default_factory=lambda: ComponentSpec(type="cross_entropy"))
    optimizer: OptimizerConfig = Field(default_factory=SGDConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    evaluator: ComponentSpec | None = None
    teacher: ComponentSpec | None = Field(
        None, description="a frozen module (models registry) whose outputs reach the loss"
    )
    runner: ComponentSpec = Field(default_factory=lambda: ComponentSpec(type="local"))
    export: ExportConfig | None = None

    @model_validator(mode="after")
    def _default_output(self) -> Recipe:
        if self.trainer.output is None:
            self.trainer.output = str(Path("runs") / (self.name or "run"))
        return self

    def component_blocks(self) -> list[tuple[str, Registry[Any], ComponentSpec]]:
        """(dotted path, registry, block) for every component block present."""
        blocks: list[tuple[str, Registry[Any], ComponentSpec | None]] = [
            ("model", REGISTRIES.models, self.model),
            ("data.train", REGISTRIES.datasets, self.data.train),
            ("data.val", REGISTRIES.datasets, self.data.val),
            ("loss", REGISTRIES.losses, self.loss),
            ("evaluator", REGISTRIES.evaluators, self.evaluator),
            ("teacher", REGISTRIES.models, self.teacher),
            ("runner", REGISTRIES.runners, self.runner),
        ]
        if self.export is not None:
            export_spec = ComponentSpec.model_validate(self.export.model_dump())
            blocks.append(("export", REGISTRIES.exporters, export_spec))
        return [(p, r, b) for p, r, b in blocks if b is not None]

    def check_components(self) -> None:
        """Validate every block with its registry entry; raise ConfigError naming the path."""
        for path, registry, block in self.component_blocks():
            registry.validate(block.as_dict(), path)

    def missing_inputs(self) -> list[tuple[str, str]]:
        """(dotted field, path) of every local :data:`InputPath` that does not exist."""
        return [
            (f, p)
            for f, p in self.input_paths()
            if not storage.is_remote(p) and not Path(p).expanduser().exists()
        ]

    def input_paths(self) -> list[tuple[str, str]]:
        """(dotted field, path or URL) of every :data:`InputPath` the recipe sets (remote
        runners upload or refuse the local ones)."""
        configs: list[tuple[str, BaseModel]] = [("trainer", self.trainer)]
        for path, registry, block in self.component_blocks():
            configs.append((path, registry.validate(block.as_dict(), path)))
        return [
            (f"{prefix}.{name}", value)
            for prefix, config in configs
            for name, value in _input_paths(config)
        ]

    def sha256(self) -> str:
        """The recipe hash (lineage, resume checks): what defines the trained model.

        It covers ``model``, ``data`` (not ``data.loader``), ``loss``, ``optimizer``,
        ``schedule``, ``teacher`` (when set) and the trainer fields that change the weights
        (seed, batch size, precision, ...), not where or how long a run goes:
        ``trainer.output``, ``epochs``, loggers, checkpointing and logging intervals,
        ``runner``, ``evaluator``, ``export`` and ``name`` stay out
        (see :data:`TRAINER_FIELDS_NOT_HASHED`).
        """
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def identity(self) -> dict[str, Any]:
        """The part of the recipe that :meth:`sha256` hashes, as JSON-ready data."""
        data = self.model_dump(mode="json")
        hashed = {key: data[key] for key in ("model", "data", "loss", "optimizer", "schedule")}
        hashed["data"] = {k: v for k, v in hashed["data"].items() if k != "loader"}
        if data.get("teacher") is not None:  # absent: the hash of teacher-less recipes is kept
            hashed["teacher"] = data["teacher"]
        hashed["trainer"] = {
            k: v for k, v in data["trainer"].items() if k not in TRAINER_FIELDS_NOT_HASHED
        }
        return hashed

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def _input_paths(config: BaseModel) -> list[tuple[str, str]]:
    """(field name, value) of the set :data:`InputPath` fields of ``config``."""
    found = []
    for name, info in type(config).model_fields.items():
        value = getattr(config, name)
        marked = any(isinstance(m, InputPathMarker) for m in info.metadata)
        if isinstance(value, str) and (marked or _marks_input_path(info.annotation)):
            found.append((name, value))
    return found


def _marks_input_path(annotation: Any) -> bool:
    """True for ``InputPath`` nested in the annotation (``InputPath | None``)."""
    if get_origin(annotation) is Annotated:
        return any(isinstance(m, InputPathMarker) for m in get_args(annotation)[1:])
    return any(_marks_input_path(arg) for arg in get_args(annotation))


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"trainer.epochs=3"`` -> (["trainer", "epochs"], 3); values are parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. trainer.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` override set."""
    result = json.loads(json.dumps(data))
    for item in overrides:
        keys, value = parse_override(item)
        node: Any = result
        for i, key in enumerate(keys[:-1]):
            child = node.get(key) if isinstance(node, dict) else None
            if child is None:
                child = {}
                node[key] = child
            elif not isinstance(child, dict):
                where = ".".join(keys[: i + 1])
                raise ConfigError(f"--set {item!r}: {where} is not a block")
            node = child
        node[keys[-1]] = value
    return result


def read_recipe_data(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a YAML/JSON recipe file or URL into a dict, with line-numbered syntax errors."""
    text_path = os.fspath(path)
    text = storage.read_text(text_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{text_path}{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{text_path}: a recipe must be a mapping of blocks (model, data, ...)")
    return data


def recipe_from_dict(
    data: Mapping[str, Any],
    overrides: Iterable[str] = (),
    source: str = "recipe",
    check: bool = True,
) -> Recipe:
    """Validate a recipe dict (after overrides); errors are one line naming the field."""
    overrides = list(overrides)
    merged = apply_overrides(dict(data), overrides)
    try:
        recipe = Recipe.model_validate(merged)
    except ValidationError as err:
        problems = validation_problems(err, "", Recipe)
        lines = [f"{blame(loc, overrides, source)}: {loc}: {msg}" for loc, msg in problems]
        raise ConfigError("; ".join(lines), paths=[loc for loc, _ in problems]) from None
    if check:
        try:
            recipe.check_components()
        except (ConfigError, RegistryError) as err:
            where = blame_all(err.paths, overrides, source)
            raise type(err)(f"{where}: {err}", paths=err.paths) from None
    return recipe


def blame(field: str, overrides: Iterable[str], source: str) -> str:
    """``--set ITEM`` when an override set ``field`` (or a block around it), else ``source``."""
    for item in reversed(list(overrides)):
        key = item.partition("=")[0].strip()
        if field == key or field.startswith(f"{key}.") or key.startswith(f"{field}."):
            return f"--set {item}"
    return source


def blame_all(fields: Iterable[str], overrides: Iterable[str], source: str) -> str:
    """The one origin of all ``fields`` (see :func:`blame`), else ``source``."""
    overrides = list(overrides)
    origins = {blame(field, overrides, source) for field in fields}
    return origins.pop() if len(origins) == 1 else source


def load_recipe(
    path: str | os.PathLike[str], overrides: Iterable[str] = (), check: bool = True
) -> Recipe:
    """Load, override and validate a recipe file (local path or fsspec URL)."""
    data = read_recipe_data(path)
    data.setdefault("name", Path(os.fspath(path)).stem)  # runs/<name>: the file, not its folder
    return recipe_from_dict(data, overrides, source=os.fspath(path), check=check)


def recipe_json_schema() -> dict[str, Any]:
    """JSON Schema of a recipe with every installed component's fields per ``type``."""
    schema = Recipe.model_json_schema()
    defs = schema.setdefault("$defs", {})
    kinds = {
        "model": REGISTRIES.models,
        "dataset": REGISTRIES.datasets,
        "loss": REGISTRIES.losses,
        "evaluator": REGISTRIES.evaluators,
        "runner": REGISTRIES.runners,
        "exporter": REGISTRIES.exporters,
    }
    for kind, registry in kinds.items():
        variants = []
        for entry in registry.entries():
            sub = entry.config.model_json_schema(ref_template="#/$defs/{model}")
            defs.update(sub.pop("$defs", {}))
            sub.setdefault("properties", {})["type"] = {
                "enum": [entry.name, entry.qualified_name],
                "description": entry.description,
            }
            sub["required"] = ["type", *sub.get("required", [])]
            sub["title"] = entry.qualified_name
            variants.append(sub)
        defs[f"{kind}_component"] = {"oneOf": variants} if variants else {"type": "object"}
    props = schema["properties"]
    props["model"] = {"$ref": "#/$defs/model_component"}
    props["loss"] = {"$ref": "#/$defs/loss_component"}
    props["evaluator"] = {"$ref": "#/$defs/evaluator_component"}
    props["teacher"] = {"anyOf": [{"$ref": "#/$defs/model_component"}, {"type": "null"}]}
    props["runner"] = {"$ref": "#/$defs/runner_component"}
    data_props = defs["DataConfig"]["properties"]
    data_props["train"] = {"$ref": "#/$defs/dataset_component"}
    data_props["val"] = {"$ref": "#/$defs/dataset_component"}
    return schema

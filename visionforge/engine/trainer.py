"""The Trainer: builds a recipe's components and runs the training loop.

One optimizer step is ``grad_accum_steps`` micro-batches of ``outputs = model(batch)``,
``losses = loss(outputs, batch)``. See docs/engine.md for resume, DDP and schedule details.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import random
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from visionforge import plugins, storage
from visionforge.config import Recipe, recipe_from_dict
from visionforge.engine import distributed
from visionforge.engine.averaging import accumulate, global_means
from visionforge.engine.batch import ImagePreparer, move_to_device
from visionforge.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    build_model,
    load_checkpoint,
    load_state_strict,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from visionforge.engine.data import (
    ResumableSampler,
    SeededDataset,
    batch_seed,
    make_loader,
    seed_host_rngs,
)
from visionforge.engine.evaluation import (
    autocast_for,
    build_evaluator,
    category_ids_of,
    eval_loader,
    label_map,
    model_label_map,
    run_evaluation,
    share_class_names,
    to_model_labels,
    with_predictions,
)
from visionforge.engine.frozen import build_frozen_modules, frozen_input_paths, nested_strings
from visionforge.engine.label_space import adopt_label_space
from visionforge.engine.loggers import (
    ConsoleLogger,
    Logger,
    MLflowLogger,
    TensorBoardLogger,
    WandbLogger,
    flatten,
    plot_curves,
    require_installed,
    write_csv,
)
from visionforge.engine.optim import build_optimizer, build_scheduler
from visionforge.engine.output import RunOutput
from visionforge.engine.signals import StopSignal
from visionforge.errors import CheckpointError, ConfigError, VisionforgeError
from visionforge.interfaces import (
    BatchLoader,
    Dataset,
    Evaluator,
    Loss,
    NamedClasses,
    StatefulEvaluator,
)
from visionforge.lineage import MANIFEST_SUFFIX, manifest_path, write_manifest
from visionforge.registry import OBJECT_NAMESPACE, REGISTRIES
from visionforge.run_folder import BEST, LAST, check_new_run_folder, clear_run_folder

SHORT_RUN_STEPS = 1000
"""Runs of at most this many optimizer steps log every step (unless log_every_steps is set)."""
DEFAULT_LOG_EVERY_STEPS = 10


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    metrics: dict[str, float]
    best_metric: float | None
    output: str
    last_checkpoint: str
    best_checkpoint: str | None
    stopped_by_signal: bool


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


class Trainer:
    """Trains ``recipe`` into ``trainer.output`` (a folder that holds no other run, unless
    ``exist_ok``; :func:`visionforge.run_folder.new_run_folder` picks a fresh one).

    ``resume=True`` continues from ``last.ckpt`` in ``trainer.output`` when there is one, else
    starts there (what a runner restarting its own job wants); ``resume="path/or/url.ckpt"``
    continues from that checkpoint (e.g. ``epoch_0030.ckpt``). A checkpoint written by a
    recipe with another :meth:`~visionforge.config.Recipe.sha256` is refused unless
    ``allow_recipe_change`` (more ``trainer.epochs`` keep the hash).
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        resume: bool | str = False,
        exist_ok: bool = False,
        allow_recipe_change: bool = False,
        components: Components | None = None,
    ) -> None:
        given = components or Components()
        self.recipe = recipe
        self.cfg = cfg = recipe.trainer
        self.output: str = cfg.output or "runs/run"
        self.resume = resume
        self.allow_recipe_change = allow_recipe_change
        if not resume and not exist_ok:
            check_new_run_folder(self.output)
        require_installed(cfg.loggers)
        self.dist = distributed.setup(cfg.device)
        if not resume and exist_ok and self.dist.is_main:
            clear_run_folder(self.output)
        self.device = self.dist.device
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = self.device.type == "cuda" and not cfg.deterministic
        seed_everything(cfg.seed)  # identical initial weights on every rank

        self.train_set: Any = given.train_set
        if self.train_set is None:
            self.train_set = REGISTRIES.datasets.build(recipe.data.train.as_dict(), "data.train")
        self.val_set: Any = given.val_set
        if self.val_set is None and recipe.data.val is not None:
            self.val_set = REGISTRIES.datasets.build(recipe.data.val.as_dict(), "data.val")
        self.class_names: list[str] | None = _class_names(self.train_set)

        self.model: nn.Module = given.model if given.model is not None else build_model(recipe)
        adopt_label_space(self.model, self.train_set)
        if cfg.init_checkpoint is not None:
            init = load_checkpoint(cfg.init_checkpoint)
            load_state_strict(self.model, init["model"], cfg.init_checkpoint)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_fn: Any = given.loss
        if self.loss_fn is None:
            self.loss_fn = REGISTRIES.losses.build(recipe.loss.as_dict(), "loss")
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn.to(self.device)
        # frozen modules (a teacher) stay outside the model: no checkpoint, EMA, DDP, optimizer
        self.frozen = build_frozen_modules(
            recipe, self.device, autocast_for(self.device, cfg.precision)
        )
        self.loss_fn = self.frozen.feeding(self.loss_fn)
        self.evaluator = self._build_evaluator(given.evaluator)
        self.train_evaluator = (
            self._build_evaluator(copy.deepcopy(given.evaluator)) if cfg.train_metrics else None
        )

        self._build_data()
        world_batch = cfg.batch_size * self.dist.world_size
        self.effective_batch = world_batch * cfg.grad_accum_steps
        self.optimizer = build_optimizer(self.model, recipe.optimizer, self.effective_batch)
        self.scheduler = build_scheduler(
            self.optimizer, recipe.schedule, self.steps_per_epoch, cfg.epochs
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.ema = self._build_ema()
        self.mixup = self._build_mixup()
        self.autocast = autocast_for(self.device, cfg.precision)
        self.prepare = ImagePreparer(recipe.data.normalize_on_device, cfg.channels_last)

        torch.manual_seed(cfg.seed + self.dist.rank)  # each rank its own dropout stream
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.train_model = cast(nn.Module, torch.compile(self.train_model))

        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_metric: float | None = None
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.run_output = RunOutput(self.output)
        self._rng_to_restore: Mapping[str, Any] | None = None
        self._best_written = False
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}  # steps that reported each key
        self._count = 0
        self._parents: list[str] | None = None
        if resume:
            self._restore()

    @classmethod
    def from_objects(
        cls,
        model: nn.Module,
        train_set: Dataset,
        *,
        val_set: Dataset | None = None,
        loss: Loss | None = None,
        evaluator: Evaluator | None = None,
        settings: Mapping[str, Any] | None = None,
        resume: bool | str = False,
        exist_ok: bool = False,
    ) -> Trainer:
        """A trainer of objects you made instead of registered components.

        ``settings`` holds the other recipe blocks as a dict (``name``, ``trainer``,
        ``optimizer``, ``schedule``, ``data: {loader: ...}``, ``loss`` when ``loss`` is not
        given: the default is ``cross_entropy``). The stored recipe names each object by its
        class (``object:package.module.Class``): ``visionforge eval`` cannot rebuild those,
        so evaluate them in Python (:meth:`validate`) or register the components.
        """
        data = json.loads(json.dumps(dict(settings or {})))  # a deep copy, JSON-safe
        data["model"] = object_block(model)
        data["data"] = {**data.get("data", {}), "train": object_block(train_set)}
        if val_set is not None:
            data["data"]["val"] = object_block(val_set)
        if loss is not None:
            data["loss"] = object_block(loss)
        if evaluator is not None:
            data["evaluator"] = object_block(evaluator)
        recipe = recipe_from_dict(data, source="Trainer.from_objects settings", check=False)
        components = Components(model, train_set, val_set, loss, evaluator)
        return cls(recipe, resume=resume, exist_ok=exist_ok, components=components)

    # ----------------------------------------------------------------- building
    def _build_evaluator(self, given: Evaluator | None) -> Evaluator | None:
        if given is None:
            return build_evaluator(self.recipe, self.train_set)
        share_class_names(self.train_set, given)
        return given

    def _build_data(self) -> None:
        cfg = self.cfg
        self.sampler = ResumableSampler(
            len(self.train_set),
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            drop_last=cfg.drop_last,
        )
        micro = self.sampler.batches_per_rank
        if micro == 0:
            raise ConfigError(
                f"data.train: {len(self.train_set)} samples are fewer than one batch of "
                f"{cfg.batch_size} x {self.dist.world_size} process(es); lower trainer.batch_size"
            )
        self.micro_batches_per_epoch = micro
        steps = math.ceil(micro / cfg.grad_accum_steps)
        if cfg.max_steps_per_epoch is not None:
            steps = min(steps, cfg.max_steps_per_epoch)
        self.steps_per_epoch = steps
        self.log_every_steps = cfg.log_every_steps or (
            1 if steps * cfg.epochs <= SHORT_RUN_STEPS else DEFAULT_LOG_EVERY_STEPS
        )
        pin = self.device.type == "cuda" and self.recipe.data.loader.pin_memory
        self.loader = make_loader(
            SeededDataset(self.train_set, cfg.seed),
            self.sampler,
            cfg.batch_size,
            self.recipe.data.loader,
            cfg.seed,
            pin,
            self.device,
        )
        self.val_loader = (
            eval_loader(
                self.val_set,
                self.recipe,
                pin,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
                device=self.device,
            )
            if self.val_set is not None
            else None
        )

    def _build_ema(self) -> Any | None:
        ema_cfg = self.cfg.ema
        if ema_cfg is None:
            return None
        from timm.utils import ModelEmaV3

        return ModelEmaV3(self.model, decay=ema_cfg.decay, use_warmup=ema_cfg.warmup)

    def _build_mixup(self) -> Callable[[torch.Tensor, torch.Tensor], Any] | None:
        mix = self.recipe.data.mixup
        if mix is None:
            return None
        if self.cfg.batch_size % 2:
            raise ConfigError(
                f"trainer.batch_size: mixup/cutmix needs an even batch size (got "
                f"{self.cfg.batch_size})"
            )
        from timm.data import Mixup

        return cast(
            Callable[[torch.Tensor, torch.Tensor], Any],
            Mixup(
                mixup_alpha=mix.mixup_alpha,
                cutmix_alpha=mix.cutmix_alpha,
                prob=mix.prob,
                switch_prob=mix.switch_prob,
                label_smoothing=mix.label_smoothing,
                num_classes=mix.num_classes,
            ),
        )

    def _build_loggers(self) -> tuple[ConsoleLogger, list[Logger]]:
        cfg = self.cfg
        main = self.dist.is_main
        console = ConsoleLogger(cfg.epochs, enabled=main and "console" in cfg.loggers)
        loggers: list[Logger] = [console]
        if not main:
            return console, loggers
        name = self.recipe.name or "run"
        if "tensorboard" in cfg.loggers:
            purge = self.global_step if self.global_step > 0 else None
            loggers.append(TensorBoardLogger(self.run_output.local("tensorboard"), purge))
        if "mlflow" in cfg.loggers:
            loggers.append(MLflowLogger(name, flatten(self.recipe.model_dump(mode="json"))))
        if "wandb" in cfg.loggers:
            loggers.append(WandbLogger(name, self.recipe.model_dump(mode="json")))
        return console, loggers

    # ----------------------------------------------------------------- resume
    def _restore(self) -> None:
        source = self.resume if isinstance(self.resume, str) else self.run_output.fetch(LAST)
        if source is None:
            if self.dist.is_main:
                print(f"note: no {LAST} in {self.output}; starting from scratch")
            return
        ckpt = load_checkpoint(source)
        if not self.allow_recipe_change:
            self._check_same_recipe(ckpt, source)
        load_state_strict(self.model, ckpt["model"], source)
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise CheckpointError(f"{source}: has no EMA weights but trainer.ema is set")
            load_state_strict(self.ema.module, ckpt["ema"], source)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(
                f"{source}: optimizer state does not fit ({err}); the optimizer or "
                "param_groups changed since it was written"
            ) from None
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self._check_batch_settings(ckpt, source)
        self._check_data_backend(ckpt, source)
        position = ckpt["position"]
        self.epoch = int(position["epoch"])
        self.step_in_epoch = int(position["step_in_epoch"])
        self.global_step = int(position["global_step"])
        self.metrics = dict(ckpt.get("metrics") or {})
        self.best_metric = ckpt.get("best_metric")
        self.history = list(ckpt.get("history") or [])
        epoch_sums = ckpt.get("epoch_sums") or {}
        self._sums = {k: v.to(self.device) for k, v in epoch_sums.get("sums", {}).items()}
        self._count = int(epoch_sums.get("count", 0))
        self._counts = dict(epoch_sums.get("counts") or dict.fromkeys(self._sums, self._count))
        evaluator_state = ckpt.get("train_evaluator")
        if isinstance(self.train_evaluator, StatefulEvaluator) and evaluator_state is not None:
            self.train_evaluator.load_state_dict(evaluator_state)
        self._best_written = self.best_metric is not None
        rng = ckpt["rng"]
        per_rank = rng.get("per_rank") or []
        self._rng_to_restore = (
            per_rank[self.dist.rank] if len(per_rank) == self.dist.world_size else rng
        )
        if self.dist.is_main:
            print(
                f"resuming from {source}: epoch {self.epoch + 1}, step {self.step_in_epoch} "
                f"of {self.steps_per_epoch} (global step {self.global_step})"
            )

    def _check_same_recipe(self, ckpt: Mapping[str, Any], source: str) -> None:
        """Refuse a checkpoint of another recipe (another :meth:`Recipe.sha256`)."""
        try:
            before = Recipe.model_validate(ckpt["recipe"])
        except Exception as err:
            raise CheckpointError(f"{source}: stored recipe is invalid: {err}") from None
        if before.sha256() == self.recipe.sha256():
            return
        changed = _changed_fields(before.identity(), self.recipe.identity())
        raise CheckpointError(
            f"{source}: written by another recipe (hash {before.sha256()[:12]}, now "
            f"{self.recipe.sha256()[:12]}; changed: {', '.join(changed[:4])}"
            f"{' ...' if len(changed) > 4 else ''}); resume with the recipe it was written "
            "with, or allow it with --allow-recipe-change (Trainer(allow_recipe_change=True))"
        )

    def _check_batch_settings(self, ckpt: Mapping[str, Any], source: str) -> None:
        """Say so when the data position cannot map exactly (batch layout changed)."""
        before = ckpt.get("recipe", {}).get("trainer", {})
        per_rank = ckpt["rng"].get("per_rank") or [None]
        old = (before.get("batch_size"), before.get("grad_accum_steps"), len(per_rank))
        new = (self.cfg.batch_size, self.cfg.grad_accum_steps, self.dist.world_size)
        if old != new and self.dist.is_main:
            print(
                f"note: {source} was written with batch_size, grad_accum_steps, processes = "
                f"{old}, now {new}; the epoch position is kept in optimizer steps, so the "
                "rest of this epoch will not match the interrupted run exactly"
            )

    @property
    def data_backend(self) -> str:
        """What loads the training batches: ``torch`` or the dataset's own loader's name."""
        return self.loader.backend if isinstance(self.loader, BatchLoader) else "torch"

    def _check_data_backend(self, ckpt: Mapping[str, Any], source: str) -> None:
        """Say so when the batches came from another loader backend (exact resume is only
        promised on the same one)."""
        before = ckpt.get("data_backend", "torch")
        if before != self.data_backend and self.dist.is_main:
            print(
                f"note: {source} was trained with the {before} data backend, now "
                f"{self.data_backend}; the crops and flips stay the same but decoded pixels "
                "differ slightly, so the rest of this run will not match the interrupted run "
                "exactly"
            )

    # ----------------------------------------------------------------- fit
    def fit(self) -> TrainResult:
        """Train to the end (or until SIGTERM/SIGINT) and return the result."""
        started = time.monotonic()
        hooks = plugins.trainer_hooks()
        self._step_hook = hooks.train_step_end if hooks.has_train_step_end() else None
        self.console, self.loggers = self._build_loggers()
        if self.sampler.dropped_per_epoch and self.dist.is_main:
            self.console.message(
                f"note: trainer.drop_last leaves {self.sampler.dropped_per_epoch} of "
                f"{len(self.train_set)} samples out of each epoch (a different set every epoch)"
            )
        stopped = False
        try:
            with StopSignal() as self._signal:
                try:
                    if self.dist.is_main:
                        recipe_json = json.dumps(self.recipe.model_dump(mode="json"), indent=2)
                        storage.write_bytes_atomic(
                            self.run_output.local("recipe.json"), recipe_json.encode()
                        )
                        self.run_output.publish("recipe.json")
                    hooks.train_start(self)
                    self.scheduler.step_update(num_updates=self.global_step)
                    if self._rng_to_restore is not None:
                        restore_rng_state(self._rng_to_restore)
                    self.train_model.train()
                    if self.epoch < self.cfg.epochs and self._stop_requested(logging_step=True):
                        self._save(LAST)  # stopped before its first step: still a checkpoint
                        stopped = True
                    while self.epoch < self.cfg.epochs and not stopped:
                        stopped = self._train_epoch()
                        if not stopped:
                            self._end_epoch()  # writes last.ckpt
                            more = self.epoch < self.cfg.epochs
                            stopped = more and self._stop_requested(logging_step=True)
                    self._finish(time.monotonic() - started, stopped)
                except BaseException as err:
                    self._record_failure(time.monotonic() - started, err)
                    raise
            hooks.train_end(self, self.metrics)
        finally:
            for logger in self.loggers:
                logger.close()
            self.run_output.cleanup()
            self.dist.close()
        best = self.run_output.target(BEST) if self._best_written else None
        return TrainResult(
            metrics=dict(self.metrics),
            best_metric=self.best_metric,
            output=self.output,
            last_checkpoint=self.run_output.target(LAST),
            best_checkpoint=best,
            stopped_by_signal=stopped,
        )

    def _train_epoch(self) -> bool:
        """Run the rest of the current epoch; True if a stop signal ended it early."""
        cfg = self.cfg
        accum = cfg.grad_accum_steps
        self.sampler.set_position(self.epoch, self.step_in_epoch * accum * cfg.batch_size)
        if self.train_evaluator is not None and self.step_in_epoch == 0:
            self.train_evaluator.reset()
        self.console.start_epoch(self.epoch, self.steps_per_epoch, self.step_in_epoch)
        if self.step_in_epoch == 0:
            self._sums, self._counts, self._count = {}, {}, 0
        logged_sums, logged_count = dict(self._sums), dict(self._counts)
        batches = iter(self.loader)
        try:
            return self._run_steps(batches, logged_sums, logged_count)
        finally:
            del batches  # shut the loader's workers down now, after the checkpoint

    def _run_steps(
        self,
        batches: Iterator[Any],
        logged_sums: dict[str, torch.Tensor],
        logged_count: dict[str, int],
    ) -> bool:
        cfg = self.cfg
        accum = cfg.grad_accum_steps
        while self.step_in_epoch < self.steps_per_epoch:
            first = self.step_in_epoch * accum
            micro = min(accum, self.micro_batches_per_epoch - first)
            for index in range(micro):
                losses = self._micro_step(
                    next(batches), first + index, micro, last=index == micro - 1
                )
                accumulate(self._sums, self._counts, losses)
                self._count += 1
            self._optimizer_step()
            self.console.advance()
            logging_step = self.global_step % self.log_every_steps == 0
            if logging_step:
                self._log_step(logged_sums, logged_count)
                logged_sums, logged_count = dict(self._sums), dict(self._counts)
            if self._step_hook is not None:
                scalars = {k: float(v.detach()) for k, v in losses.items()}
                self._step_hook(trainer=self, step=self.global_step, losses=scalars)
            if self._stop_requested(logging_step):
                self._save(LAST)
                return True
            if cfg.checkpoint_every_steps and self.global_step % cfg.checkpoint_every_steps == 0:
                self._save(LAST)
        return False

    def _micro_step(
        self, raw: Any, batch_index: int, micro: int, last: bool
    ) -> Mapping[str, torch.Tensor]:
        batch = self.prepare(move_to_device(raw, self.device, non_blocking=True))
        if self.mixup is not None and "label" in batch:
            # timm's Mixup draws from numpy/python: seed them per batch (resume, workers)
            seed_host_rngs(batch_seed(self.cfg.seed, self.epoch, batch_index))
            image, label = self.mixup(batch["image"], batch["label"])
            batch = {**batch, "image": image, "label": label}
        sync = last or not self.dist.enabled
        no_sync = getattr(self.train_model, "no_sync", None)
        context = contextlib.nullcontext() if sync or no_sync is None else no_sync()
        # targets in the model's label space (official COCO-id heads); the evaluator keeps
        # the dataset's, as it gets predictions mapped back
        model_batch = to_model_labels(batch, model_label_map(self.model, self.train_set))
        with context:
            with self.autocast():
                outputs = self.train_model(model_batch)
                losses = self.loss_fn(outputs, model_batch)
            if "loss" not in losses:
                raise ConfigError(
                    f"loss: {self.recipe.loss.type!r} returned {sorted(losses)}; "
                    "a loss must return its total under 'loss'"
                )
            total = losses["loss"] / micro if micro > 1 else losses["loss"]
            self.scaler.scale(total).backward()
        if self.train_evaluator is not None:
            detached = {
                k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in outputs.items()
            }
            mapping = label_map(self.model, self.train_set)
            self.train_evaluator.update(
                with_predictions(self.model, detached, batch, mapping), batch
            )
        return cast(Mapping[str, torch.Tensor], losses)

    def _optimizer_step(self) -> None:
        if self.cfg.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.step_in_epoch += 1
        self.scheduler.step_update(num_updates=self.global_step)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def _stop_requested(self, logging_step: bool) -> bool:
        requested = self._signal.requested
        if self.dist.enabled:
            # a collective, so every rank stops at the same step; only at log intervals
            return self.dist.any_true(requested) if logging_step else False
        return requested

    def current_lr(self) -> float:
        """The schedule's lr (of the first group with lr_mult 1)."""
        groups = self.optimizer.param_groups
        group = next((g for g in groups if g.get("lr_mult", 1.0) == 1.0), groups[0])
        return float(group["lr"])

    def _log_step(
        self, since_sums: Mapping[str, torch.Tensor], since_counts: Mapping[str, int]
    ) -> None:
        """Log the mean losses of the steps since the previous log (rank 0); each key is
        averaged over the steps that reported it."""
        if not self.dist.is_main:
            return
        row = {
            f"train/{k}": (float(v) - float(since_sums.get(k, 0.0))) / steps
            for k, v in self._sums.items()
            if (steps := self._counts.get(k, 0) - since_counts.get(k, 0)) > 0
        }
        if not row:
            return
        row["lr"] = self.current_lr()
        step_row = {"kind": "step", "epoch": self.epoch + 1, "step": self.global_step, **row}
        self.history.append(step_row)  # epoch: the one in progress, counted from 1
        for logger in self.loggers:
            logger.log_step(self.global_step, row)

    # ----------------------------------------------------------------- epoch end
    def _epoch_train_metrics(self) -> dict[str, float]:
        means = global_means(self._sums, self._counts, self.device)  # a collective
        metrics = {f"train/{k}": v for k, v in means.items()}
        if self.train_evaluator is not None:
            computed = self.train_evaluator.compute()
            metrics.update({f"train/{k}": float(v) for k, v in computed.items()})
        metrics["lr"] = self.current_lr()
        return metrics

    def primary_metric(self) -> tuple[str, str]:
        """(metric name, "max"|"min") used to pick the best checkpoint."""
        if self.evaluator is not None:
            return f"val/{self.evaluator.primary_metric}", self.evaluator.mode
        return "val/loss", "min"

    def _end_epoch(self) -> None:
        metrics = self._epoch_train_metrics()
        is_last = self.epoch + 1 == self.cfg.epochs
        improved = False
        if self.val_loader is not None and (
            (self.epoch + 1) % self.cfg.eval_every_epochs == 0 or is_last
        ):
            # every rank evaluates its share; the metrics are gathered, equal on all ranks
            metrics.update({f"val/{k}": v for k, v in self.validate().items()})
            improved = self._update_best(metrics)
        self.metrics = metrics
        if self.dist.is_main:
            self.history.append(
                {"kind": "epoch", "epoch": self.epoch + 1, "step": self.global_step, **metrics}
            )
            for logger in self.loggers:
                logger.log_epoch(self.epoch, self.global_step, metrics)
        plugins.trainer_hooks().epoch_end(self, self.epoch + 1, metrics)
        self.epoch += 1
        self.step_in_epoch = 0
        self._save(LAST, best=improved, epoch_end=True)
        if self.dist.is_main:
            self._write_logs()

    def validate(self) -> dict[str, float]:
        """Evaluate the (EMA, when ``ema.evaluate``) model on the validation set: the
        evaluator's metrics, else the mean losses. Works before :meth:`fit` too."""
        if self.val_loader is None:
            raise ConfigError(
                "data.val: validate() needs a validation dataset; add a data.val block "
                "(Trainer.from_objects: val_set=...)"
            )
        ema_cfg = self.cfg.ema
        model = self.ema.module if self.ema is not None and ema_cfg and ema_cfg.evaluate else None
        return run_evaluation(
            model or self.model,
            self.val_loader,
            self.device,
            evaluator=self.evaluator,
            loss_fn=self.loss_fn,
            prepare=self.prepare,
            autocast=self.autocast,
            progress=self.dist.is_main and "console" in self.cfg.loggers,
        )

    def _update_best(self, metrics: Mapping[str, float]) -> bool:
        name, mode = self.primary_metric()
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            return False
        better = (
            self.best_metric is None
            or (mode == "max" and value > self.best_metric)
            or (mode == "min" and value < self.best_metric)
        )
        if better:
            self.best_metric = float(value)
        return better

    # ----------------------------------------------------------------- checkpoints
    def position(self) -> dict[str, int]:
        """Where training stands: epochs done, steps into the current epoch, steps in all."""
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
        }

    def checkpoint_state(self) -> dict[str, Any]:
        """The checkpoint dict (see docs/engine.md); everything loads with weights_only=True."""
        rng = rng_state()
        if self.dist.enabled:
            rng = {**rng, "per_rank": self._gather_rng(rng)}
        return {
            "format": CHECKPOINT_FORMAT,
            "recipe": self.recipe.model_dump(mode="json"),
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "position": self.position(),
            "data_backend": self.data_backend,
            "metrics": dict(self.metrics),
            "best_metric": self.best_metric,
            "class_names": self.class_names,
            "category_ids": category_ids_of(self.train_set),
            "history": list(self.history),
            "epoch_sums": {
                "sums": dict(self._sums),
                "count": self._count,
                "counts": dict(self._counts),
            },
            "train_evaluator": (
                self.train_evaluator.state_dict()
                if isinstance(self.train_evaluator, StatefulEvaluator)
                else None
            ),
        }

    def _gather_rng(self, rng: dict[str, Any]) -> list[dict[str, Any]]:
        """Every rank's RNG state (a collective), shipped as torch.save bytes."""
        buffer = io.BytesIO()
        torch.save(rng, buffer)
        gathered: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(gathered, buffer.getvalue())
        return [torch.load(io.BytesIO(data), weights_only=True) for data in gathered]

    def _save(self, name: str, best: bool = False, epoch_end: bool = False) -> None:
        state = self.checkpoint_state()  # a collective under DDP: every rank builds it
        if not self.dist.is_main:
            return
        save_checkpoint(state, str(self.run_output.local(name)))
        self._publish_checkpoint(name)
        if best:
            self._copy_checkpoint(name, BEST)
            self._best_written = True
        if epoch_end and self.cfg.keep_epoch_checkpoints:
            epoch_name = epoch_checkpoint_name(self.epoch)
            self._copy_checkpoint(name, epoch_name)
            self.run_output.drop_staged(epoch_name, epoch_name + MANIFEST_SUFFIX)

    def _copy_checkpoint(self, source: str, name: str) -> None:
        self.run_output.copy(source, name)
        self._publish_checkpoint(name)

    def _publish_checkpoint(self, name: str) -> None:
        """Manifest, upload (checkpoint before manifest) and the checkpoint hook."""
        self._write_checkpoint_manifest(name)
        self.run_output.publish(name, name + MANIFEST_SUFFIX)
        plugins.trainer_hooks().checkpoint_saved(self, self.run_output.target(name))

    def lineage_parents(self) -> list[str]:
        """Artifacts this run came from: ``init_checkpoint``, then every path-like field of
        the data, model and teacher blocks (nested too) that has a lineage manifest, and every
        path field of the teacher (its weights) with or without one."""
        if self._parents is not None:
            return self._parents
        parents = [self.cfg.init_checkpoint] if self.cfg.init_checkpoint else []
        specs = [self.recipe.data.train, self.recipe.data.val, self.recipe.model]
        specs.append(self.recipe.teacher)
        for spec in specs:
            for value in nested_strings(spec.fields() if spec is not None else {}):
                if value not in parents and _has_manifest(value):
                    parents.append(value)
        parents += [p for p in frozen_input_paths(self.recipe) if p not in parents]
        self._parents = parents
        return parents

    def _write_checkpoint_manifest(self, name: str) -> None:
        parents = self.lineage_parents()
        extra: dict[str, Any] = {"position": self.position()}
        if self.frozen:
            extra["frozen"] = self.frozen.identities()  # a teacher: identity, not weights
        if self.run_output.remote:
            extra["path"] = self.run_output.target(name)
        write_manifest(
            str(self.run_output.local(name)),
            "checkpoint",
            parents=parents,
            recipe=self.recipe,
            metrics=self.metrics,
            extra=extra,
        )

    def _write_logs(self) -> None:
        """metrics.csv from the history, and TensorBoard files published (rank 0)."""
        out = self.run_output
        if "csv" in self.cfg.loggers:
            rows = [r for r in self.history if r["kind"] == "epoch" or self.cfg.csv_log_steps]
            write_csv(rows, out.local("metrics.csv"))
            out.publish("metrics.csv")
        if "tensorboard" in self.cfg.loggers and out.remote:
            for logger in self.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.writer.flush()
            out.publish_tree("tensorboard")

    def _finish(self, seconds: float, stopped: bool) -> None:
        self.console.close()
        if not self.dist.is_main:
            return
        out = self.run_output
        self._write_logs()
        plot_curves(self.history, out.local("training_curves.png"), title=self.recipe.name)
        out.publish("training_curves.png")
        extra: dict[str, Any] = {"status": "interrupted" if stopped else "completed"}
        if stopped and self._signal.received is not None:
            extra["signal"] = signal.Signals(self._signal.received).name
        self._write_run_manifest(seconds, extra)

    def _record_failure(self, seconds: float, err: BaseException) -> None:
        """A failed run's manifest: status ``failed``, where it stood and the error (rank 0).

        A failure to write it (the disk that made the run fail may be full) is printed, not
        raised: the original error is the one to report."""
        self.console.close()
        if not self.dist.is_main:
            return
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        extra = {"status": "failed", "error": f"{type(err).__name__}: {reason}".rstrip(": ")}
        try:
            self._write_run_manifest(seconds, extra)
        except Exception as write_err:
            print(f"note: could not write the failed run's manifest: {write_err}")

    def _write_run_manifest(self, seconds: float, extra: dict[str, Any]) -> None:
        out = self.run_output
        parents = self.lineage_parents()
        last_written = out.fetch(LAST) is not None
        extra = {
            **extra,
            "checkpoints": {
                "last": out.target(LAST) if last_written else None,
                "best": out.target(BEST) if self._best_written else None,
            },
            "best_metric": self.best_metric,
            "position": self.position(),
        }
        if self.frozen:
            extra["frozen"] = self.frozen.identities()
        if out.remote:
            extra["path"] = self.output
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        write_manifest(
            str(out.local_dir),
            "run",
            parents=parents,
            recipe=self.recipe,
            metrics=self.metrics,
            cost={
                "wall_seconds": round(seconds, 3),
                "device": device,
                "processes": self.dist.world_size,
            },
            extra=extra,
        )
        out.publish("manifest.json")


def _changed_fields(
    before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """Dotted paths whose values differ between two nested mappings."""
    changed = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += _changed_fields(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


def epoch_checkpoint_name(epochs_done: int) -> str:
    """File name of the checkpoint kept after ``epochs_done`` epochs."""
    return f"epoch_{epochs_done:04d}.ckpt"


def _has_manifest(value: str) -> bool:
    """True if ``value`` names an artifact with a lineage manifest (never raises)."""
    try:
        return storage.exists(manifest_path(value))
    except (VisionforgeError, OSError, ValueError):
        return False


def _class_names(dataset: Any) -> list[str] | None:
    return [str(n) for n in dataset.class_names] if isinstance(dataset, NamedClasses) else None


@dataclass
class Components:
    """Objects a user made, used by the :class:`Trainer` instead of building the recipe's
    blocks (see :meth:`Trainer.from_objects`)."""

    model: nn.Module | None = None
    train_set: Dataset | None = None
    val_set: Dataset | None = None
    loss: Loss | None = None
    evaluator: Evaluator | None = None


def object_block(obj: object) -> dict[str, str]:
    """The recipe block standing for a Python object: ``{"type": "object:module.Class"}``."""
    cls = type(obj)
    return {"type": f"{OBJECT_NAMESPACE}:{cls.__module__}.{cls.__qualname__}"}

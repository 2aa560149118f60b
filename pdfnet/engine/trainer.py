"""Training: one process per device (``torchrun`` for many), exact resume, validation, checkpoints, logs.

Run directory (``train.out_dir``):
    config.yaml     the resolved config of the run
    last.pth        everything needed to continue (written every epoch and every ``save_every_steps`` steps)
    best.pth        the validated weights with the best ``train.best_metric`` (EMA weights when EMA is on)
    history.jsonl   one line per validation, the first one the untrained model (epoch 0)
    train.log       the messages printed by rank 0
    tb/             tensorboard scalars and image panels (image | depth | GT | prediction)

Exact resume: a checkpoint is only written between optimizer steps and holds the model, optimizer, scheduler,
scaler, EMA, every rank's RNG states, the epoch, the optimizer step and the number of micro-batches of the current
epoch already consumed. Data order and augmentation derive from (seed, epoch, index), so the resumed run sees the
same samples in the same order, and its weights are bitwise those of an uninterrupted run (on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import nullcontext, suppress
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..build import build_loss, build_model
from ..config import Config, config_to_yaml
from ..data.dataset import DISDataset, batch_to_device
from ..data.datasets import cache_folder, training_samples, validate_samples, validation_samples
from ..data.io import atomic_write_bytes, remove_stale_temp_files, writable_folder_problem
from ..device import configure_cuda_backends, training_amp_dtype
from ..metrics.evaluator import LOWER_IS_BETTER
from ..models import PDFNet
from ..workers import loader_worker_init, process_pool
from .checkpoint import CheckpointError, atomic_save, load_checkpoint, make_checkpoint, model_from_checkpoint
from .compile import compile_for_training
from .distributed import (
    any_rank,
    barrier,
    gather_objects,
    init_distributed,
    on_main,
    share_failure,
    shutdown,
    wrap_ddp,
)
from .ema import EMA
from .optim import make_optimizer
from .rng import capture_rng, restore_rng, seed_everything, seed_worker
from .sampler import ResumableSampler
from .validation import panel_grid, validate
from .writer import BackgroundWriter, snapshot

# The loss parts a run saved before the loss became a set of named terms (its state.loss_sums was a list in this
# order); a resumed run maps them by name.
LEGACY_LOSS_PARTS = ("total", "seg", "main", "integrity", "depth")


class TrainingError(RuntimeError):
    """Training cannot go on (bad data size, non-finite loss, unusable checkpoint); the message says what to do."""


@dataclasses.dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps
    batch_in_epoch: int = 0  # micro-batches of epoch ``epoch`` already consumed
    best: float | None = None
    best_epoch: int = -1
    skipped: int = 0  # micro-batches discarded for a non-finite loss (a whole accumulation group at a time)
    loss_sums: dict[str, float] = dataclasses.field(default_factory=dict)  # running sums since the last validation
    loss_count: int = 0
    partial_parts: list[str] = dataclasses.field(default_factory=list)  # parts whose sums miss part of the period
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def lr_factor(step: int, cfg: Config, steps_per_epoch: int) -> float:
    """Multiplier of ``optim.lr`` at optimizer step ``step``: linear warm-up, then constant or cosine to min_lr."""
    o = cfg.optim
    warmup = o.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if o.schedule == "constant":
        return 1.0
    total = max(1, cfg.train.epochs * steps_per_epoch - warmup)
    progress = min(1.0, (step - warmup) / total)
    return (o.min_lr + (o.lr - o.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))) / o.lr


def _is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def _load_initial_weights(model: PDFNet, path: str, log) -> None:
    """Fine-tuning start: weights from our checkpoint or an official one; a missing depth head is fine (new)."""
    source, _ = model_from_checkpoint(path)
    if source.variant != model.variant:
        raise TrainingError(f"train.init_from {path} is a {source.variant} model but model.variant is "
                            f"{model.variant}; set model.variant={source.variant}")
    try:
        missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    except RuntimeError as err:  # shape mismatches raise even when strict=False
        raise TrainingError(f"train.init_from {path} does not fit the model config (check model.backbone / "
                            f"model.emb_dim): {str(err).splitlines()[1].strip()}") from err
    bad_missing = [k for k in missing if not k.startswith("depth_decoder.")]
    if bad_missing or unexpected:
        raise TrainingError(f"train.init_from {path} does not fit the model config: missing "
                            f"{bad_missing[:5]}, unexpected {unexpected[:5]} (check model.backbone / model.emb_dim)")
    log(f"initial weights: {path}" + (" (depth head newly initialised)" if missing else ""))


class Trainer:
    """Builds everything from ``cfg`` and trains with :meth:`fit`. ``resume``: a last.pth to continue from."""

    def __init__(self, cfg: Config, resume: str | Path | None = None, show_progress: bool = True) -> None:
        self.cfg = cfg
        t = cfg.train
        self.out_dir = Path(t.out_dir)
        if t.best_metric == "HCE" and not t.val_hce:
            raise TrainingError("train.best_metric=HCE needs train.val_hce=true")
        self.ctx, self.device = init_distributed(t.device)  # cuda:<LOCAL_RANK> under torchrun
        self.show_progress = show_progress and self.ctx.is_main
        configure_cuda_backends(self.device, tf32=t.tf32)
        self.amp_dtype = training_amp_dtype(self.device, t.amp)
        notices = []
        if t.amp == "bf16" and self.amp_dtype == torch.float16:
            notices.append(f"train.amp=bf16: {torch.cuda.get_device_name(self.device)} has no native bfloat16, "
                           "training under float16 autocast with loss scaling instead")

        notices += self._build_data()  # validates every file before anything is written
        created = on_main(self.ctx, self._check_run_directory)
        seed_everything(t.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        try:
            self.model = build_model(cfg, self.device)  # model.impl: the reference model, or its CPU forms on a CPU
            if t.init_from:
                _load_initial_weights(self.model, t.init_from, self.log)
        except BaseException:
            if created:  # a run that never started leaves no empty run folder behind
                with suppress(OSError):
                    self.out_dir.rmdir()
            raise
        self.want_depth = self.model.has_depth_head and cfg.loss.depth_weight > 0
        self.loss_fn = build_loss(cfg, self.device)
        self.part_names = ("total",) + self.loss_fn.part_names  # what the loss returns, by name
        self.ema = EMA(self.model, t.ema_decay) if t.ema_decay > 0 else None
        self.optimizer = make_optimizer(self.model, cfg.optim, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, cfg, self.steps_per_epoch))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        # Compile the module (or its blocks) first, then wrap it in DDP (as timm and torchtitan do): DDP's
        # all-reduce hooks stay outside the compiled graphs. The loss compiles on its own.
        self.train_model: torch.nn.Module = compile_for_training(self.model, t.compile, t.compile_backend)
        self.loss_call = (torch.compile(self.loss_fn, backend=t.compile_backend) if t.compile != "none"
                          else self.loss_fn)
        if self.ctx.enabled:
            self.train_model = wrap_ddp(self.train_model, self.device)
        self.saver = BackgroundWriter()  # checkpoint and history writes off the training thread (rank 0)
        self.metric_pool = None  # validation metrics, computed while the model predicts (made at first use)
        self.state = TrainState()
        self._weights_checked_at_step: int | None = None  # see _check_finite_weights
        # Running loss sums live on the device (no host sync per micro-batch); state.loss_sums is refreshed from
        # them whenever the state is saved or reported. float64 keeps the sums those of Python floats.
        acc_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.loss_sums = torch.zeros(len(self.part_names), dtype=acc_dtype, device=self.device)
        self.loader: DataLoader | None = None
        # Drop-path draws differ per rank (as with independent processes); rank 0 keeps the plain seed.
        seed_everything(t.seed + 1_000_003 * self.ctx.rank)
        self.writer = None
        if resume is not None:
            self._resume(Path(resume))
        for notice in notices:
            self.log(notice)

    # ----------------------------------------------------------------------------------------------- set-up
    def _build_data(self) -> list[str]:
        cfg, t = self.cfg, self.cfg.train
        samples, notices = training_samples(cfg.data)
        val_samples = validation_samples(cfg.data) if cfg.data.val_split else []
        # Rank 0 reads every header; a bad file stops every rank with the same message (no rank left waiting).
        on_main(self.ctx, lambda: validate_samples(samples + val_samples))
        # Rank 0 checks the cache folder first (a problem stops every rank with its message); the others then make
        # it on their own machine too (a node-local path on another node).
        cache = on_main(self.ctx, lambda: cache_folder(cfg.data))
        if not self.ctx.is_main:
            cache = cache_folder(cfg.data)
        self.train_set = DISDataset(samples, cfg.data.size, cfg.data.augment, cache, seed=t.seed)
        self.val_samples = val_samples
        self.sampler = ResumableSampler(len(samples), shuffle=True, seed=t.seed, rank=self.ctx.rank,
                                        world_size=self.ctx.world_size, with_epoch=True)
        group = t.batch_size * t.accum_steps
        self.steps_per_epoch = self.sampler.per_rank // group
        if self.steps_per_epoch == 0:
            raise TrainingError(f"{cfg.data.train_split} has {len(samples)} samples: fewer than train.batch_size x "
                                f"train.accum_steps x processes = {group * self.ctx.world_size}; lower them")
        self.micro_per_epoch = self.steps_per_epoch * t.accum_steps
        return notices

    def _check_run_directory(self) -> bool:
        """Rank 0, before any work: ``train.out_dir`` can be written (made when missing), and what interrupted writes
        of an earlier run left in it is removed. Returns whether it was made now."""
        created = not self.out_dir.exists()
        if problem := writable_folder_problem(self.out_dir):
            raise TrainingError(f"train.out_dir: {problem}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.out_dir)
        return created

    def log(self, message: str) -> None:
        if not self.ctx.is_main:
            return
        (tqdm.write if self.show_progress else print)(message)
        with open(self.out_dir / "train.log", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def _resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if "optimizer" not in ckpt or "state" not in ckpt:
            raise CheckpointError(f"{path} holds weights only (no training state), so it cannot be resumed; to "
                                  f"start a new run from these weights use --opt train.init_from={path}")
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise CheckpointError(f"{path} does not fit the model config: {str(err).splitlines()[0]}") from err
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self._load_scaler(ckpt.get("scaler") or {}, path)
        if self.ema is not None:
            if ckpt.get("ema") is None:
                self.ema.module.load_state_dict(ckpt["model"])  # EMA switched on at resume: start from the weights
            else:
                self.ema.load_state_dict(ckpt["ema"])
        self.state = TrainState(**ckpt["state"])
        self._restore_loss_sums()
        rng = ckpt.get("rng") or []
        if self.state.batch_in_epoch and ckpt.get("world_size") != self.ctx.world_size:
            raise TrainingError(f"{path} was written mid-epoch by {ckpt.get('world_size')} process(es); resume it "
                                f"with the same number (got {self.ctx.world_size})")
        if self.ctx.rank < len(rng):
            restore_rng(rng[self.ctx.rank], self.device)
        # A kill between last.pth and history.jsonl left the file one line short.
        on_main(self.ctx, self._write_history)
        self.log(f"resumed from {path}: epoch {self.state.epoch} + {self.state.batch_in_epoch} micro-batches, "
                 f"step {self.state.step}")

    def _load_scaler(self, stored: dict[str, Any], path: Path) -> None:
        """The fp16 loss scale of a checkpoint, when both the checkpoint and this run use one. A run whose
        ``train.amp`` changed at resume either starts a fresh scale or drops the stored one, and says so."""
        if self.scaler.is_enabled() and stored:
            self.scaler.load_state_dict(stored)
        elif self.scaler.is_enabled():
            self.log(f"{path} was trained without fp16 loss scaling: starting a fresh loss scale "
                     f"({self.scaler.get_scale():.0f}) for train.amp=fp16")
        elif stored:
            self.log(f"{path} was trained with fp16 loss scaling; this run (train.amp={self.cfg.train.amp} on "
                     f"{self.device.type}) needs none, so the stored loss scale is dropped")

    # ------------------------------------------------------------------------------------------- checkpoints
    def _check_finite_weights(self) -> None:
        """Every rank checks its (identical) weights; a failure stops all ranks with the same message. Once per
        optimizer step: validation and last.pth at the end of an epoch see the same weights."""
        if self._weights_checked_at_step == self.state.step:
            return
        error = None
        params = list(self.model.named_parameters())
        if not bool(torch.stack([torch.isfinite(p).all() for _, p in params]).all()):
            bad = [n for n, p in params if not torch.isfinite(p).all()]
            error = TrainingError(f"weights became non-finite ({bad[:3]}...) at step {self.state.step}; not saving. "
                                  "Lower optim.lr or set optim.clip_grad")
        share_failure(self.ctx, error)
        self._weights_checked_at_step = self.state.step

    def _restore_loss_sums(self) -> None:
        """The running loss sums of a resumed state, by name. A run saved before the loss terms were named stored a
        list (:data:`LEGACY_LOSS_PARTS`); a part the stored run did not have (a term added since) restarts at zero
        and is reported as missing (None) until the next validation starts a new period."""
        stored = self.state.loss_sums
        if isinstance(stored, (list, tuple)):
            stored = dict(zip(LEGACY_LOSS_PARTS, stored))
        self.state.loss_sums = {name: float(stored.get(name, 0.0)) for name in self.part_names}
        if self.state.loss_count:
            self.state.partial_parts = sorted(set(self.state.partial_parts) | (set(self.part_names) - set(stored)))
        self.loss_sums.copy_(torch.tensor([self.state.loss_sums[n] for n in self.part_names],
                                          dtype=self.loss_sums.dtype))

    def _sync_loss_sums(self) -> None:
        self.state.loss_sums = dict(zip(self.part_names, self.loss_sums.tolist()))

    def save_last(self) -> None:
        """last.pth with the full training state; every rank takes part (RNG states are gathered)."""
        rng = gather_objects(self.ctx, capture_rng(self.device))
        self._check_finite_weights()
        self._sync_loss_sums()

        def write() -> None:
            # A host copy now (training then changes weights and moments in place), the disk write in the
            # background (1.2 GB for the paper model), atomic as always.
            ckpt = snapshot(make_checkpoint(
                self.model, self.cfg, epoch=self.state.epoch, step=self.state.step,
                state=dataclasses.asdict(self.state), optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(),
                ema=self.ema.state_dict() if self.ema is not None else None, rng=rng, world_size=self.ctx.world_size))
            self.saver.submit(lambda: atomic_save(ckpt, self.out_dir / "last.pth"))

        on_main(self.ctx, write)

    def _save_best(self, metrics: dict[str, float]) -> None:
        model = self.ema.module if self.ema is not None else self.model
        ckpt = snapshot(make_checkpoint(model, self.cfg, epoch=self.state.epoch, step=self.state.step,
                                        metrics=metrics, ema=self.ema is not None))
        self.saver.submit(lambda: atomic_save(ckpt, self.out_dir / "best.pth"))

    def _write_history(self) -> None:
        """history.jsonl, after the checkpoint writes submitted before it (one writer thread, in order)."""
        text = "".join(json.dumps(line) + "\n" for line in self.state.history).encode("utf-8")
        self.saver.submit(lambda: atomic_write_bytes(self.out_dir / "history.jsonl", text))

    # ------------------------------------------------------------------------------------------------ steps
    def _forward_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One micro-batch (integer maps as the loader gives them) -> (total loss, its parts), float32 scalars."""
        inputs = batch_to_device(batch, self.device)
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with autocast:
            out = self.train_model(inputs["image"], inputs["depth"], return_depth=self.want_depth)
        seg, dep = out if self.want_depth else (out, None)
        return self.loss_call(seg, inputs["mask"], inputs["depth_target"], dep)  # float32 whatever the autocast dtype

    def _discard_group(self, group: list[tuple[list[str], torch.Tensor]]) -> None:
        """An accumulation group with a non-finite loss on some rank: stop with the first bad micro-batch's
        values, or drop the group's gradients on every rank (no optimizer step)."""
        bad = [i for i, (_, values) in enumerate(group) if not torch.isfinite(values[0])]
        i = bad[0] if bad else 0
        names, values = group[i]
        micro = self.state.batch_in_epoch - len(group) + i + 1
        origin = f"samples {names}" if bad else f"on another rank; this rank's samples {names}"
        shown = ", ".join(f"{k}={float(v):.4g}" for k, v in zip(self.part_names, values))
        message = (f"non-finite loss at epoch {self.state.epoch + 1}, step {self.state.step}, micro-batch {micro} "
                   f"({origin}): {shown}")
        if self.cfg.train.on_nonfinite == "stop":
            raise TrainingError(message + ". Nothing was saved after the last checkpoint. Lower optim.lr, set "
                                "optim.clip_grad, prefer train.amp=bf16 to fp16, or set train.on_nonfinite=skip")
        self.optimizer.zero_grad(set_to_none=True)
        self.state.skipped += len(group)
        self.log(message + f"; its accumulation group ({len(group)} micro-batch(es)) skipped on every rank, "
                 f"{self.state.skipped} so far")

    def _optimizer_step(self) -> None:
        clip = self.cfg.optim.clip_grad
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def _make_loader(self) -> DataLoader:
        workers = self.cfg.data.num_workers
        # The sampler yields (epoch, index), so persistent workers need no per-epoch state from this process.
        return DataLoader(self.train_set, batch_size=self.cfg.train.batch_size, sampler=self.sampler, drop_last=True,
                          num_workers=workers, persistent_workers=workers > 0,
                          worker_init_fn=partial(loader_worker_init, then=seed_worker),
                          generator=torch.Generator().manual_seed(self.cfg.train.seed * 7919),
                          pin_memory=self.device.type == "cuda")

    def train_epoch(self) -> None:
        """One epoch from ``state.batch_in_epoch`` on. Host syncs: one per optimizer step (do all ranks agree that
        the group's losses are finite?), plus logging every ``train.log_every_steps`` steps."""
        t, state = self.cfg.train, self.state
        epoch = state.epoch
        self.sampler.set_epoch(epoch, skip=state.batch_in_epoch * t.batch_size)
        if self.loader is None:
            self.loader = self._make_loader()
        left = self.micro_per_epoch - state.batch_in_epoch
        bar = tqdm(total=self.micro_per_epoch, initial=state.batch_in_epoch, disable=not self.show_progress,
                   desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", dynamic_ncols=True)
        window = torch.zeros_like(self.loss_sums)
        window_n, started, seen, first_step = 0, time.perf_counter(), 0, state.step
        group: list[tuple[list[str], torch.Tensor]] = []  # (sample names, [total, *parts]) per micro-batch
        self.model.train()
        for batch in islice(self.loader, left):
            last_of_group = (state.batch_in_epoch + 1) % t.accum_steps == 0
            total, parts = self._forward_loss(batch)
            # Every rank runs every backward, finite or not, so DDP's collectives stay paired; a group with a
            # non-finite loss anywhere is discarded as a whole below, on all ranks alike.
            sync = self.train_model.no_sync() if (self.ctx.enabled and not last_of_group) else nullcontext()
            with sync:
                self.scaler.scale(total / t.accum_steps).backward()
            group.append((list(batch["name"]), torch.stack([total.detach(), *parts.values()])))
            state.batch_in_epoch += 1
            seen += batch["image"].shape[0]
            bar.update(1)
            if not last_of_group:
                continue
            values = torch.stack([v for _, v in group])
            if any_rank(self.ctx, ~torch.isfinite(values[:, 0]).all()):
                self._discard_group(group)
            else:
                self._optimizer_step()
                for v in values.to(self.loss_sums.dtype):  # one add per micro-batch, as a running float sum
                    self.loss_sums += v
                    window += v
                window_n += len(group)
                state.loss_count += len(group)
            group = []
            self.scheduler.step()
            state.step += 1
            if state.step == first_step + 1:  # the first step compiles and warms up: not part of the throughput
                started, seen = time.perf_counter(), 0
            if state.step % t.log_every_steps == 0 and window_n and self.ctx.is_main:
                means = (window / window_n).tolist()
                lr = self.scheduler.get_last_lr()[0]
                self._log_scalars("train", {f"loss_{k}" if k != "total" else "loss": v
                                            for k, v in zip(self.part_names, means)})
                self._log_scalars("train", {"lr": lr})
                if self.show_progress:
                    bar.set_postfix(loss=f"{means[0]:.4f}", lr=f"{lr:.2e}",
                                    img_s=f"{seen * self.ctx.world_size / (time.perf_counter() - started):.2f}")
                window.zero_()
                window_n = 0
            if t.save_every_steps and state.step % t.save_every_steps == 0 and state.batch_in_epoch < \
                    self.micro_per_epoch:
                self.save_last()
        bar.close()
        state.epoch += 1
        state.batch_in_epoch = 0

    # ------------------------------------------------------------------------------------------- validation
    def _log_scalars(self, prefix: str, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}", v, self.state.step)

    def run_validation(self) -> dict[str, float] | None:
        """Validate (EMA weights when EMA is on), append to history, update best.pth. Metrics on rank 0; every
        rank must call it."""
        t = self.cfg.train
        self._check_finite_weights()
        model = self.ema.module if self.ema is not None else self.model
        started = time.perf_counter()
        bar = tqdm(total=math.ceil(len(self.val_samples) / self.ctx.world_size), disable=not self.show_progress,
                   desc="validate", unit="img", leave=False, dynamic_ncols=True)
        if self.metric_pool is None:
            self.metric_pool = process_pool(t.val_workers)
        half = t.val_half if t.val_half is not None else self.amp_dtype is not None  # as the model trains
        metrics, panels = validate(model, self.val_samples, self.cfg.data.size, self.ctx, t.val_hce,
                                   self.cfg.data.num_workers, t.val_panels, progress=lambda: bar.update(1),
                                   half=half, batch_size=t.val_batch_size, pool=self.metric_pool)
        bar.close()
        self._sync_loss_sums()
        on_main(self.ctx, lambda: self._record_validation(metrics, panels, time.perf_counter() - started))
        # Every rank starts the next period's loss statistics afresh (rank 0 reports them).
        self.state.loss_sums, self.state.loss_count = dict.fromkeys(self.part_names, 0.0), 0
        self.state.partial_parts = []
        self.loss_sums.zero_()
        return metrics

    def _record_validation(self, metrics: dict[str, float], panels: list[torch.Tensor], seconds: float) -> None:
        """Rank 0: the history line, best.pth, tensorboard and the log line of one validation."""
        t, state = self.cfg.train, self.state
        n = max(1, state.loss_count)
        line: dict[str, Any] = {"epoch": state.epoch, "step": state.step, "lr": self.scheduler.get_last_lr()[0]}
        line.update({("loss" if k == "total" else f"loss_{k}"): (s / n if state.loss_count and k not in
                                                                  state.partial_parts else None)
                     for k, s in state.loss_sums.items()})
        line.update(metrics)
        line.update({"skipped": state.skipped, "val_seconds": round(seconds, 2)})
        value = metrics[t.best_metric]
        line["best"] = _is_better(value, state.best, t.best_metric)
        if line["best"]:
            state.best, state.best_epoch = value, state.epoch
            self._save_best(metrics)
        state.history.append(line)
        self._log_scalars("val", metrics)
        if self.writer is not None and panels:
            self.writer.add_image("val/panels", panel_grid(panels), state.step, dataformats="HWC")
        shown = " ".join(f"{k}={metrics[k]:.4f}" for k in ("maxF", "wF", "Sm", "meanEm", "MAE", "HCE") if k in metrics)
        self.log(f"epoch {state.epoch} step {state.step}: {shown}" + ("  (best)" if line["best"] else ""))

    # ------------------------------------------------------------------------------------------------- loop
    def _open_run_directory(self) -> None:
        """Rank 0: config.yaml, the tensorboard writer and the opening log line."""
        from torch.utils.tensorboard import SummaryWriter

        (self.out_dir / "config.yaml").write_text(config_to_yaml(self.cfg), encoding="utf-8")
        self.writer = SummaryWriter(str(self.out_dir / "tb"))
        amp = {None: "none", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        self.log(f"training {len(self.train_set)} samples ({self.steps_per_epoch} steps/epoch x "
                 f"{self.ctx.world_size} process(es)) on {self.device}, amp={amp}, run dir {self.out_dir}")

    def fit(self) -> TrainState:
        """Train up to ``train.epochs``; returns the final state. Every rank must call it."""
        t, state = self.cfg.train, self.state
        try:
            on_main(self.ctx, self._open_run_directory)
            if self.val_samples and not state.history and state.epoch == 0 and state.batch_in_epoch == 0:
                self.run_validation()  # the untrained model: the baseline every later line is compared with
                on_main(self.ctx, self._write_history)
            while state.epoch < t.epochs:
                self.train_epoch()
                if self.val_samples and (state.epoch % t.val_every_epochs == 0 or state.epoch == t.epochs):
                    self.run_validation()
                self.save_last()
                on_main(self.ctx, self._write_history)
                barrier(self.ctx)
            on_main(self.ctx, self.saver.wait)  # every file on disk (a failed write stops every rank with its error)
            if self.ctx.is_main and state.best is not None:
                self.log(f"done: best {t.best_metric} {state.best:.4f} at epoch {state.best_epoch} "
                         f"({self.out_dir / 'best.pth'})")
            return state
        finally:
            try:
                self.saver.close()  # an interrupted run still finishes the writes it started
            finally:
                if self.metric_pool is not None:
                    self.metric_pool.shutdown(cancel_futures=True)
                if self.writer is not None:
                    self.writer.close()
                shutdown(self.ctx)


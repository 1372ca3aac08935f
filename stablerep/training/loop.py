"""The training loop: any iterable of (captions, m, C, H, W) batches, one process or torchrun."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from stablerep import storage
from stablerep.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from stablerep.config import RunConfig
from stablerep.data.augment import BatchPhotometric, prepare_images
from stablerep.devices import resolve_device, resolve_dtype
from stablerep.distributed import (
    all_reduce_mean,
    current_rank,
    current_world_size,
    destroy_process_group,
    init_from_env,
    is_distributed,
    is_main_process,
)
from stablerep.errors import NonFiniteLossError
from stablerep.losses import create_loss
from stablerep.models import StableRepModel, create_model_for_run
from stablerep.seeding import mix_seed
from stablerep.training.optim import build_optimizer, lr_at, set_lr
from stablerep.training.step import train_step
from stablerep.world import run_targets

log = logging.getLogger("stablerep.train")


@dataclass
class TrainResult:
    run_dir: str
    steps_done: int
    final_loss: float
    checkpoint: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None


def _batches_from(data: Iterable, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
    """Yield batches for steps ``start_step, start_step + 1, ...``. Sources with ``iter_from(step)``
    resume exactly; others are re-iterated (``set_epoch`` called each pass) and fast-forwarded."""
    if hasattr(data, "iter_from"):
        yield from data.iter_from(start_step)
        return
    skipped, epoch = 0, 0
    while True:
        if hasattr(data, "set_epoch"):
            data.set_epoch(epoch)
        empty = True
        for batch in data:
            empty = False
            if skipped < start_step:
                skipped += 1
                continue
            yield batch
        if empty:
            raise ValueError("the batch source yielded no batch")
        epoch += 1


def prepare_batch(batch: dict[str, torch.Tensor], device: torch.device, photometric: BatchPhotometric,
                  seed: int) -> dict[str, torch.Tensor]:
    """What the loop does to each loader batch before its step: move tensors to the device; uint8
    images (loader crops) get the photometric augmentation there, batched, from a generator seeded
    by ``seed`` (the loop passes (run seed, step, rank)), then normalisation."""
    out = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
           for k, v in batch.items()}
    if out["images"].dtype == torch.uint8:
        generator = torch.Generator(device=device).manual_seed(seed)
        out["images"] = prepare_images(out["images"], photometric, generator)
    return out


def _prepare_model(run: RunConfig, device: torch.device) -> tuple[StableRepModel, nn.Module]:
    """(the bare model, the module to call: DDP-wrapped under torchrun).

    On CUDA the head's BatchNorms become SyncBatchNorm (statistics over the global batch); torch
    implements SyncBatchNorm for GPUs only, so CPU ranks keep per-rank statistics.
    """
    torch.manual_seed(run.train.seed)  # the same initial weights on every rank
    targets = run_targets(run)
    model = create_model_for_run(run, targets.classes if targets else None)
    if is_distributed() and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        module: nn.Module = DistributedDataParallel(model, device_ids=ids)
    else:
        module = model
    if run.train.compile:
        module = torch.compile(module)
    return model, module


def _write_json(url: str, payload: Any) -> None:
    storage.write_bytes(url, json.dumps(payload, indent=2).encode())


def run_training_loop(run: RunConfig, data: Iterable, run_dir: str, *, resume: bool = True,
                      stop_at: int | None = None, progress: bool = True) -> TrainResult:
    """Train ``run`` on ``data`` and write config, metrics and checkpoints under ``run_dir``.

    ``data`` yields this rank's batches: dicts with ``images`` (captions, m, C, H, W), ``labels``
    (captions,) and, for text methods, ``tokens``. With ``resume`` the newest checkpoint in
    ``run_dir`` is restored and training continues from its step. ``stop_at`` ends this call after
    that many total steps (with a checkpoint), as a preempted job would.
    Launch under torchrun for several processes: the process group is initialised here.
    """
    device = resolve_device(run.train.device)
    owns_group = init_from_env(device)
    try:
        return _train(run, data, run_dir, device, resume, stop_at, progress)
    finally:
        if owns_group:
            destroy_process_group()


def _train(run: RunConfig, data: Iterable, run_dir: str, device: torch.device, resume: bool,
           stop_at: int | None, progress: bool) -> TrainResult:
    main = is_main_process()
    dtype = resolve_dtype(run.train.precision, device)
    model, module = _prepare_model(run, device)
    targets = run_targets(run)
    loss_fn = create_loss(run.loss, targets.classes if targets else None).to(device)
    optimizer = build_optimizer(model, run.lr, run.optim.weight_decay, run.optim.betas, run.optim.eps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    resolved = run.resolved()
    if main:
        _write_json(storage.join(run_dir, "config.json"), resolved)

    start, resumed_from = 0, None
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        start = resumed_from = load_checkpoint(ckpt, model, optimizer, scaler).step
        log.info("resumed from %s at step %d", ckpt, start)
    end = min(run.train.steps, stop_at) if stop_at is not None else run.train.steps
    history: list[dict[str, Any]] = []
    metrics_url = storage.join(run_dir, "metrics.jsonl")
    last_ckpt, loss_value = ckpt, float("nan")
    world = current_world_size()
    bar = tqdm(total=end, initial=start, desc=f"train {run.loss.method}", unit="step",
               disable=None if (progress and main) else True, dynamic_ncols=True)
    batches = _batches_from(data, start)
    photometric = BatchPhotometric(run.data.augment)
    t_last, images_since = time.perf_counter(), 0
    module.train()
    for step in range(start, end):
        lr = lr_at(step, run.train.steps, run.lr, run.optim.warmup_steps, run.optim.min_lr)
        set_lr(optimizer, lr)
        batch = prepare_batch(next(batches), device, photometric,
                              mix_seed(run.train.seed, step, current_rank()))
        losses = train_step(run.loss.method, module, loss_fn, optimizer, scaler, batch, device,
                            dtype, run.optim.grad_clip)
        # One host sync per step: a NaN must stop the run before it is checkpointed.
        loss_value = float(all_reduce_mean(losses["loss"].detach()))
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"step {step + 1}: loss is {loss_value} (lr {lr:.3g}); "
                                     f"stopping. Last checkpoint: {last_ckpt or 'none'}")
        images_since += batch["images"].shape[0] * batch["images"].shape[1] * world
        done = step + 1
        bar.update(1)
        if done % run.train.log_every == 0 or done == end:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            record = {"step": done, "loss": loss_value, "lr": lr,
                      "images_per_s": images_since / max(now - t_last, 1e-9)}
            record.update({k: float(all_reduce_mean(v.detach()))
                           for k, v in losses.items() if k != "loss"})
            t_last, images_since = now, 0
            history.append(record)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", ips=f"{record['images_per_s']:.0f}")
            if main:
                log.info("step %d loss %.4f lr %.3e images/s %.1f", done, loss_value, lr, record["images_per_s"])
                _append_metrics(metrics_url, history)
        every = run.train.checkpoint_every
        if (every and done % every == 0) or done == end:
            if main:
                last_ckpt = save_checkpoint(run_dir, done, model, optimizer, scaler, resolved,
                                            keep=run.train.keep_checkpoints)
            if is_distributed():
                torch.distributed.barrier()
    bar.close()
    return TrainResult(run_dir, end, loss_value, last_ckpt, history, resumed_from)


def _append_metrics(url: str, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl: rewritten whole (object stores have no append); earlier runs' lines kept."""
    existing: list[str] = []
    if storage.exists(url):
        first_new = history[0]["step"]
        existing = [line for line in storage.read_bytes(url).decode().splitlines()
                    if line and json.loads(line)["step"] < first_new]
    lines = existing + [json.dumps(r) for r in history]
    storage.write_bytes(url, ("\n".join(lines) + "\n").encode())

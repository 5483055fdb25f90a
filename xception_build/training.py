"""One training step and the training loop, shared by ``examples/train.py`` and ``xbuild bench --train``.

Why one module for both: the bench must time exactly the step users train with (forward, loss,
backward, optimizer step), or its figures say nothing about training. The GPU levers (depthwise
convolutions are memory-bound, so layout, precision and fusion matter) are options of that one
step: ``amp`` (bf16 / fp16 autocast, fp16 with a ``GradScaler``), ``channels_last`` and
``compile`` (``torch.compile``). Every option also runs on CPU, so the GPU code paths are tested here.

Past one device the step is PyTorch's own data parallelism: inside a ``torchrun`` job
(:mod:`xception_build.distributed`) the model is wrapped in ``DistributedDataParallel``, which
averages gradients over the ranks; ``sync_bn`` makes BatchNorm use the statistics of the global
batch (:mod:`xception_build.syncbn`). With equal per-rank batches, a mean loss per rank and the
same data order, N ranks with batch B then take the same steps as one process with batch N·B.

The step and loop take any iterable of ``(images, labels)`` batches; the datasets and loaders that
make them are in :mod:`xception_build.datasets` and :mod:`xception_build.loaders`; the recipes and
schedules in :mod:`xception_build.recipes`; resume checkpoints in :mod:`xception_build.checkpoint`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from xception_build.calibration import calibrate_batchnorm
from xception_build.distributed import DistContext, all_reduce, average_batchnorm_statistics, current_context
from xception_build.errors import BackendUnavailable, UserError
from xception_build.recipes import SCHEDULE_CHOICES, make_scheduler

AMP_CHOICES = ("bf16", "fp16", "none")
OPTIMIZER_CHOICES = ("sgd", "adamw")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainOptions:
    """How a step runs. The defaults are the paper's recipe (:data:`xception_build.recipes.RECIPES`
    ``paper``: SGD, momentum 0.9, lr 0.045 × 0.94 every 2 epochs, weight decay 1e-5), no GPU levers on.

    ``accumulate``: micro-batches per optimizer step (gradient accumulation); the loss of each is
    divided by it, so k micro-batches of B give the gradient of one batch of k·B (BatchNorm aside:
    it still normalises over B). ``sync_bn``: BatchNorm over the global batch in a torchrun job.
    """

    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    optimizer: str = "sgd"
    lr: float = 0.045
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-5
    label_smoothing: float = 0.0
    schedule: str = "step"
    decay_rate: float = 0.94
    decay_epochs: float = 2.0
    warmup_epochs: float = 0.0
    accumulate: int = 1
    sync_bn: bool = False

    def __post_init__(self) -> None:
        if self.amp not in AMP_CHOICES:
            raise UserError(f"unknown autocast precision {self.amp!r}; "
                            f"choose one of {', '.join(AMP_CHOICES)}")
        if self.optimizer not in OPTIMIZER_CHOICES:
            raise UserError(f"unknown optimizer {self.optimizer!r}; "
                            f"choose one of {', '.join(OPTIMIZER_CHOICES)}")
        if self.schedule not in SCHEDULE_CHOICES:
            raise UserError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULE_CHOICES)}")
        checks = [("lr", self.lr > 0, "> 0"), ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"),
                  ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
                  ("decay_rate", 0 < self.decay_rate <= 1, "in (0, 1]"),
                  ("decay_epochs", self.decay_epochs > 0, "> 0"),
                  ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
                  ("accumulate", isinstance(self.accumulate, int) and self.accumulate >= 1, "an integer >= 1")]
        for name, ok, valid in checks:
            if not ok:
                raise UserError(f"{name} = {getattr(self, name)!r} is out of range; it must be {valid}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AMP_DTYPES[self.amp]

    def describe(self) -> str:
        """Short label such as ``bf16+channels_last+compile`` (``fp32`` when nothing is on)."""
        parts = [] if self.amp == "none" else [self.amp]
        parts += ["channels_last"] * self.channels_last + ["compile"] * self.compile
        return "+".join(parts) or "fp32"

    def with_(self, **changes: object) -> TrainOptions:
        return replace(self, **changes)  # type: ignore[arg-type]


def resolve_device(name: str) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` -> a device, or BackendUnavailable when CUDA is not here."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r}; choose cpu or cuda (cuda:N)") from exc
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r}; choose cpu or cuda (cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"--device {name}: no CUDA device is visible to torch {torch.__version__}",
                                 hint="use --device cpu, or run on a machine with an NVIDIA GPU")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under ``torch.compile`` and ``DistributedDataParallel`` wrappers.

    That is what state dicts and checkpoints refer to: its keys carry no ``_orig_mod.`` or
    ``module.`` prefix.
    """
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(model, nn.parallel.DistributedDataParallel):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def make_optimizer(model: nn.Module, options: TrainOptions) -> torch.optim.Optimizer:
    # No weight decay on BN and biases (1-d tensors): the usual recipe for CNNs with BN.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": options.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if options.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=options.lr)
    return torch.optim.SGD(groups, lr=options.lr, momentum=options.momentum,
                           nesterov=options.nesterov and options.momentum > 0)


class TrainStep:
    """Forward, loss, backward and (every ``accumulate`` calls) an optimizer step, on one batch per call.

    Returns the loss as a detached device tensor; calling ``.item()`` on it syncs, so loops that
    care about speed read it only now and then. In a torchrun job (a process group is joined) the
    model is wrapped in ``DistributedDataParallel`` and, with ``sync_bn``, its BatchNorm layers
    synchronised; ``module`` is always the plain network that checkpoints save.
    """

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu",
                 options: TrainOptions | None = None, *, ctx: DistContext | None = None) -> None:
        from xception_build.syncbn import convert_sync_batchnorm

        self.device = torch.device(device)
        self.options = options or TrainOptions()
        self.ctx = ctx if ctx is not None else current_context()
        module = model.to(self.device)
        if self.options.sync_bn and self.ctx.distributed:
            module = convert_sync_batchnorm(module, self.device)
        if self.options.channels_last:
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.module = module  # the plain module: checkpoints
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        trained: nn.Module = module
        if self.ctx.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            trained = self.ddp
        # compile outside DDP, as PyTorch recommends: DDP's optimizer splits the graph at its buckets.
        self.model: nn.Module = torch.compile(trained) if self.options.compile else trained  # type: ignore[assignment]
        # Evaluation and BN calibration run the plain (or compiled plain) module: DDP's forward would
        # broadcast buffers, a collective each rank must call equally often, which shards of
        # different lengths do not.
        if self.ctx.distributed:
            self.eval_model: nn.Module = (torch.compile(module) if self.options.compile  # type: ignore[assignment]
                                          else module)
        else:
            self.eval_model = self.model
        self.optimizer = make_optimizer(self.module, self.options)
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        # GradScaler guards fp16 gradients against underflow; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.options.amp == "fp16")
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=self.options.label_smoothing)
        self.optimizer_steps = 0  # optimizer steps taken (the schedule's position)
        self.stepped = False  # whether the last call ended with an optimizer step
        self._pending = 0  # micro-batches accumulated since the last optimizer step

    def plan_schedule(self, steps_per_epoch: int, epochs: int) -> None:
        """Attach the options' learning-rate schedule over ``epochs`` epochs (steps = optimizer steps)."""
        self.scheduler = make_scheduler(self.optimizer, self.options, steps_per_epoch, epochs)

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.options.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def autocast(self) -> torch.autocast:
        dtype = self.options.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.model.train()
        images = self.to_input(images)
        labels = labels.to(self.device, non_blocking=True)
        accumulate = self.options.accumulate
        last = self._pending + 1 == accumulate
        # DDP all-reduces gradients in backward; between optimizer steps that traffic is wasted.
        sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
        with sync:
            with self.autocast():
                logits = self.model(images)
            # The loss in fp32 whatever the autocast dtype (fp64 for a float64 model: no precision lost).
            loss = self.loss_fn(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels)
            self.scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()
        self._pending += 1
        self.stepped = last
        if last:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self._pending = 0
            self.optimizer_steps += 1
            if self.scheduler is not None:
                self.scheduler.step()
        return loss.detach()

    def discard_pending(self) -> None:
        """Drop gradients of micro-batches that did not reach an optimizer step (an epoch's remainder)."""
        if self._pending:
            self.optimizer.zero_grad(set_to_none=True)
            self._pending = 0

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch]) -> tuple[float, int]:
        """Top-1 accuracy (0..1) and the number of images, in eval mode with the step's autocast.

        In a torchrun job each rank evaluates its own shard and the counts are summed over all
        ranks: the accuracy is that of the whole validation set, the same on every rank.
        """
        self.eval_model.eval()
        correct = total = 0
        for images, labels in batches:
            with self.autocast():
                logits = self.eval_model(self.to_input(images))
            correct += int((logits.argmax(1).cpu() == labels).sum())
            total += int(labels.numel())
        correct_all, total_all = all_reduce([correct, total], self.ctx)
        return (correct_all / total_all if total_all else 0.0), int(total_all)

    @torch.no_grad()
    def precise_bn(self, batches: Iterable[Batch], num_batches: int = 20) -> int:
        """Recompute BatchNorm running statistics as a plain average over ``num_batches`` batches.

        Why: running statistics are an exponential average that starts at mean 0 / variance 1 and
        forgets that start slowly (0.9 per step); after a short run they still describe the
        initial network, and eval-mode accuracy looks like chance although training worked
        ("precise BN", as in pycls). Returns the number of batches used (on this rank).

        The averaging is :func:`xception_build.calibration.calibrate_batchnorm`, the one the export
        pipeline calibrates with; here it runs the step's model with the step's layout and autocast.
        In a torchrun job every rank calibrates on its own shard (synchronised BN layers share
        the statistics of the global batch), then the ranks' statistics are averaged, so every
        rank, and the checkpoint, holds the same.
        """
        inputs = (self.to_input(images) for images, _ in _limit(batches, num_batches))
        with self.autocast():
            count = calibrate_batchnorm(self.eval_model, inputs)
        average_batchnorm_statistics(self.module, self.ctx)
        return count

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Safetensors checkpoint of the plain module, as ``xbuild export --weights`` reads it."""
        return save_checkpoint(self.module, path, metadata)


def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save the plain module (unwrapped from ``torch.compile`` and DDP) via ``weights.save_weights``.

    ``save_weights`` writes contiguous CPU copies atomically, so ``channels_last`` models save in
    the standard layout, ``xbuild export --weights`` reads the file like any other, and a run
    killed while saving leaves the previous file whole. ``metadata``: strings stored in the
    safetensors header (the resolved spec, the epoch).
    """
    from xception_build.weights import save_weights

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(unwrap(model), path, metadata)
    return path


@dataclass
class EpochResult:
    """One epoch, over all ranks: mean loss of every micro-batch, optimizer steps, images seen."""

    epoch: int
    mean_loss: float
    steps: int
    images: int
    seconds: float
    val_accuracy: float | None = None
    val_images: int = 0
    lr: float = 0.0  # the learning rate the epoch started with
    complete: bool = True  # False when max_steps ended the epoch early


def set_epoch(batches: object, epoch: int) -> None:
    """Tell a loader's sampler and dataset the epoch (0-based): the shuffle and augmentation follow it.

    ``DistributedSampler`` shuffles with ``seed + epoch``; the datasets of
    :mod:`xception_build.datasets` seed each image's augmentation with (seed, epoch, index).
    """
    for holder in (getattr(batches, "sampler", None), getattr(batches, "dataset", None)):
        while holder is not None:
            if callable(getattr(holder, "set_epoch", None)):
                holder.set_epoch(epoch)
                break
            holder = getattr(holder, "dataset", None)  # Subset -> its dataset


def fit(step: TrainStep, train_batches: Iterable[Batch], *, epochs: int = 1,
        val_batches: Iterable[Batch] | None = None, max_steps: int | None = None,
        progress: bool = True, losses: list[float] | None = None, precise_bn_batches: int = 0,
        start_epoch: int = 1, on_epoch_end: Callable[[EpochResult], None] | None = None) -> list[EpochResult]:
    """Train epochs ``start_epoch``..``epochs`` (or up to ``max_steps`` optimizer steps in all) with a tqdm bar.

    Before each epoch the loader learns the epoch (:func:`set_epoch`); after it the model is
    evaluated on ``val_batches`` (``precise_bn_batches`` > 0 first recomputes BN statistics on that
    many training batches, see :meth:`TrainStep.precise_bn`), then ``on_epoch_end`` runs (the
    example writes its checkpoint there; ``result.complete`` is False for an epoch that
    ``max_steps`` cut short, which a resume state must not record as finished). ``losses``
    (optional) receives every call's loss.

    The learning-rate schedule spans ``epochs`` epochs; it is planned here unless the caller
    planned it (``step.plan_schedule``), as a resumed run does before loading its state. With
    ``accumulate`` > 1, an epoch's trailing micro-batches that do not fill an optimizer step are
    skipped, so every epoch has the same number of steps on every rank.
    """
    from tqdm.auto import tqdm

    accumulate = step.options.accumulate
    try:
        per_epoch: int | None = len(train_batches) // accumulate  # type: ignore[arg-type]
    except TypeError:
        per_epoch = None
    if step.scheduler is None and per_epoch:
        step.plan_schedule(per_epoch, epochs)
    results: list[EpochResult] = []
    for epoch in range(start_epoch, epochs + 1):
        if max_steps is not None and step.optimizer_steps >= max_steps:
            break
        set_epoch(train_batches, epoch - 1)
        lr = step.optimizer.param_groups[0]["lr"]
        start, total_loss, calls, steps, images = time.perf_counter(), 0.0, 0, 0, 0
        limit = None if per_epoch is None else per_epoch * accumulate
        bar = tqdm(_limit(train_batches, limit), total=limit, desc=f"epoch {epoch}/{epochs}", unit="batch",
                   disable=not progress, leave=False)
        pending: list[torch.Tensor] = []  # losses still on the device: reading each one would sync
        complete = True
        for x, y in bar:
            pending.append(step(x, y))
            calls, images = calls + 1, images + len(y)
            steps += step.stepped
            if len(pending) == 10:
                total_loss += _drain(pending, losses)
                bar.set_postfix(mean_loss=f"{total_loss / calls:.3f}")
            if step.stepped and max_steps is not None and step.optimizer_steps >= max_steps:
                complete = limit is not None and calls == limit
                break
        total_loss += _drain(pending, losses)
        bar.close()
        step.discard_pending()
        synchronize(step.device)
        seconds = time.perf_counter() - start
        loss_sum, call_sum, image_sum = all_reduce([total_loss, calls, images], step.ctx)
        result = EpochResult(epoch, loss_sum / max(call_sum, 1), steps, int(image_sum), seconds, lr=lr,
                             complete=complete)
        if val_batches is not None:
            if precise_bn_batches:
                step.precise_bn(train_batches, precise_bn_batches)
            result.val_accuracy, result.val_images = step.evaluate(val_batches)
        results.append(result)
        if on_epoch_end is not None:
            on_epoch_end(result)
    return results


def _drain(pending: list[torch.Tensor], losses: list[float] | None) -> float:
    """Read the pending losses with one sync; append them to ``losses``; return their sum."""
    if not pending:
        return 0.0
    values = torch.stack(pending).float().tolist()
    pending.clear()
    if losses is not None:
        losses.extend(values)
    return float(sum(values))


def _limit(batches: Iterable[Batch], n: int | None) -> Iterator[Batch]:
    for i, batch in enumerate(batches):
        if n is not None and i >= n:
            return
        yield batch

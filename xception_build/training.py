"""One training step and a small training loop, shared by ``examples/train.py`` and ``xbuild bench --train``.

Why one module for both: the bench must time exactly the step users train with (forward, loss,
backward, optimizer step), or its figures say nothing about training. The GPU levers the issue names
(depthwise convolutions are memory-bound, so layout, precision and fusion matter) are options of
that one step: ``amp`` (bf16 / fp16 autocast, fp16 with a ``GradScaler``), ``channels_last`` and
``compile`` (``torch.compile``). Every option also runs on CPU, so the GPU code paths are tested here.

The step and loop take any iterable of ``(images, labels)`` batches; the datasets that make them
are in :mod:`xception_build.datasets`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from xception_build.calibration import calibrate_batchnorm
from xception_build.errors import BackendUnavailable, UserError

AMP_CHOICES = ("bf16", "fp16", "none")
OPTIMIZER_CHOICES = ("sgd", "adamw")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


@dataclass(frozen=True)
class TrainOptions:
    """How a step runs. Defaults follow the paper's SGD (lr 0.045, momentum 0.9); no GPU levers on."""

    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    optimizer: str = "sgd"
    lr: float = 0.045
    momentum: float = 0.9
    weight_decay: float = 1e-5
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.amp not in AMP_CHOICES:
            raise UserError(f"unknown autocast precision {self.amp!r}; "
                            f"choose one of {', '.join(AMP_CHOICES)}")
        if self.optimizer not in OPTIMIZER_CHOICES:
            raise UserError(f"unknown optimizer {self.optimizer!r}; "
                            f"choose one of {', '.join(OPTIMIZER_CHOICES)}")

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
    """The module under a ``torch.compile`` wrapper (what state dicts and checkpoints refer to)."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def prepare_model(model: nn.Module, device: torch.device, options: TrainOptions) -> nn.Module:
    """Move to ``device``, switch layout, and wrap in ``torch.compile`` when asked (compiles lazily)."""
    model = model.to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if options.compile:
        return torch.compile(model)  # type: ignore[return-value]
    return model


def make_optimizer(model: nn.Module, options: TrainOptions) -> torch.optim.Optimizer:
    # No weight decay on BN and biases (1-d tensors): the usual recipe for CNNs with BN.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": options.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if options.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=options.lr)
    return torch.optim.SGD(groups, lr=options.lr, momentum=options.momentum, nesterov=options.momentum > 0)


class TrainStep:
    """Forward, loss, backward, optimizer step: one call is one step on one batch.

    Returns the loss as a detached device tensor; calling ``.item()`` on it syncs, so loops that
    care about speed read it only now and then.
    """

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu",
                 options: TrainOptions | None = None) -> None:
        self.device = torch.device(device)
        self.options = options or TrainOptions()
        self.module = model.to(self.device)  # the plain module: checkpoints, evaluation
        self.model = prepare_model(self.module, self.device, self.options)
        self.optimizer = make_optimizer(self.module, self.options)
        # GradScaler guards fp16 gradients against underflow; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.options.amp == "fp16")
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=self.options.label_smoothing)

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
        with self.autocast():
            logits = self.model(images)
        loss = self.loss_fn(logits.float(), labels)  # loss in fp32 whatever the autocast dtype
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, int]:
        """Top-1 accuracy (0..1) and the number of images, in eval mode with the step's autocast."""
        self.model.eval()
        correct = total = 0
        for images, labels in batches:
            with self.autocast():
                logits = self.model(self.to_input(images))
            correct += int((logits.argmax(1).cpu() == labels).sum())
            total += int(labels.numel())
        return (correct / total if total else 0.0), total

    @torch.no_grad()
    def precise_bn(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_batches: int = 20) -> int:
        """Recompute BatchNorm running statistics as a plain average over ``num_batches`` batches.

        Why: running statistics are an exponential average that starts at mean 0 / variance 1 and
        forgets that start slowly (0.9 per step); after a short run they still describe the
        initial network, and eval-mode accuracy looks like chance although training worked
        ("precise BN", as in pycls). Returns the number of batches used.

        The averaging is :func:`xception_build.calibration.calibrate_batchnorm`, the one the export
        pipeline calibrates with; here it runs the step's model with the step's layout and autocast.
        """
        inputs = (self.to_input(images) for images, _ in _limit(batches, num_batches))
        with self.autocast():
            return calibrate_batchnorm(self.model, inputs)

    def save(self, path: str | Path) -> Path:
        """Safetensors checkpoint of the plain module, as ``xbuild export --weights`` reads it."""
        return save_checkpoint(self.module, path)


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Save the plain module (unwrapped from ``torch.compile``) via ``weights.save_weights``.

    ``save_weights`` writes contiguous CPU copies, so ``channels_last`` models save in the standard
    layout and ``xbuild export --weights`` reads the file like any other.
    """
    from xception_build.weights import save_weights

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(unwrap(model), path)
    return path


@dataclass
class EpochResult:
    epoch: int
    mean_loss: float
    steps: int
    images: int
    seconds: float
    val_accuracy: float | None = None


def fit(step: TrainStep, train_batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, epochs: int = 1,
        val_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None, max_steps: int | None = None,
        progress: bool = True, losses: list[float] | None = None,
        precise_bn_batches: int = 0) -> list[EpochResult]:
    """Train ``epochs`` passes (or ``max_steps`` steps in all) with a tqdm bar; evaluate each epoch.

    ``losses`` (optional) receives every step's loss, for callers that check learning.
    ``precise_bn_batches`` > 0 recomputes BN statistics on that many training batches before each
    evaluation (see :meth:`TrainStep.precise_bn`).
    Cosine learning-rate decay over the planned steps, as in most CNN recipes.
    """
    import time

    from tqdm.auto import tqdm

    try:
        per_epoch = len(train_batches)  # type: ignore[arg-type]
    except TypeError:
        per_epoch = None
    planned = max_steps if per_epoch is None else min(per_epoch * epochs, max_steps or per_epoch * epochs)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(step.optimizer, T_max=planned)
                 if planned else None)
    results: list[EpochResult] = []
    done = 0
    for epoch in range(1, epochs + 1):
        start, total_loss, steps, images = time.perf_counter(), 0.0, 0, 0
        bar = tqdm(_limit(train_batches, None if max_steps is None else max_steps - done), total=per_epoch,
                   desc=f"epoch {epoch}/{epochs}", unit="step", disable=not progress, leave=False)
        pending: list[torch.Tensor] = []  # losses still on the device: reading each one would sync
        for x, y in bar:
            pending.append(step(x, y))
            if scheduler is not None and planned is not None and done < planned:
                scheduler.step()
            steps, images, done = steps + 1, images + len(y), done + 1
            if len(pending) == 10:
                total_loss += _drain(pending, losses)
                bar.set_postfix(mean_loss=f"{total_loss / steps:.3f}")
        total_loss += _drain(pending, losses)
        bar.close()
        synchronize(step.device)
        result = EpochResult(epoch, total_loss / max(steps, 1), steps, images, time.perf_counter() - start)
        if val_batches is not None:
            if precise_bn_batches:
                step.precise_bn(train_batches, precise_bn_batches)
            result.val_accuracy, _ = step.evaluate(val_batches)
        results.append(result)
        if max_steps is not None and done >= max_steps:
            break
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


def _limit(batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
           n: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for i, batch in enumerate(batches):
        if n is not None and i >= n:
            return
        yield batch

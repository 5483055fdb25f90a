"""Train any xception-build spec, in one process or many, and save checkpoints that resume exactly.

Data, in order of preference:
  --data DIR with ``cifar-10-batches-py`` (or its files) in it: CIFAR-10 as already on disk;
  --data DIR with ``train/`` (and ``val/``): image folders, ``<split>/<class>/<image>`` (needs Pillow);
  --data DIR of ``<class>/<image>``: one image folder, 10% held out for validation;
  no --data: a synthetic task (class templates plus noise) that any spec can learn in minutes.

Recipes (--recipe): ``paper``, the paper's ImageNet schedule (SGD, momentum 0.9, lr 0.045 decayed
by 0.94 every 2 epochs, weight decay 1e-5), the default; ``modern``: AdamW, lr 1e-3, weight decay
0.05, label smoothing 0.1, linear warm-up then cosine. --lr and friends override single values.
The learning rate is that of the global batch (batch size x processes x --accumulate).

On a GPU the fast path is on by default: bf16 autocast (fp16 + GradScaler where bf16 is missing)
and ``channels_last``; ``--compile`` adds ``torch.compile``.

Many processes: start the same command with PyTorch's torchrun. Each process trains on its share
of every epoch with DistributedDataParallel (NCCL on GPUs, gloo on CPUs); --batch-size is per
process; --sync-bn normalises over the global batch; only rank 0 prints and writes checkpoints;
validation accuracy counts every validation image once, over all ranks.

Checkpoints, after every epoch: --out (safetensors weights, what ``xbuild export --weights``
reads) and beside it NAME.resume.pt (optimizer, schedule, RNG, epoch: what --resume reads).

Examples::

    python examples/train.py specs/xception_cifar.yaml --epochs 2
    python examples/train.py specs/xception_cifar.yaml --data ~/data/cifar10 --epochs 30 --compile
    torchrun --nproc-per-node 2 examples/train.py specs/xception_cifar.yaml --data DIR --device cpu
    torchrun --nproc-per-node 8 examples/train.py specs/xception.yaml --data ~/data/imagenet \\
        --batch-size 32 --sync-bn --epochs 100 --out runs/xception.safetensors
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        examples/train.py specs/xception.yaml --data ~/data/imagenet --batch-size 32 --sync-bn
    python examples/train.py specs/xception_cifar.yaml --resume runs/checkpoint.resume.pt
    xbuild export specs/xception_cifar.yaml --weights runs/checkpoint.safetensors --out build/

Exit codes: 0 success; 2 user error (bad option, spec, data or checkpoint); 3 a backend is missing
(no GPU, no torch.distributed); 130 interrupted (the last checkpoint stays intact); 1 in a rank
that lost another rank of its job (that rank's own message is above). Under torchrun the job's
exit code is torchrun's: 0, or 1 when any rank failed, whose message and code it reports.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import random_split

from xception_build import build_model, load_spec
from xception_build.checkpoint import (
    capture_rng,
    load_training_state,
    restore_rng,
    restore_step,
    resume_path,
    save_training_state,
    state_of,
)
from xception_build.datasets import open_data, synthetic_dataset
from xception_build.distributed import (
    DistContext,
    all_gather_object,
    context_from_environment,
    init_distributed,
    lost_peer_reason,
    shutdown,
)
from xception_build.errors import UserError, XBuildError
from xception_build.loaders import default_workers, eval_loader, train_loader
from xception_build.recipes import RECIPES, SCHEDULE_CHOICES, recipe
from xception_build.spec import Spec, dump_resolved_yaml
from xception_build.training import (
    AMP_CHOICES,
    OPTIMIZER_CHOICES,
    EpochResult,
    TrainOptions,
    TrainStep,
    fit,
    resolve_device,
)

# Settings that change what a resumed run computes; a difference is reported, not refused.
_COMPARED = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "label_smoothing", "schedule",
             "decay_rate", "decay_epochs", "warmup_epochs", "sync_bn", "global_batch", "seed", "data")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("spec", help="spec YAML, e.g. specs/xception_cifar.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a spec value (repeatable), e.g. head.num_classes=10")
    p.add_argument("--data", type=Path, help="CIFAR-10 folder or image folder; synthetic data when omitted")
    p.add_argument("--synthetic-size", type=int, default=2048, help="synthetic training images [2048]")
    p.add_argument("--epochs", type=int, help="epochs in all [5; on --resume: the resumed run's]")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps in all (a quick check)")
    p.add_argument("--batch-size", type=int, default=64, help="images per process and step [64]")
    p.add_argument("--accumulate", type=int, default=1, metavar="K",
                   help="micro-batches per optimizer step (gradient accumulation) [1]")
    p.add_argument("--recipe", choices=tuple(RECIPES), default="paper", help="optimizer and schedule [paper]")
    p.add_argument("--optimizer", choices=OPTIMIZER_CHOICES, help="override the recipe's optimizer")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate (for the global batch)")
    p.add_argument("--weight-decay", type=float, help="override the recipe's weight decay")
    p.add_argument("--label-smoothing", type=float, help="override the recipe's label smoothing")
    p.add_argument("--schedule", choices=SCHEDULE_CHOICES, help="override the recipe's schedule")
    p.add_argument("--warmup-epochs", type=float, help="override the recipe's linear warm-up")
    p.add_argument("--sync-bn", action="store_true", help="BatchNorm over the global batch (torchrun jobs)")
    p.add_argument("--device", help="cpu | cuda | cuda:N [cuda when visible; under torchrun cuda:LOCAL_RANK]")
    p.add_argument("--amp", choices=AMP_CHOICES, help="autocast precision [bf16 on GPU, none on CPU]")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout [on for GPU]")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loader processes per rank [image folders: the CPU cores / processes on the node, "
                        "at most 8; in-memory data: 0]")
    p.add_argument("--precise-bn", type=int, default=20, metavar="N",
                   help="recompute BN statistics on N training batches before each evaluation (0: off) [20]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/checkpoint.safetensors"),
                   help="weights file; the resume state goes beside it as NAME.resume.pt")
    p.add_argument("--resume", type=Path, metavar="FILE", help="continue the run saved in FILE (NAME.resume.pt)")
    p.add_argument("--dist-timeout", type=float, default=10.0, metavar="MINUTES",
                   help="torchrun jobs: fail when a rank waits longer than this for the others [10]")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def make_datasets(args: argparse.Namespace, spec: Spec, num_classes: int) -> tuple[Any, Any, str, bool]:
    """(train, validation, description, whether items are decoded from files) for --data
    (xception_build.datasets.open_data), or the synthetic task without it."""
    if args.data is None:
        held_out = max(args.synthetic_size // 8, args.batch_size)
        data = synthetic_dataset(args.synthetic_size + held_out, spec.input.shape, num_classes, seed=args.seed)
        train, val = random_split(data, [args.synthetic_size, held_out], torch.Generator().manual_seed(0))
        return train, val, f"synthetic ({num_classes} classes)", False
    splits = open_data(args.data, spec.input, num_classes, seed=args.seed)
    return splits.train, splits.val, splits.description, splits.decodes_files


def make_options(args: argparse.Namespace, device: torch.device) -> TrainOptions:
    """The recipe, the command line's overrides of it, and the device's fast-path defaults."""
    gpu = device.type == "cuda"
    values = recipe(args.recipe)
    overrides = {"optimizer": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay,
                 "label_smoothing": args.label_smoothing, "schedule": args.schedule,
                 "warmup_epochs": args.warmup_epochs}
    if args.optimizer not in (None, values["optimizer"]) and args.lr is None:
        values["lr"] = 1e-3 if args.optimizer == "adamw" else 0.045  # SGD's rate would make AdamW diverge
    values.update({k: v for k, v in overrides.items() if v is not None})
    amp = args.amp or (("bf16" if torch.cuda.is_bf16_supported() else "fp16") if gpu else "none")
    return TrainOptions(amp=amp, channels_last=gpu if args.channels_last is None else args.channels_last,
                        compile=args.compile, accumulate=args.accumulate, sync_bn=args.sync_bn, **values)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = DistContext()
    try:
        ctx = context_from_environment()
        return run(args)
    except XBuildError as exc:
        print(f"error{ctx.tag()}: {exc.format()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"interrupted{ctx.tag()}; checkpoints already written are intact "
              f"(continue with --resume {resume_path(args.out)})", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        reason = lost_peer_reason(exc) if ctx.world_size > 1 else None
        if reason is None:
            raise  # a bug: keep the traceback
        print(f"error{ctx.tag()}: lost contact with the other processes of the job ({reason}); "
              "the message of the process that failed first is above", file=sys.stderr)
        return 1
    finally:
        shutdown()


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.dist_timeout <= 0:
        raise UserError(f"--dist-timeout {args.dist_timeout}: must be a positive number of minutes")
    ctx, device = init_distributed(device, timeout=timedelta(minutes=args.dist_timeout))
    say = print if ctx.is_main else _silent
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    options = make_options(args, device)
    state = load_training_state(args.resume) if args.resume else None
    spec = load_spec(args.spec, overrides=args.overrides)
    resolved = dump_resolved_yaml(spec)
    if state is not None and state["spec"] != resolved:
        raise UserError(f"{args.resume} was trained with another spec than {args.spec} "
                        f"{' '.join('--set ' + o for o in args.overrides)}".rstrip(),
                        hint="resume with the spec and --set overrides the run started with")
    if ctx.is_main:
        _check_writable(args.out)
    # Each rank its own dropout draws; the model's initialisation is the same everywhere (build_model's
    # own generator), and DDP copies rank 0's parameters to all ranks anyway.
    _seed_everything(args.seed + ctx.rank)
    model = build_model(spec, seed=args.seed)
    train_data, val_data, described, on_disk = make_datasets(args, spec, model.num_classes)
    workers = args.workers if args.workers is not None else default_workers(ctx, decodes_files=on_disk)
    loader = train_loader(train_data, args.batch_size, ctx, seed=args.seed, workers=workers, pin_memory=gpu)
    val_loader = eval_loader(val_data, args.batch_size, ctx, workers=workers, pin_memory=gpu)
    steps_per_epoch = len(loader) // options.accumulate
    if steps_per_epoch == 0:
        raise UserError(f"--accumulate {options.accumulate} is more than the {len(loader)} batches per epoch "
                        "of each process", hint="lower --accumulate or --batch-size")
    epochs = args.epochs if args.epochs is not None else (state["epochs"] if state else 5)
    if epochs < 1:
        raise UserError(f"--epochs {epochs}: must be at least 1")
    step = TrainStep(model, device, options, ctx=ctx)
    step.plan_schedule(steps_per_epoch, epochs)
    config = {**asdict(options), "batch_size": args.batch_size, "world_size": ctx.world_size,
              "global_batch": args.batch_size * ctx.world_size * options.accumulate, "seed": args.seed,
              "data": described}
    history: list[dict[str, Any]] = []
    start_epoch = 1
    if state is not None:
        restore_step(step, state, str(args.resume))
        history, start_epoch = list(state["history"]), state["epoch"] + 1
        if len(state["rng"]) == ctx.world_size:
            restore_rng(state["rng"][ctx.rank], device)
        changed = [f"{k} {state['config'].get(k)!r} -> {config[k]!r}" for k in _COMPARED
                   if state["config"].get(k) != config[k]]
        if len(state["rng"]) != ctx.world_size:
            changed.append(f"processes {len(state['rng'])} -> {ctx.world_size} (random draws restart)")
        say(f"resuming {args.resume} after epoch {state['epoch']} (step {state['step']})")
        if changed:
            say("note: settings differ from the saved run, so it will not continue exactly as it would have: "
                + "; ".join(changed))

    params = sum(p.numel() for p in model.parameters()) / 1e6
    say(f"training {spec.name} ({params:.2f} M params) on {described}: {len(train_data)} train / "
        f"{len(val_data)} val images, {device}, {options.describe()}")
    say(f"{ctx.world_size} process{'es' if ctx.world_size > 1 else ''} x batch {args.batch_size}"
        f"{f' x {options.accumulate} accumulated' if options.accumulate > 1 else ''} = global batch "
        f"{config['global_batch']}; recipe {args.recipe} ({options.optimizer}, lr {options.lr:g}, "
        f"{options.schedule}){', sync-bn' if options.sync_bn and ctx.world_size > 1 else ''}; "
        f"{workers} loader worker{'s' if workers != 1 else ''} per process")
    weights, resume = args.out, resume_path(args.out)

    def on_epoch_end(result: EpochResult) -> None:
        history.append({"epoch": result.epoch, "loss": result.mean_loss, "steps": result.steps,
                        "val_accuracy": result.val_accuracy, "val_images": result.val_images})
        rng = all_gather_object(capture_rng(device), ctx)  # every rank takes part; rank 0 saves
        speed = result.images / result.seconds if result.seconds else 0.0
        say(f"epoch {result.epoch}/{epochs}: loss {result.mean_loss:.4f}, {speed:.1f} img/s, lr {result.lr:.4g}, "
            f"val accuracy {100 * (result.val_accuracy or 0):.2f}% ({result.val_images} images)")
        if not result.complete:  # resuming from here would skip the rest of the epoch
            say(f"stopped by --max-steps within epoch {result.epoch}: weights written, no resume state "
                "(resume states are written at the end of an epoch)")
        if ctx.is_main:
            try:
                if result.complete:
                    save_training_state(resume, state_of(step, epoch=result.epoch, epochs=epochs, seed=args.seed,
                                                         rng=rng, spec=resolved, config=config, history=history))
                step.save(weights, metadata={"spec": resolved, "epoch": str(result.epoch)})
            except OSError as exc:
                raise UserError(f"cannot write the checkpoint: {exc.strerror or exc}", hint=f"--out {weights}") from exc

    if start_epoch > epochs:
        say(f"nothing to train: {args.resume} has finished epoch {start_epoch - 1} of {epochs}")
    else:
        fit(step, loader, epochs=epochs, val_batches=val_loader, max_steps=args.max_steps,
            progress=not args.no_progress and ctx.is_main, precise_bn_batches=args.precise_bn,
            start_epoch=start_epoch, on_epoch_end=on_epoch_end)
    if history:
        written = f"; resume state: {resume}" if resume.is_file() else ""
        say(f"checkpoint: {weights} (xbuild export {args.spec} --weights {weights}){written}")
        final = history[-1]
        say(f"final accuracy: {100 * (final['val_accuracy'] or 0):.2f}% top-1 on {final['val_images']} validation "
            f"images ({described}) after {step.optimizer_steps} steps")
    return 0


def _silent(*_args: object, **_kwargs: object) -> None:
    """Ranks other than 0 print nothing but their own errors."""


def _seed_everything(seed: int) -> None:
    import numpy as np

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _check_writable(out: Path) -> None:
    """Refuse an --out that cannot be written before training, not after the first epoch."""
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the checkpoint folder {folder}: {exc.strerror or exc}",
                        hint=f"--out {out}") from exc
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give the weights file's name",
                        hint=f"--out {out / 'checkpoint.safetensors'}")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write to the checkpoint folder {folder}", hint=f"--out {out}")


if __name__ == "__main__":
    sys.exit(main())

"""Train any xception-build spec, then save a checkpoint that ``xbuild export --weights`` accepts.

Data, in order of preference:
  --data DIR with ``cifar-10-batches-py`` (or its files) in it: CIFAR-10 as already on disk;
  --data DIR with ``train/`` (and ``val/``): image folders, ``<split>/<class>/<image>`` (needs Pillow);
  --data DIR of ``<class>/<image>``: one image folder, 10% held out for validation;
  no --data: a synthetic task (class templates plus noise) that any spec can learn in minutes.

On a GPU the fast path is on by default: bf16 autocast (fp16 + GradScaler where bf16 is missing)
and ``channels_last``; ``--compile`` adds ``torch.compile``. Examples::

    python examples/train.py specs/xception_cifar.yaml --epochs 2
    python examples/train.py specs/xception_cifar.yaml --data ~/data/cifar10 --epochs 30 --compile
    python examples/train.py specs/xception.yaml --data ~/data/imagenette --set head.num_classes=10 \\
        --batch-size 64 --out runs/xception.safetensors
    xbuild export specs/xception_cifar.yaml --weights runs/checkpoint.safetensors --out build/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset, random_split

from xception_build import build_model, load_spec
from xception_build.datasets import ImageFolder, UInt8Images, load_cifar10, synthetic_dataset
from xception_build.errors import UserError, XBuildError
from xception_build.training import AMP_CHOICES, OPTIMIZER_CHOICES, TrainOptions, TrainStep, fit, resolve_device


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("spec", help="spec YAML, e.g. specs/xception_cifar.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a spec value (repeatable), e.g. head.num_classes=10")
    p.add_argument("--data", type=Path, help="CIFAR-10 folder or image folder; synthetic data when omitted")
    p.add_argument("--synthetic-size", type=int, default=2048, help="synthetic training images [2048]")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-steps", type=int, help="stop after this many steps in all")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", choices=OPTIMIZER_CHOICES, default="sgd")
    p.add_argument("--lr", type=float, help="learning rate [sgd 0.045, adamw 1e-3]")
    p.add_argument("--device", help="cpu | cuda | cuda:N [cuda when visible]")
    p.add_argument("--amp", choices=AMP_CHOICES, help="autocast precision [bf16 on GPU, none on CPU]")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout [on for GPU]")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--workers", type=int, default=None, help="data-loader processes [4 for image folders]")
    p.add_argument("--precise-bn", type=int, default=20, metavar="N",
                   help="recompute BN statistics on N training batches before each evaluation (0: off) [20]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/checkpoint.safetensors"), help="checkpoint path")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def make_datasets(args: argparse.Namespace, cfg: dict[str, Any], num_classes: int) -> tuple[Any, Any, str]:
    """(train, validation, description) for --data, or the synthetic task without it."""
    size, norm = tuple(cfg["input_size"]), (tuple(cfg["mean"]), tuple(cfg["std"]))
    if args.data is None:
        held_out = max(args.synthetic_size // 8, args.batch_size)
        data = synthetic_dataset(args.synthetic_size + held_out, size, num_classes, seed=args.seed)
        train, val = random_split(data, [args.synthetic_size, held_out], torch.Generator().manual_seed(0))
        return train, val, f"synthetic ({num_classes} classes)"
    root = args.data.expanduser()
    if (root / "cifar-10-batches-py").is_dir() or (root / "data_batch_1").is_file():
        if num_classes != 10:
            raise UserError(f"CIFAR-10 has 10 classes, the spec's head has {num_classes}",
                            hint="add --set head.num_classes=10")
        train_set = UInt8Images(*load_cifar10(root, train=True), size, norm, train=True)
        return train_set, UInt8Images(*load_cifar10(root, train=False), size, norm), "CIFAR-10"
    return _image_folders(root, size, norm, float(cfg.get("crop_pct", 0.875)), num_classes, args.seed)


def _image_folders(root: Path, size: Any, norm: Any, crop: float, num_classes: int,
                   seed: int) -> tuple[Any, Any, str]:
    """``root/train`` (+ ``val``/``validation``/``test``), or one folder with 10% held out."""
    whole = ImageFolder(root / "train" if (root / "train").is_dir() else root, size, norm, crop_pct=crop,
                        train=True)
    val_dir = next((root / d for d in ("val", "validation", "test") if (root / d).is_dir()), None)
    train: Any = whole
    if val_dir is not None and (root / "train").is_dir():
        val: Any = ImageFolder(val_dir, size, norm, crop_pct=crop)
    else:  # hold out 10%, read without the training augmentation
        order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(seed)).tolist()
        count = max(1, len(whole) // 10)
        train = Subset(whole, order[count:])
        val = Subset(ImageFolder(whole.root, size, norm, crop_pct=crop), order[:count])
    classes = len(whole.classes)
    if classes > num_classes:
        raise UserError(f"{root} has {classes} classes, the spec's head has {num_classes} outputs",
                        hint=f"add --set head.num_classes={classes}")
    return train, val, f"image folder {root} ({classes} classes)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except XBuildError as exc:
        print(f"error: {exc.format()}", file=sys.stderr)
        return exc.exit_code


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    amp = args.amp or (("bf16" if torch.cuda.is_bf16_supported() else "fp16") if gpu else "none")
    options = TrainOptions(amp=amp, channels_last=gpu if args.channels_last is None else args.channels_last,
                           compile=args.compile, optimizer=args.optimizer,
                           lr=args.lr or (1e-3 if args.optimizer == "adamw" else 0.045))
    spec = load_spec(args.spec, overrides=args.overrides)
    model = build_model(spec, seed=args.seed)
    train_data, val_data, described = make_datasets(args, model.pretrained_cfg, model.num_classes)
    # Image folders decode JPEGs per item: worth worker processes. In-memory tensors are not.
    on_disk = isinstance(train_data, (ImageFolder, Subset)) and args.data is not None
    workers = args.workers if args.workers is not None else (4 if on_disk else 0)
    loader = DataLoader(train_data, batch_size=args.batch_size, shuffle=True, drop_last=len(train_data) >
                        args.batch_size, num_workers=workers, pin_memory=gpu,
                        generator=torch.Generator().manual_seed(args.seed))
    val_loader = DataLoader(val_data, batch_size=args.batch_size, num_workers=workers, pin_memory=gpu)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"training {spec.name} ({params:.2f} M params) on {described}: {len(train_data)} train / "
          f"{len(val_data)} val images, {device}, {options.describe()}")
    torch.manual_seed(args.seed)
    step = TrainStep(model, device, options)
    results = fit(step, loader, epochs=args.epochs, val_batches=val_loader, max_steps=args.max_steps,
                  progress=not args.no_progress, precise_bn_batches=args.precise_bn)
    for r in results:
        print(f"epoch {r.epoch}: loss {r.mean_loss:.4f}, {r.images / r.seconds:.1f} img/s, "
              f"val accuracy {100 * (r.val_accuracy or 0):.2f}%")
    path = step.save(args.out)
    print(f"checkpoint: {path} (xbuild export {args.spec} --weights {path})")
    final = results[-1]
    print(f"final accuracy: {100 * (final.val_accuracy or 0):.2f}% top-1 on {len(val_data)} validation images"
          f" ({described}) after {sum(r.steps for r in results)} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())

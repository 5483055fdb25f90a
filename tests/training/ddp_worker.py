"""Trains the small CIFAR spec for a few steps and saves every step's parameters (one file per rank).

Run by ``test_distributed.py`` twice on the same data and seed: under ``torchrun --nproc-per-node 2``
with batch B, and as a plain one-process run with batch 2B. It uses the library's pieces exactly as
``examples/train.py`` does (``init_distributed``, ``train_loader``, ``TrainStep``, ``set_epoch``) and
adds only the recording. Dropout is off (``head.dropout=0``) and the synthetic data has no
augmentation, so the two runs differ only in how the batch is split over processes.

``--double`` trains in float64. In float32 the two runs drift apart although they compute the same
function: their sums are rounded in different orders, and at this learning rate on batches this
small the training dynamics amplify rounding about tenfold per step (measured here: one process
with 1 thread against the same process with 2 threads, nothing else changed, differ by 2e-2 after
8 steps). In float64 rounding is 1e-16 and the same check can demand agreement to 1e-9.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from xception_build import build_model  # noqa: E402
from xception_build.datasets import synthetic_dataset  # noqa: E402
from xception_build.distributed import init_distributed, shutdown  # noqa: E402
from xception_build.loaders import train_loader  # noqa: E402
from xception_build.training import TrainOptions, TrainStep, set_epoch  # noqa: E402

# middle.repeat=1: a quarter of the middle flow, to keep the test fast; every block kind is still there.
OVERRIDES = ["head.dropout=0", "middle.repeat=1"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--double", action="store_true", help="float64 model and data")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.double:
        torch.set_default_dtype(torch.float64)  # the model's parameters and the synthetic images
    ctx, device = init_distributed(torch.device("cpu"))
    try:
        model = build_model(ROOT / "specs" / "xception_cifar.yaml", overrides=OVERRIDES, seed=0)
        data = synthetic_dataset(args.images, (3, 32, 32), 10, seed=0)
        loader = train_loader(data, args.batch_size, ctx, seed=0, workers=0)
        step = TrainStep(model, device, TrainOptions(sync_bn=args.sync_bn), ctx=ctx)
        step.plan_schedule(len(loader), args.epochs)
        params: list[torch.Tensor] = []
        for epoch in range(args.epochs):
            set_epoch(loader, epoch)
            for images, labels in loader:
                step(images, labels)
                params.append(torch.cat([p.detach().flatten() for p in step.module.parameters()]))
        buffers = torch.cat([b.detach().flatten().to(params[0].dtype) for b in step.module.buffers()])
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save({"params": torch.stack(params), "buffers": buffers, "world_size": ctx.world_size},
                   args.out / f"rank{ctx.rank}.pt")
    finally:
        shutdown()


if __name__ == "__main__":
    main()

"""Synchronised BatchNorm: PyTorch's on GPUs, and a CPU counterpart for gloo jobs.

On GPUs ``--sync-bn`` is ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, unchanged.

On CPUs PyTorch has none: ``torch.nn.SyncBatchNorm`` computes its statistics with GPU-only kernels
(``batch_norm_stats`` and friends have no CPU implementation), raises "SyncBatchNorm expected
input tensor to be on GPU" for CPU tensors, and DDP refuses CPU modules that contain it ("SyncBatchNorm
layers only work with GPU modules"); enabling it on CPU was proposed upstream and closed unmerged
(pytorch/pytorch#78078). CPU jobs still need it: they are how this project checks, without a
GPU, that N processes with ``--sync-bn`` train exactly like one process with N times the batch.

:class:`CPUSyncBatchNorm` is that counterpart, built on ``torch.distributed.all_reduce``: in
training mode, inside a process group of more than one rank, it normalises with the statistics of
the whole global batch, combined from every rank's count, mean and variance by one all-reduce
(as ``torch.nn.SyncBatchNorm`` combines them with one all-gather). Its backward sums the gradients
of those statistics over the ranks, as ``torch.nn.SyncBatchNorm``'s does. Everywhere else
(evaluation, one process) it is the plain BatchNorm computation. Its state dict is that of
``BatchNorm2d``, so checkpoints load into the plain model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over the process group.

    The backward is the same sum: every rank's loss depends on the global sum, so each rank's
    share of the gradient is the sum of all ranks' gradients with respect to it. (This is what
    ``torch.distributed.nn.functional.all_reduce`` does; that API is deprecated, and its suggested
    replacement, the functional collectives, has no backward for ``all_reduce``.)
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _AllReduceSum.apply(grad, ctx.group), None


def _global_sum(tensor: torch.Tensor, group: Any) -> torch.Tensor:
    return _AllReduceSum.apply(tensor, group)  # type: ignore[no-any-return]


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of a gloo job (see the module docstring); any input of 2+ dimensions."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 (PyTorch's signature)
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
        joined = dist.is_available() and dist.is_initialized()
        group = self.process_group or (dist.group.WORLD if joined else None)
        if not self.training or group is None or dist.get_world_size(group) == 1:
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

        # Statistics in fp32 at least (bf16/fp16 inputs under autocast), as F.batch_norm keeps them.
        x = input.to(torch.promote_types(input.dtype, torch.float32))
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        # One all-reduce per layer and step (one more in backward): each rank's count, sum and sum of
        # squares, the latter from its own mean and variance (computed stably, in two passes) and
        # combined in float64, where E[x²] − E[x]² loses nothing at activation scales.
        var_r, mean_r = torch.var_mean(x, dims, correction=0)
        n_r = float(x.numel() // x.size(1))
        local = torch.cat([n_r * mean_r.double(), n_r * (var_r.double() + mean_r.double() ** 2),
                           torch.tensor([n_r], dtype=torch.float64)])
        total = _global_sum(local, group)
        channels = x.size(1)
        n = float(total[-1].item())
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {int(n)} in all")
        mean64 = total[:channels] / n
        var64 = (total[channels:2 * channels] / n - mean64 ** 2).clamp_min(0)
        mean, var = mean64.to(x.dtype), var64.to(x.dtype)
        # y = x * scale + shift, the per-channel affine form PyTorch's CPU batch norm kernel applies:
        # one fused pass over the activations forward and few backward, against five for the
        # textbook (x - mean) * invstd * weight + bias (measured: most of this layer's time).
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        out = torch.addcmul(shift.view(shape), x, scale.view(shape))
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():  # the unbiased variance, as F.batch_norm records it
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * (n / (n - 1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return out.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device, process_group: Any = None) -> nn.Module:
    """Every BatchNorm layer of ``module`` synchronised over the process group, for training on ``device``.

    GPUs: ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``. CPUs: the same walk, making
    :class:`CPUSyncBatchNorm` layers that share the originals' parameters and buffers. The module
    is changed in place and returned (a new object only when it is itself a BatchNorm layer).
    """
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats, process_group)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device, process_group))
    return out

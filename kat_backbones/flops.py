"""FLOP counting with forward hooks, in the KAT paper's convention (and with attention matmuls, separately).

Paper convention (fvcore-style, as the KAT paper reports GFLOPs):

- ``nn.Linear`` / ``nn.Conv*`` / ``nn.ConvTranspose*``: one FLOP per multiply-accumulate (bias ignored);
- normalisation layers (LayerNorm, GroupNorm, BatchNorm, ...): 5 FLOPs per element with an affine transform,
  4 without;
- :class:`kat_backbones.layers.GroupRational`: 21 FLOPs per element;
- attention matmuls (q @ k^T and attn @ v): NOT counted; activations, softmax, residual adds: not counted.

The full count adds the attention matmuls (one FLOP per MAC: 2 B N^2 C per attention layer with N tokens and C
inner channels), counted on timm's ``Attention`` modules (and any module registered for the ``'attention'`` kind),
and the Fourier-KArAt operator (:class:`kat_backbones.layers.FourierKArAt`, kind ``'karat'``).

Extend with :func:`register_flop_handler` (e.g. an attention variant or a norm layer of another package)::

    @register_flop_handler(MyAttention, kind="attention")
    def _my_attention(module, inputs, output) -> int:
        ...

Only modules are seen: FLOPs of bare functional calls (``F.linear`` outside a module) are not counted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.layers import Attention
from timm.models.vision_transformer_sam import Attention as SamAttention
from torch import nn

from kat_backbones.layers import FourierKArAt, GroupRational

__all__ = [
    "FlopReport",
    "FLOP_KINDS",
    "PAPER_KINDS",
    "RATIONAL_FLOPS_PER_ELEMENT",
    "count_flops",
    "register_flop_handler",
]

RATIONAL_FLOPS_PER_ELEMENT = 21
"""Cost of one group-rational evaluation in the paper's FLOP convention."""

FLOP_KINDS = ("linear", "conv", "norm", "rational", "attention")
PAPER_KINDS = ("linear", "conv", "norm", "rational")
"""Kinds in the paper's convention (everything but the attention matmuls)."""

FlopHandler = Callable[[nn.Module, tuple, Any], int]
_HANDLERS: dict[type, tuple[str, FlopHandler]] = {}


def register_flop_handler(module_type: type, kind: str) -> Callable[[FlopHandler], FlopHandler]:
    """Decorator registering ``handler(module, inputs, output) -> flops`` for ``module_type`` (and subclasses).

    Args:
        module_type: the module class to count.
        kind: the bucket the FLOPs go to: one of :data:`FLOP_KINDS` (``'attention'`` is excluded from the paper
            convention, the others are included) or a new name (reported, counted in the full total only).
    """

    def wrap(handler: FlopHandler) -> FlopHandler:
        _HANDLERS[module_type] = (kind, handler)
        return handler

    return wrap


def _lookup(module: nn.Module) -> tuple[str, FlopHandler] | None:
    for cls in type(module).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    return None


@dataclass
class FlopReport:
    """FLOPs by kind (one FLOP per multiply-accumulate) and the parameter count.

    Attributes:
        flops: FLOPs per kind (keys from :data:`FLOP_KINDS`, plus any registered extra kind).
        params: number of parameters of the model.
        calls: number of counted module calls per kind.
    """

    flops: dict[str, int] = field(default_factory=dict)
    params: int = 0
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def paper(self) -> int:
        """FLOPs in the paper's convention (linear/conv MACs + norms + 21/element rationals, no attention)."""
        return sum(self.flops.get(k, 0) for k in PAPER_KINDS)

    @property
    def full(self) -> int:
        """Every counted FLOP, attention matmuls included."""
        return sum(self.flops.values())

    def summary(self) -> str:
        """Multi-line human-readable summary (GFLOPs)."""
        lines = [f"params: {self.params:,}"]
        for kind, value in self.flops.items():
            lines.append(f"  {kind:<10} {value / 1e9:10.4f} GFLOPs ({self.calls.get(kind, 0)} calls)")
        lines.append(f"GFLOPs (paper convention, no attention matmuls): {self.paper / 1e9:.4f}")
        lines.append(f"GFLOPs (full, with attention matmuls):           {self.full / 1e9:.4f}")
        return "\n".join(lines)


def count_flops(
    model: nn.Module,
    inputs: torch.Tensor | tuple | None = None,
    *,
    forward: Callable[[], Any] | None = None,
) -> FlopReport:
    """Counts the FLOPs of one forward pass of ``model`` (in eval mode, without gradients).

    Args:
        model: the model; every submodule with a registered handler is counted.
        inputs: a tensor or a tuple of positional arguments for ``model(...)``.
        forward: alternatively, a zero-argument callable that runs the forward pass to measure (e.g.
            ``lambda: model.extract_feat(x)``).

    Returns:
        The :class:`FlopReport`. The model's training mode is restored afterwards.
    """
    if (inputs is None) == (forward is None):
        raise ValueError("count_flops: give exactly one of inputs and forward")
    flops: dict[str, int] = defaultdict(int)
    calls: dict[str, int] = defaultdict(int)
    for kind in FLOP_KINDS:
        flops[kind] = 0
        calls[kind] = 0

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        kind, handler = _lookup(module)
        flops[kind] += int(handler(module, args, output))
        calls[kind] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if _lookup(m) is not None]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if forward is not None:
                forward()
            elif isinstance(inputs, tuple):
                model(*inputs)
            else:
                model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return FlopReport(flops=dict(flops), params=sum(p.numel() for p in model.parameters()), calls=dict(calls))


def _first_tensor(args: Iterable) -> torch.Tensor:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    raise ValueError("no tensor input")


@register_flop_handler(nn.Linear, kind="linear")
def _linear(module: nn.Linear, args: tuple, output: torch.Tensor) -> int:
    return output.numel() * module.in_features


@register_flop_handler(nn.modules.conv._ConvNd, kind="conv")
def _conv(module: nn.modules.conv._ConvNd, args: tuple, output: torch.Tensor) -> int:
    kernel = 1
    for k in module.kernel_size:
        kernel *= k
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        x = _first_tensor(args)
        return x.numel() * (module.out_channels // module.groups) * kernel
    return output.numel() * (module.in_channels // module.groups) * kernel


def _norm(module: nn.Module, args: tuple, output: Any) -> int:
    affine = getattr(module, "elementwise_affine", None)
    if affine is None:
        affine = getattr(module, "affine", False)
    return _first_tensor(args).numel() * (5 if affine else 4)


for _cls in (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.modules.instancenorm._InstanceNorm):
    register_flop_handler(_cls, kind="norm")(_norm)


@register_flop_handler(GroupRational, kind="rational")
def _rational(module: GroupRational, args: tuple, output: torch.Tensor) -> int:
    return RATIONAL_FLOPS_PER_ELEMENT * _first_tensor(args).numel()


@register_flop_handler(Attention, kind="attention")
@register_flop_handler(SamAttention, kind="attention")  # ViTDet-style attention ((B, H, W, C) input), dense backbone
def _qkv_attention(module: nn.Module, args: tuple, output: Any) -> int:
    """q @ k^T and attn @ v of a self-attention with a fused ``qkv`` Linear: 2 B N^2 C (C = inner width)."""
    x = _first_tensor(args)
    batch, channels_in = x.shape[0], x.shape[-1]
    tokens = x[0].numel() // channels_in
    inner = module.qkv.out_features // 3
    return 2 * batch * tokens * tokens * inner


# Fourier-KArAt (kind 'karat': in the full count, not in the paper convention, like the attention matmuls)
@register_flop_handler(FourierKArAt, kind="karat")
def _karat(module: FourierKArAt, args: tuple, output: torch.Tensor) -> int:
    """MACs: 2G matmuls (N x N) @ (N x r) for Phi and one (N x r) @ (r x N) for W, per head and batch item."""
    batch_heads = _first_tensor(args).numel() // (module.num_tokens**2)
    return batch_heads * (2 * module.grid + 1) * module.num_tokens**2 * module.rank

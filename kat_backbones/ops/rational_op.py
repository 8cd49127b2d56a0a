"""Python face of the compiled group-rational op: argument checks, fake (meta) kernels, autograd, dispatch.

The schemas live in ``csrc/group_rational.cpp``::

    kat_backbones::group_rational_fwd(Tensor x, Tensor numerator, Tensor denominator, int channel_dim) -> Tensor
    kat_backbones::group_rational_bwd(Tensor grad_out, Tensor x, Tensor numerator, Tensor denominator,
                                      int channel_dim, bool[3] output_mask) -> (Tensor, Tensor, Tensor)

Here every op gets a ``register_fake`` (so torch.compile / FakeTensor tracing works) and the forward gets a
``register_autograd`` whose backward calls the backward op (so the backward compiles too).
"""

from __future__ import annotations

import warnings

import torch

from .reference import group_rational_decomposed, group_rational_reference

__all__ = ["group_rational", "available_backends", "extension_error", "compiled_channel_dim"]

try:
    from kat_backbones import _C  # noqa: F401  (loading the library registers torch.ops.kat_backbones.*)

    _EXT_ERROR: Exception | None = None
except (ImportError, OSError) as err:  # pragma: no cover - exercised only on broken installs
    _EXT_ERROR = err

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_warned_fallback = False


def extension_error() -> Exception | None:
    """Why ``kat_backbones._C`` failed to load, or None when it loaded."""
    return _EXT_ERROR


# Looked up once: the registered backends do not change after import, and torch.compile cannot trace the
# dispatcher query (it returns a bool from a C++ binding), so group_rational must not call it per use.
_KERNELS = {
    key: _EXT_ERROR is None
    and torch._C._dispatch_has_kernel_for_dispatch_key("kat_backbones::group_rational_fwd", key)
    for key in ("CPU", "CUDA")
}


def _has_kernel(backend: str) -> bool:
    return _KERNELS.get(backend, False)


def available_backends() -> list[str]:
    """Compiled backends of the op: ``['cpu']`` or ``['cpu', 'cuda']`` (``[]`` when the extension is missing)."""
    return [name for name, key in (("cpu", "CPU"), ("cuda", "CUDA")) if _has_kernel(key)]


def _check_args(x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor, channel_dim: int) -> int:
    """Validates the arguments (each error names its argument) and returns channel_dim made non-negative."""
    for name, t in (("x", x), ("numerator", numerator), ("denominator", denominator)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"group_rational: {name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"group_rational: x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("group_rational: x must have at least one dimension (the channels)")
    if not -x.dim() <= channel_dim < x.dim():
        raise ValueError(f"group_rational: channel_dim={channel_dim} is out of range for x with {x.dim()} dims")
    if denominator.dim() != 2:
        raise ValueError(f"group_rational: denominator must be 2-D (G, n), got shape {tuple(denominator.shape)}")
    if numerator.dim() != 2:
        raise ValueError(f"group_rational: numerator must be 2-D (1 or G, m+1), got shape {tuple(numerator.shape)}")
    groups = denominator.shape[0]
    if groups < 1:
        raise ValueError("group_rational: denominator must have at least one row (G >= 1)")
    if numerator.shape[0] not in (1, groups):
        raise ValueError(
            f"group_rational: numerator must have 1 row (shared) or G={groups} rows (one per group), "
            f"got {numerator.shape[0]}"
        )
    if not 1 <= numerator.shape[1] <= 17 or denominator.shape[1] > 16:
        raise ValueError(
            "group_rational: orders must satisfy 0 <= m <= 16 and 0 <= n <= 16 (numerator (., m+1), denominator "
            f"(G, n)), got numerator {tuple(numerator.shape)} and denominator {tuple(denominator.shape)}"
        )
    if numerator.dtype != denominator.dtype:
        raise TypeError(
            f"group_rational: numerator and denominator must have the same dtype, got {numerator.dtype} and "
            f"{denominator.dtype}"
        )
    reduced = x.dtype in (torch.float16, torch.bfloat16)
    if not (numerator.dtype == x.dtype or (reduced and numerator.dtype == torch.float32)):
        raise TypeError(
            f"group_rational: numerator/denominator dtype must equal x's dtype ({x.dtype}) or be float32 for a "
            f"float16/bfloat16 x, got {numerator.dtype}"
        )
    for name, t in (("numerator", numerator), ("denominator", denominator)):
        if t.device != x.device:
            raise ValueError(f"group_rational: {name} must be on x's device ({x.device}), got {t.device}")
    dim = channel_dim % x.dim()
    if x.shape[dim] % groups != 0:
        raise ValueError(
            f"group_rational: the number of groups G={groups} (denominator rows) must divide the channels of x "
            f"along channel_dim={channel_dim} ({x.shape[dim]})"
        )
    return dim


def group_rational(
    x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor, *, channel_dim: int = -1
) -> torch.Tensor:
    """Group-rational activation F(x) = P(x) / Q(x), one coefficient set per channel group.

    ``P(x) = a0 + a1 x + ... + am x^m``, ``Q(x) = 1 + |b1||x| + ... + |bn||x|^n`` (Q >= 1: no poles).

    Args:
        x: input of any shape, float16/bfloat16/float32/float64. Channels run along ``channel_dim`` and are split
            into G contiguous blocks; channel c uses group ``c // (C // G)``.
        numerator: (1, m+1) coefficients a0..am shared by all groups (the KAT layout), or (G, m+1) per group.
        denominator: (G, n) coefficients b1..bn; its row count fixes the group count G.
        channel_dim: the channel dimension: -1 for token tensors (..., C), 1 for (B, C, H, W). Defaults to -1.

    Returns:
        F(x) with x's shape and dtype (contiguous). float16/bfloat16 are computed in float32. Differentiable in x,
        numerator and denominator (each gradient computed only when required), with the subgradient sign(0) = +1
        for |x| and |b_j|. Finite for every finite x: above a large |x| (4096 in float32 math for orders (5, 4))
        P and Q are evaluated in 1/x, so F keeps its finite asymptote instead of inf/inf.
    """
    dim = _check_args(x, numerator, denominator, channel_dim)
    if torch.onnx.is_in_onnx_export():
        # Both ONNX exporters set this flag while they capture the model (the dynamo one around its torch.export
        # call, the TorchScript one while tracing): record the formula in standard tensor ops, so the ONNX graph
        # holds only standard-domain operators (Abs, Mul, Add, Div, Where, ...) that any runtime executes.
        return group_rational_decomposed(x, numerator, denominator, channel_dim=dim)
    if _EXT_ERROR is not None:
        global _warned_fallback
        if not _warned_fallback:
            warnings.warn(
                f"kat_backbones._C could not be loaded ({_EXT_ERROR!r}); group_rational falls back to the slower "
                "pure-PyTorch reference. Rebuild with `pip install --no-build-isolation -e .`.",
                RuntimeWarning,
                stacklevel=2,
            )
            _warned_fallback = True
        return group_rational_reference(x, numerator, denominator, channel_dim=dim)
    if x.device.type == "cuda" and not _has_kernel("CUDA"):
        raise RuntimeError(
            "group_rational: x is a CUDA tensor but kat_backbones._C was built without its CUDA kernels; "
            "rebuild with nvcc available (or FORCE_CUDA=1): `pip install --no-build-isolation -e .`"
        )
    return torch.ops.kat_backbones.group_rational_fwd(x, numerator, denominator, dim)


def compiled_channel_dim(
    x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor, channel_dim: int
) -> int | None:
    """Checks the arguments like :func:`group_rational`; returns the non-negative channel dim when the compiled
    kernel of x's device will run them, None when group_rational would fall back (or raise) instead.

    For callers that validate once per configuration and then call ``torch.ops.kat_backbones.group_rational_fwd``
    directly (:class:`kat_backbones.layers.GroupRational`): the per-call Python checks are the op's largest
    overhead on small inputs.
    """
    dim = _check_args(x, numerator, denominator, channel_dim)
    if _EXT_ERROR is not None or not _has_kernel(x.device.type.upper()):
        return None
    return dim


if _EXT_ERROR is None:

    @torch.library.register_fake("kat_backbones::group_rational_fwd")
    def _fwd_fake(x, numerator, denominator, channel_dim):
        _check_args(x, numerator, denominator, channel_dim)
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("kat_backbones::group_rational_bwd")
    def _bwd_fake(grad_out, x, numerator, denominator, channel_dim, output_mask):
        _check_args(x, numerator, denominator, channel_dim)
        torch._check(grad_out.shape == x.shape, lambda: "group_rational_bwd: grad_out must have x's shape")
        dx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else x.new_empty((0,))
        dnum = torch.empty_like(numerator, memory_format=torch.contiguous_format) if output_mask[1] else (
            numerator.new_empty((0,)))
        dden = torch.empty_like(denominator, memory_format=torch.contiguous_format) if output_mask[2] else (
            denominator.new_empty((0,)))
        return dx, dnum, dden

    def _setup_context(ctx, inputs, output):
        x, numerator, denominator, channel_dim = inputs
        ctx.save_for_backward(x, numerator, denominator)
        ctx.channel_dim = channel_dim

    def _backward(ctx, grad_out):
        x, numerator, denominator = ctx.saved_tensors
        mask = [bool(m) for m in ctx.needs_input_grad[:3]]
        if not any(mask):
            return None, None, None, None
        dx, dnum, dden = torch.ops.kat_backbones.group_rational_bwd(
            grad_out, x, numerator, denominator, ctx.channel_dim, mask
        )
        return (dx if mask[0] else None, dnum if mask[1] else None, dden if mask[2] else None, None)

    torch.library.register_autograd(
        "kat_backbones::group_rational_fwd", _backward, setup_context=_setup_context
    )

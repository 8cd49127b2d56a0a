"""The group-rational op (compiled CPU + CUDA kernels registered as ``torch.ops.kat_backbones.*``)."""

from .rational_op import available_backends, compiled_channel_dim, extension_error, group_rational
from .reference import group_rational_decomposed, group_rational_reference, large_x_threshold, rational_1d

__all__ = [
    "group_rational",
    "group_rational_reference",
    "group_rational_decomposed",
    "rational_1d",
    "large_x_threshold",
    "available_backends",
    "extension_error",
    "compiled_channel_dim",
]

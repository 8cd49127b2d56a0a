"""LayerNorm over the channels of NCHW maps, registered as ``kat_backbones.LN2d``."""

import torch
from timm.layers import LayerNorm2d

from .registry import MODELS

__all__ = ["LN2d"]


@MODELS.register_module()
class LN2d(LayerNorm2d):
    """LayerNorm over the channel dimension of (N, C, H, W) tensors (ViTDet's ``LN2d``).

    timm's :class:`~timm.layers.LayerNorm2d` (an :class:`torch.nn.LayerNorm` applied channels-last), registered so that
    ``norm_cfg=dict(type='kat_backbones.LN2d')`` works in mmcv's ``ConvModule`` / ``build_norm_layer`` (which pass
    ``eps=1e-5`` unless the config sets it; ViTDet uses ``eps=1e-6``). mmcv's own ``'LN'`` is
    :class:`torch.nn.LayerNorm`, which normalises the last (width) axis of a conv map: unusable in conv heads.

    Args:
        num_channels (int): Number of channels C.
        eps (float): Added to the variance. Defaults to 1e-6.
        affine (bool): Learnable per-channel scale and shift. Defaults to True.
    """

    _abbr_ = "ln"

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__(num_channels, eps=eps, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise over C; returns a contiguous (N, C, H, W) tensor.

        timm's forward returns the channels-last buffer permuted back, i.e. (N, C, H, W) with channels-last strides.
        mmcv's ``RoIAlign`` (CPU and CUDA) reads its input through ``data_ptr`` as if it were contiguous NCHW and does
        not check: on such a map it silently pools the wrong values (measured: max error 4.3 on unit-variance maps;
        torchvision's ``roi_align`` is stride-aware and unaffected). Every SimpleFPN level ends in this norm and feeds
        the RoI extractors, so the layout is fixed here, at the source (one copy of the map).
        """
        return super().forward(x).contiguous()

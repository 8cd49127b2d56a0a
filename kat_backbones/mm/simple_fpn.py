"""ViTDet's simple feature pyramid, registered as ``kat_backbones.SimpleFPN``.

mmdet ships its SimpleFPN only in ``projects/ViTDet``, which is not part of the mmdet wheel, so the package has its
own.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule

from .registry import MODELS

__all__ = ["SimpleFPN"]


@MODELS.register_module()
class SimpleFPN(BaseModule):
    """Simple feature pyramid from one stride-16 map (Li et al., *Exploring Plain Vision Transformer Backbones for
    Object Detection*, 2022).

    Strides 4 / 8 / 16 / 32 are made from the single backbone map by two 2x2 transposed convolutions (with norm +
    GELU between), one transposed convolution, identity and a 2x2 max-pool; each level then gets a 1x1 lateral and a
    3x3 output :class:`~mmcv.cnn.ConvModule` (with ``norm_cfg``, no activation). Levels beyond the fourth are made by
    stride-2 subsampling of the last one (detectron2's ``LastLevelMaxPool``).

    Args:
        backbone_channel (int): Channels C of the backbone map.
        in_channels (Sequence[int], optional): Channels of the four pyramid levels before the lateral convs.
            Defaults to None, i.e. ``[C // 4, C // 2, C, C]`` (the only values the up/down-sampling produces).
        out_channels (int): Channels of every output level. Defaults to 256.
        num_outs (int): Number of output levels (at least 4). Defaults to 5.
        conv_cfg (dict, optional): Config of the lateral/output convs. Defaults to None.
        norm_cfg (dict, optional): Norm of the transposed-conv path and of the lateral/output convs; ViTDet uses
            ``dict(type='kat_backbones.LN2d', eps=1e-6)``. Defaults to None.
        act_cfg (dict, optional): Activation after the lateral/output convs. Defaults to None.
        in_index (int): Which backbone output to use when the backbone returns several maps. Defaults to -1.
        init_cfg (dict | list[dict], optional): Initialization config. Defaults to None.
    """

    def __init__(
        self,
        backbone_channel: int,
        in_channels: Sequence[int] | None = None,
        out_channels: int = 256,
        num_outs: int = 5,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        in_index: int = -1,
        init_cfg: dict | list[dict] | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        c = backbone_channel
        expected = [c // 4, c // 2, c, c]
        in_channels = list(in_channels) if in_channels is not None else expected
        if in_channels != expected:
            raise ValueError(f"in_channels must be {expected} for backbone_channel={c}, got {in_channels}")
        if num_outs < 4:
            raise ValueError(f"num_outs must be >= 4, got {num_outs}")
        self.backbone_channel = c
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.in_index = in_index

        def norm(channels: int) -> nn.Module:
            return build_norm_layer(norm_cfg, channels)[1] if norm_cfg is not None else nn.Identity()

        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2),
            norm(c // 2),
            nn.GELU(),
            nn.ConvTranspose2d(c // 2, c // 4, kernel_size=2, stride=2),
        )
        self.fpn2 = nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)

        common = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False)
        self.lateral_convs = nn.ModuleList(ConvModule(ch, out_channels, 1, **common) for ch in in_channels)
        self.fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, **common) for _ in in_channels
        )

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Build the pyramid.

        Args:
            inputs (torch.Tensor | Sequence[torch.Tensor]): The stride-16 map (N, C, H, W), or the backbone's tuple
                of maps (``in_index`` picks one).

        Returns:
            tuple[torch.Tensor, ...]: ``num_outs`` maps with ``out_channels`` channels, strides 4, 8, 16, 32, 64, ...
        """
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[self.in_index]
        feats = [self.fpn1(x), self.fpn2(x), self.fpn3(x), self.fpn4(x)]
        outs = [fpn(lateral(f)) for f, lateral, fpn in zip(feats, self.lateral_convs, self.fpn_convs)]
        for _ in range(self.num_outs - len(outs)):
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        # The levels feed mmcv's RoIAlign, which reads NCHW memory without checking strides (see LN2d.forward): a
        # channels-last map (e.g. a model run in channels_last) must not reach it. No copy when already contiguous.
        return tuple(out.contiguous() for out in outs)

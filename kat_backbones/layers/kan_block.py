"""KANBlock: timm's pre-norm ViT ``Block`` whose GR-KAN MLP receives its LayerNorm, so the two can be fused."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block

from .kan import KAN

__all__ = ["KANBlock"]


class KANBlock(Block):
    """timm's ViT :class:`~timm.models.vision_transformer.Block` (same constructor, submodules and state-dict keys)
    that calls ``mlp.forward_with_norm(x, norm2)`` instead of ``mlp(norm2(x))`` when the MLP is a :class:`KAN`.

    The KAN then runs the pre-MLP LayerNorm and act1 as one fused pass (``kan_impl``; see :class:`KAN`); any other
    MLP runs exactly as in timm's block. Use as ``VisionTransformer(block_fn=KANBlock, mlp_layer=KAN)``.
    """

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, **attn_kwargs) -> torch.Tensor:
        # attn_kwargs: what newer timm passes on to the attention (e.g. is_causal)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, **attn_kwargs)))
        if isinstance(self.mlp, KAN):
            y = self.mlp.forward_with_norm(x, self.norm2)
        else:
            y = self.mlp(self.norm2(x))
        return x + self.drop_path2(self.ls2(y))

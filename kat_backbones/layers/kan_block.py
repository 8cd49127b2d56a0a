"""KANBlock: timm's pre-norm ViT ``Block`` whose GR-KAN MLP receives its LayerNorm, so the two can be fused."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .kan import KAN

__all__ = ["KANBlock"]


class KANBlock(Block):
    """timm's ViT :class:`~timm.models.vision_transformer.Block` (same constructor, submodules and state-dict keys)
    that calls ``mlp.forward_with_norm(x, norm2)`` instead of ``mlp(norm2(x))`` when the MLP is a :class:`KAN`.

    The KAN then runs the pre-MLP LayerNorm and act1 as one fused pass (``kan_impl``; see :class:`KAN`); any other
    MLP runs exactly as in timm's block. Use as ``VisionTransformer(block_fn=KANBlock, mlp_layer=KAN)``.
    """

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        # timm's Block.forward signature, spelled out: TorchScript compiles no **kwargs (timm.set_scriptable + jit)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)))
        if torch.jit.is_scripting():
            y = self.mlp(self.norm2(x))  # the scripted KAN calls the registered op; the fused paths are eager-only
        else:
            y = self._mlp_with_norm(x)
        return x + self.drop_path2(self.ls2(y))

    def _mlp_with_norm(self, x: torch.Tensor) -> torch.Tensor:
        # torch.fx records the plain norm2 -> mlp graph (the fused path's choice reads the input's device and dtype,
        # which a Proxy has not got); timm's fx feature extraction and the fx tests need the same graph as eager
        if isinstance(self.mlp, KAN) and not is_fx_symbolic_tracing():
            return self.mlp.forward_with_norm(x, self.norm2)
        return self.mlp(self.norm2(x))

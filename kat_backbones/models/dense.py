"""KAT (and its plain-ViT baseline) as a ViTDet-style dense-prediction backbone.

Pure PyTorch + timm: :meth:`KATDense.load_pretrained` loads timm-format weights; the OpenMMLab face
(registration, ``init_cfg``, mmengine logging and checkpoint URL schemes) is :class:`kat_backbones.mm.KATBackbone`.

The backbone is a plain, non-hierarchical transformer (ViTDet, Li et al. 2022): tokens stay a (B, H, W, C) grid, all
blocks use window attention (window 14) except a few global ones (2, 5, 8, 11), attention carries decomposed relative
position biases (zero-initialised), and the absolute position embedding is kept at the 224 pre-training grid (with
its cls slot, so timm ImageNet checkpoints load unchanged) and bicubic-interpolated to the feature grid on the fly.
The transformer MLP is the GR-KAN layer (``mlp_type='kan'``) or timm's GELU ``Mlp`` (``mlp_type='mlp'``, the ViT
baseline). Block internals are timm's :class:`timm.models.vision_transformer_sam.Block`, so parameter names follow
timm's ViT (``blocks.N.norm1``, ``blocks.N.attn.qkv``, ``blocks.N.mlp.fc1`` ...) and timm KAT/ViT checkpoints load
with only the cls token/head dropped (:func:`checkpoint_filter_fn`).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
from functools import partial
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import Mlp, PatchEmbed, resample_abs_pos_embed, resample_patch_embed, trunc_normal_
from timm.models.vision_transformer_sam import Block

from kat_backbones.checkpoint import read_state_dict, unwrap_state_dict
from kat_backbones.layers import KAN

from .karat import AttnType, apply_karat_to_dense_blocks
from .kat import KAT_ARCHS
from .state_fit import CheckpointMismatchError, compare_state

__all__ = ["KATDense", "checkpoint_filter_fn"]

_logger = logging.getLogger(__name__)

# Keys of a timm classification checkpoint that a dense backbone has no use for.
_DROP_PREFIXES = ("head.", "head_dist.", "fc_norm.", "pre_logits.", "attn_pool.", "norm_pre.")
_DROP_KEYS = ("cls_token", "reg_token", "dist_token", "mask_token")


def _to_2tuple(x: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    x = tuple(int(v) for v in x)
    if len(x) != 2:
        raise ValueError(f"expected an int or a pair, got {x}")
    return x  # type: ignore[return-value]


def _make_mlp_layer(mlp_type: str, kan_cfg: Mapping[str, Any] | None):
    """Factory with timm's ``mlp_layer(in_features, hidden_features, act_layer, drop, **dd)`` call signature."""
    if mlp_type == "mlp":

        def build_mlp(in_features: int, hidden_features: int, act_layer=nn.GELU, drop: float = 0.0, **dd) -> nn.Module:
            return Mlp(in_features, hidden_features, act_layer=nn.GELU, drop=drop, **dd)

        return build_mlp
    if mlp_type == "kan":
        cfg = dict(kan_cfg or {})

        def build_kan(in_features: int, hidden_features: int, act_layer=None, drop: float = 0.0, **dd) -> nn.Module:
            # GR-KAN's activations are its rationals (``act_init``): timm's act_layer is not used
            return KAN(in_features, hidden_features, drop=drop, **cfg, **dd)

        return build_kan
    raise ValueError(f"mlp_type must be 'kan' or 'mlp', got {mlp_type!r}")


def _split_prefix_tokens(pos_embed: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, tuple[int, int]]:
    """Split a (1, P + H*W, C) or (1, H, W, C) position embedding into (prefix, grid (1, H*W, C), (H, W))."""
    if pos_embed.ndim == 4:  # SAM / ViTDet layout (1, H, W, C), no prefix tokens
        h, w = pos_embed.shape[1:3]
        return None, pos_embed.reshape(1, h * w, -1), (h, w)
    if pos_embed.ndim == 2:
        pos_embed = pos_embed[None]
    n = pos_embed.shape[1]
    for num_prefix in (1, 0, 2):  # cls (timm ViT/KAT), none, cls + dist (DeiT distilled)
        side = math.isqrt(n - num_prefix)
        if side * side == n - num_prefix:
            prefix = pos_embed[:, :num_prefix] if num_prefix else None
            return prefix, pos_embed[:, num_prefix:], (side, side)
    raise ValueError(f"cannot infer the grid of a position embedding with {n} tokens")


def _resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resample a (L, head_dim) relative-position table to (length, head_dim)."""
    if rel_pos.shape[0] == length:
        return rel_pos
    out = F.interpolate(rel_pos.float().t()[None], size=length, mode="linear", align_corners=False)
    return out[0].t().to(rel_pos.dtype)


def _summarize_keys(keys: Sequence[str]) -> str:
    """``blocks.0.x, blocks.1.x, ...`` -> ``blocks.*.x (x12)``, order kept."""
    counts: dict[str, int] = {}
    for key in keys:
        pattern = re.sub(r"^blocks\.\d+\.", "blocks.*.", key)
        counts[pattern] = counts.get(pattern, 0) + 1
    return ", ".join(f"{k} (x{n})" if n > 1 else k for k, n in counts.items())



def _is_rational(key: str) -> bool:
    return key.endswith((".weight_numerator", ".weight_denominator"))

class KATDense(nn.Module):
    """KAT / ViT backbone for dense prediction (ViTDet-style, plain, single scale).

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` (width / depth / heads of
            :data:`kat_backbones.models.KAT_ARCHS`: 192/12/3, 384/12/6, 768/12/12) or a dict with ``embed_dims``,
            ``depth`` and ``num_heads``. Defaults to ``'tiny'``.
        img_size (int | tuple[int, int]): Training input size; sets the size of the global blocks' relative-position
            tables (inputs of other sizes work, the tables are interpolated). Defaults to 1024.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        window_size (int): Window of the local-attention blocks; 0 makes every block global. Defaults to 14.
        global_blocks (Sequence[int]): Blocks with global attention (negative indices count from the end).
            Defaults to ``(2, 5, 8, 11)``.
        out_indices (Sequence[int]): Blocks whose outputs are returned (negative indices count from the end).
            Defaults to ``(11,)``.
        mlp_type (str): ``'kan'`` (GR-KAN, the KAT) or ``'mlp'`` (timm's GELU Mlp, the ViT baseline).
            Defaults to ``'kan'``.
        kan_cfg (dict, optional): Arguments of :class:`kat_backbones.layers.KAN` (``num_groups``, ``act_init``,
            ``kan_init``, ``rational_order``, ``shared_numerator``); unset ones keep KAN's defaults, those of the
            released KAT models. Defaults to None.
        mlp_ratio (float): Hidden width of the MLP relative to ``embed_dims``. Defaults to 4.0.
        qkv_bias (bool): Bias of the qkv projection. Defaults to True.
        drop_path_rate (float): Stochastic depth, linear from 0 to this value over the blocks. Defaults to 0.1.
        use_rel_pos (bool): Decomposed relative-position bias in attention. Defaults to True.
        pretrain_img_size (int | tuple[int, int]): Image size of the pre-training checkpoint; the stored absolute
            position embedding has ``(pretrain_img_size // patch_size) ** 2`` grid tokens plus a cls slot.
            Defaults to 224.
        final_norm (bool): Apply a final LayerNorm (``norm``) to the output of the last block. Defaults to False.
        with_cp (bool): Activation checkpointing of every block while training (saves memory, costs one more
            forward). Defaults to False.
        attn_type (str): ``'softmax'`` or ``'fourier_karat'`` (Fourier-KArAt, :mod:`kat_backbones.layers.karat`,
            put into the blocks by :func:`kat_backbones.models.karat.apply_karat_to_dense_blocks`).
            KArAt's operator is fixed to a token count: N = ``window_size ** 2`` in window blocks, N = the
            ``img_size`` grid in global blocks (another input grid raises an error there). Defaults to
            ``'softmax'``.
        attn_cfg (dict, optional): Fourier-KArAt settings: ``grid`` (3), ``rank`` (12), ``mode``
            (``'blockwise'``, or ``'universal'``: one operator per head and token count shared by all blocks,
            registered as ``karat_universal``), ``init_std`` (None: variance-preserving), ``global_attn``
            (``'fourier_karat'``, or ``'softmax'`` to keep the global blocks on softmax). Defaults to None.

    Pretrained weights: :meth:`load_pretrained` (a timm-format KAT or ViT checkpoint, ``timm:NAME[.TAG]`` or a state
    dict); in OpenMMLab configs ``init_cfg=dict(type='Pretrained', ...)`` of :class:`kat_backbones.mm.KATBackbone`.
    """

    def __init__(
        self,
        arch: str | Mapping[str, int] = "tiny",
        img_size: int | Sequence[int] = 1024,
        patch_size: int = 16,
        in_channels: int = 3,
        window_size: int = 14,
        global_blocks: Sequence[int] = (2, 5, 8, 11),
        out_indices: int | Sequence[int] = (11,),
        mlp_type: Literal["kan", "mlp"] = "kan",
        kan_cfg: Mapping[str, Any] | None = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        use_rel_pos: bool = True,
        pretrain_img_size: int | Sequence[int] = 224,
        final_norm: bool = False,
        with_cp: bool = False,
        attn_type: AttnType = "softmax",
        attn_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(arch, str):
            if arch not in KAT_ARCHS:
                raise ValueError(f"arch must be one of {sorted(KAT_ARCHS)} or a dict, got {arch!r}")
            arch_cfg = {**KAT_ARCHS[arch], "embed_dims": KAT_ARCHS[arch]["embed_dim"]}
        else:
            missing = {"embed_dims", "depth", "num_heads"} - set(arch)
            if missing:
                raise ValueError(f"a custom arch needs embed_dims, depth and num_heads; missing {sorted(missing)}")
            arch_cfg = dict(arch)
        self.embed_dims = int(arch_cfg["embed_dims"])
        self.num_layers = int(arch_cfg["depth"])
        self.num_heads = int(arch_cfg["num_heads"])
        self.img_size = _to_2tuple(img_size)
        self.patch_size = int(patch_size)
        # build-time validation (docs/reliability.md): these would fail at the first forward
        if isinstance(window_size, bool) or not isinstance(window_size, int):
            raise TypeError(f"window_size must be an int (side of the square window; 0: global), got {window_size!r}")
        dpr = drop_path_rate
        if isinstance(dpr, bool) or not isinstance(dpr, numbers.Real) or not 0 <= dpr < 1:
            raise ValueError(f"drop_path_rate must be a number in [0, 1) (the last block's drop rate), got {dpr!r}")
        self.window_size = window_size
        # --- build-time validation (docs/reliability.md) ------------------------------------------------------------
        if self.img_size[0] % self.patch_size or self.img_size[1] % self.patch_size:
            raise ValueError(
                f"img_size {self.img_size} must be divisible by patch_size={self.patch_size}: the relative-position "
                "tables and the Fourier-KArAt token count follow the img_size // patch_size grid (inputs of other "
                "sizes are padded at run time)"
            )
        if self.window_size < 0:
            raise ValueError(f"window_size must be >= 0 (0: every block global), got {self.window_size}")
        grid = (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)
        if self.window_size > max(grid):
            # ViTDet would pad the grid to one window and every "window" block would attend globally over padding:
            # almost certainly a config mistake (e.g. a small-image config that kept window_size=14), so refuse it.
            raise ValueError(
                f"window_size={self.window_size} is larger than the token grid {grid} of img_size {self.img_size}: "
                f"use window_size <= {max(grid)} (or window_size=0 for global attention in every block)"
            )
        # ------------------------------------------------------------------------------------------------------------
        self.global_blocks = tuple(int(i) + self.num_layers if int(i) < 0 else int(i) for i in global_blocks)
        if any(not 0 <= i < self.num_layers for i in self.global_blocks):
            raise ValueError(f"global_blocks {tuple(global_blocks)} out of range for depth {self.num_layers}")
        self.mlp_type = mlp_type
        self.final_norm = final_norm
        self.with_cp = with_cp

        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        self.out_indices = tuple(int(i) + self.num_layers if int(i) < 0 else int(i) for i in out_indices)
        if not self.out_indices or any(not 0 <= i < self.num_layers for i in self.out_indices):
            raise ValueError(f"out_indices {tuple(out_indices)} out of range for depth {self.num_layers}")
        self.out_channels = [self.embed_dims] * len(self.out_indices)

        self.patch_embed = PatchEmbed(
            img_size=self.img_size,
            patch_size=self.patch_size,
            in_chans=in_channels,
            embed_dim=self.embed_dims,
            output_fmt="NHWC",
            strict_img_size=False,
            dynamic_img_pad=True,
        )
        pretrain_hw = _to_2tuple(pretrain_img_size)
        self.pretrain_grid = (pretrain_hw[0] // self.patch_size, pretrain_hw[1] // self.patch_size)
        # One slot for the cls token of the pre-training checkpoint (unused here), as in timm's ViT.
        num_pos = 1 + self.pretrain_grid[0] * self.pretrain_grid[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, self.embed_dims))

        feat_hw = (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)
        dpr = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        mlp_layer = _make_mlp_layer(mlp_type, kan_cfg)
        # --- Fourier-KArAt (kat_backbones.models.karat): shared operators registered before the blocks, so that
        # parameter-wise rules (layer decay) see them as `karat_universal.*`, not as parameters of block 0
        self.attn_type = attn_type
        if attn_type not in ("softmax", "fourier_karat") or (attn_type == "softmax" and attn_cfg):
            raise ValueError(f"attn_type must be 'softmax' (without attn_cfg) or 'fourier_karat', got {attn_type!r}")
        universal = attn_type == "fourier_karat" and (attn_cfg or {}).get("mode") == "universal"
        self.karat_universal = nn.ModuleDict() if universal else None
        # ---------------------------------------------------------------------------------------------------------
        self.blocks = nn.ModuleList(
            Block(
                dim=self.embed_dims,
                num_heads=self.num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=dpr[i],
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
                act_layer=nn.GELU,
                mlp_layer=mlp_layer,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in self.global_blocks else self.window_size,
                input_size=feat_hw,
            )
            for i in range(self.num_layers)
        )
        if attn_type == "fourier_karat":  # Fourier-KArAt: N of global blocks = the token grid of img_size
            grid_hw = (-(-self.img_size[0] // self.patch_size), -(-self.img_size[1] // self.patch_size))
            apply_karat_to_dense_blocks(self.blocks, grid_hw, attn_cfg, shared=self.karat_universal)
        self.norm = nn.LayerNorm(self.embed_dims, eps=1e-6) if final_norm else nn.Identity()
        self._init_random_weights()

    # ------------------------------------------------------------------------------------------------------------
    # initialisation and checkpoints

    def _init_random_weights(self) -> None:
        """timm ViT initialisation for position embedding and attention / baseline MLP; GR-KAN keeps its own init."""
        trunc_normal_(self.pos_embed, std=0.02)
        for blk in self.blocks:
            linears = [blk.attn.qkv, blk.attn.proj]
            if self.mlp_type == "mlp":
                linears += [blk.mlp.fc1, blk.mlp.fc2]
            for lin in linears:
                trunc_normal_(lin.weight, std=0.02)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)

    def load_pretrained(
        self,
        checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
        prefix: str | None = None,
        logger: logging.Logger | None = None,
        allow_partial: bool | None = False,
    ) -> tuple[list[str], list[str]]:
        """Load a timm KAT/ViT (or ViTDet-layout) checkpoint, converting it with :func:`checkpoint_filter_fn`.

        A checkpoint that leaves model tensors unfilled (missing, or of another shape after the conversion) is
        refused unless ``allow_partial``, except for the tensors a plain timm file cannot have: the ViTDet
        relative-position tables (zero init) and, when the file has no rational at all (a ViT/DeiT into KAT: the
        paper's "KAT from ViT"), the rational coefficients, which keep their init (logged). With ``allow_partial``,
        tensors of another shape are skipped (logged as warnings) and stay at their init, like the missing ones.

        Args:
            checkpoint (str | os.PathLike | Mapping): A file (``.pth``, ``.safetensors``), ``timm:NAME[.TAG]`` or a
                state dict / checkpoint dict (read by :func:`kat_backbones.checkpoint.read_state_dict`).
            prefix (str, optional): Only keys starting with this prefix are used, with the prefix removed (e.g.
                ``'backbone.'`` for a detector checkpoint). Defaults to None.
            logger (logging.Logger, optional): Where the summary goes. Defaults to this module's logger.
            allow_partial (bool): Load a checkpoint that leaves model tensors unfilled. Defaults to False.

        Returns:
            tuple[list[str], list[str]]: Missing and unexpected keys (after conversion).

        Raises:
            KeyError: No key starts with ``prefix``.
            CheckpointMismatchError: The checkpoint leaves other tensors unfilled (e.g. a KAT-S file into KAT-T, a
                ResNet file) and ``allow_partial`` is False; the message says how many tensors matched and what is
                missing.
        """
        logger = logger or _logger
        source = checkpoint if isinstance(checkpoint, (str, os.PathLike)) else "<state dict>"
        if prefix:  # select before any wrapper prefix is stripped: the prefix may be one of them
            state = read_state_dict(checkpoint, strip_prefixes=())
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not state:
                raise KeyError(f"no key of {source} starts with prefix {prefix!r}")
        else:
            state = read_state_dict(checkpoint)
        state = checkpoint_filter_fn(state, self)
        fit = compare_state(self.state_dict(), state)
        no_rationals = not any(_is_rational(k) for k in state)
        unfilled = [k for k in fit.missing if not (".attn.rel_pos_" in k or (no_rationals and _is_rational(k)))]
        if (unfilled or fit.mismatched) and not allow_partial:
            raise CheckpointMismatchError(
                f"KATDense: refusing to load {source}: {fit.describe('it')}. It is not a checkpoint of this model "
                "(another size or architecture?). To load the matching tensors anyway and keep the others at their "
                "init, pass allow_partial=True (init_cfg=dict(type='Pretrained', checkpoint=..., allow_partial=True)).",
                fit,
            )
        if no_rationals and any(_is_rational(k) for k in fit.missing):
            logger.info(
                f"KATDense: {source} has no rational coefficients (a ViT/MLP checkpoint): the "
                f"{sum(_is_rational(k) for k in fit.missing)} rational tensors keep their init (KAT from ViT)"
            )
        for k, theirs, ours in fit.mismatched:
            logger.warning(f"KATDense: skipping {k}: shape {theirs} != {ours} (allow_partial=True)")
            state.pop(k)
        missing, unexpected = self.load_state_dict(state, strict=False)
        logger.info(f"KATDense: loaded {len(state) - len(unexpected)} tensors from {source}")
        if missing:
            logger.warning(f"KATDense: missing keys (kept at init): {_summarize_keys(missing)}")
        if unexpected:
            logger.warning(f"KATDense: unexpected keys (ignored): {_summarize_keys(unexpected)}")
        return list(missing), list(unexpected)

    # ------------------------------------------------------------------------------------------------------------
    # forward

    def _pos_embed_grid(self, hw: tuple[int, int]) -> torch.Tensor:
        """Absolute position embedding interpolated (bicubic) to the (H, W) feature grid: (1, H, W, C)."""
        pos = self.pos_embed[:, 1:]
        if hw != self.pretrain_grid:
            pos = resample_abs_pos_embed(
                pos, new_size=hw, old_size=self.pretrain_grid, num_prefix_tokens=0, antialias=False
            )
        return pos.reshape(1, hw[0], hw[1], self.embed_dims)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Compute the feature maps.

        Args:
            x (torch.Tensor): Images (B, C, H, W); H and W are padded up to a multiple of the patch size.

        Returns:
            tuple[torch.Tensor, ...]: One (B, embed_dims, H/16, W/16) map per entry of ``out_indices``.
        """
        x = self.patch_embed(x)  # (B, H, W, C)
        x = x + self._pos_embed_grid((x.shape[1], x.shape[2])).to(x.dtype)
        outs = []
        for i, blk in enumerate(self.blocks):
            if self.with_cp and self.training and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in self.out_indices:
                out = self.norm(x) if i == self.num_layers - 1 else x
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: KATDense) -> dict[str, torch.Tensor]:
    """Convert a timm KAT/ViT (or SAM/ViTDet-layout) state dict to :class:`KATDense` keys and shapes.

    Drops the cls/dist/register tokens and the classifier (``head``, ``fc_norm``; ``norm`` too unless the model has
    ``final_norm``), unwraps the checkpoint (:func:`kat_backbones.checkpoint.unwrap_state_dict`: ``state_dict``
    entries, ``module.`` / ``backbone.`` / ``model.`` prefixes), keeps only the ``backbone.`` part of a detector or
    segmentor checkpoint, resizes the position embedding to the model's
    pre-training grid (keeping a cls slot), the patch-embedding kernel to the model's patch size, and relative-position
    tables to the model's lengths.

    Args:
        state_dict (Mapping[str, torch.Tensor]): Source weights.
        model (KATDense): Target model (for shapes).

    Returns:
        dict[str, torch.Tensor]: Converted weights (keys the model doesn't have are kept, to be reported).
    """
    state = unwrap_state_dict(state_dict)
    if "patch_embed.proj.weight" not in state and "backbone.patch_embed.proj.weight" in state:
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}

    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k in _DROP_KEYS or k.startswith(_DROP_PREFIXES):
            continue
        if k.startswith("norm.") and not model.final_norm:
            continue
        if k == "pos_embed":
            prefix, grid, old_hw = _split_prefix_tokens(v)
            if old_hw != model.pretrain_grid:
                grid = resample_abs_pos_embed(
                    grid, new_size=model.pretrain_grid, old_size=old_hw, num_prefix_tokens=0, antialias=False
                )
            cls_slot = prefix[:, :1] if prefix is not None else grid.new_zeros(1, 1, grid.shape[-1])
            v = torch.cat([cls_slot, grid], dim=1)
        elif k == "patch_embed.proj.weight" and v.shape[-2:] != own[k].shape[-2:]:
            v = resample_patch_embed(v, list(own[k].shape[-2:]))
        elif (k.endswith(".attn.rel_pos_h") or k.endswith(".attn.rel_pos_w")) and k in own:
            v = _resize_rel_pos(v, own[k].shape[0])
        out[k] = v
    return out

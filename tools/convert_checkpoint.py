#!/usr/bin/env python
"""Turn timm ViT/DeiT weights into KAT weights (the paper's KAT* transfer), or re-save a KAT checkpoint.

    python tools/convert_checkpoint.py vit_tiny.pth kat_tiny_gelu_from_vit.pth --model kat_tiny_gelu_patch16_224

SRC: .pth/.pt/.bin (read by kat_backbones.checkpoint: ``torch.load(weights_only=True)``, wrappers unwrapped)
or .safetensors. DST: .safetensors by extension, else ``torch.save``. ViT weights are copied unchanged (fc1/fc2
included); the rationals keep the init of ``--model`` (act1 identity, act2 gelu for ``*_gelu_*``, swish otherwise).
The result is checked by strict loading into ``--model`` before it is written.
"""

from __future__ import annotations

import argparse
import sys

import timm

import kat_backbones  # noqa: F401  (registers the KAT models)
from kat_backbones.checkpoint import read_state_dict, save_state_dict
from kat_backbones.convert import is_kat_state_dict, load_kat_weights, vit_to_kat_state_dict


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="source checkpoint (timm ViT/DeiT or KAT), .pth/.pt/.bin/.safetensors")
    parser.add_argument("dst", help="output file (.safetensors or torch.save format)")
    parser.add_argument("--model", default="kat_tiny_gelu_patch16_224", help="target KAT model name")
    parser.add_argument("--img-size", type=int, default=None, help="target input size (pos-embed is resized)")
    parser.add_argument("--num-classes", type=int, default=None, help="target classes (default: the model's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Converts SRC into DST."""
    args = parse_args(argv)
    kwargs = {}
    if args.img_size is not None:
        kwargs["img_size"] = args.img_size
    src = read_state_dict(args.src)
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    elif "head.weight" in src:
        kwargs["num_classes"] = src["head.weight"].shape[0]
    model = timm.create_model(args.model, **kwargs)
    if is_kat_state_dict(src):
        load_kat_weights(model, src, strict=True)
        out = model.state_dict()
        kind = "KAT checkpoint (re-saved)"
    else:
        out = vit_to_kat_state_dict(src, model, strict=True)
        model.load_state_dict(out, strict=True)
        kind = "ViT -> KAT transfer"
    save_state_dict(out, args.dst)
    n_rational = sum(1 for k in out if ".act1." in k or ".act2." in k)
    print(f"{kind}: {args.src} -> {args.dst} ({args.model}, {len(out)} tensors, {n_rational} rational tensors, "
          f"{sum(v.numel() for v in out.values()):,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

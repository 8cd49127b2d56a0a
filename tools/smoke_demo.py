"""Smoke job (about a minute on CPU): shows the whole stack working. ``make demo`` runs the detection demo
(``tools/demo.py``) instead; this one is run by hand: ``python tools/smoke_demo.py``.

1. the compiled group-rational op: backends, agreement with the float64 reference, speed vs the eager reference;
2. a KAT-Tiny (timm registry) trained for a few steps on a small random batch: the loss falls;
3. the OpenMMLab side: a KAT-T Mask R-CNN built from configs/mmdet runs a loss-mode forward with mmcv's ops.

Ends with one summary line: ``demo: ...``.
"""

from __future__ import annotations

import os
import sys
import time

import torch

import kat_backbones
from kat_backbones.ops import available_backends, group_rational, group_rational_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step(title: str):
    print(f"[demo] {title}", flush=True)


def main() -> int:
    t0 = time.time()
    torch.manual_seed(0)
    summary = {}

    step(f"1/3 op: compiled backends {available_backends()}")
    x = torch.randn(32, 197, 192, dtype=torch.float64)
    num, den = torch.randn(1, 6, dtype=torch.float64) * 0.3, torch.randn(8, 4, dtype=torch.float64) * 0.3
    err = (group_rational(x, num, den) - group_rational_reference(x, num, den)).abs().max().item()
    xf, numf, denf = x.float().requires_grad_(), num.float().requires_grad_(), den.float().requires_grad_()
    times = {}
    for name, fn in (("ours", group_rational), ("eager reference", group_rational_reference)):
        start = time.perf_counter()
        for _ in range(5):
            fn(xf, numf, denf).sum().backward()
        times[name] = (time.perf_counter() - start) / 5
    speedup = times["eager reference"] / times["ours"]
    print(f"[demo]     float64 max |ours - reference| = {err:.2e}; fp32 fwd+bwd {times['ours'] * 1e3:.2f} ms "
          f"vs eager {times['eager reference'] * 1e3:.2f} ms ({speedup:.1f}x)")
    summary["op_speedup"] = f"{speedup:.1f}x"

    step("2/3 KAT-Tiny (timm) trains on a random batch")
    import timm

    if "kat_tiny_swish_patch16_224" not in timm.list_models("kat_*"):
        print("[demo]     KAT models are not registered in this build")
        return 1
    model = timm.create_model("kat_tiny_swish_patch16_224", img_size=64, num_classes=10)
    images, labels = torch.randn(16, 3, 64, 64), torch.randint(0, 10, (16,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"[demo]     loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps "
          f"({sum(p.numel() for p in model.parameters()):,} parameters)")
    summary["kat_t_loss"] = f"{losses[0]:.3f}->{losses[-1]:.3f}"

    step("3/3 KAT-T Mask R-CNN (mmdet) loss forward on CPU")
    cfg_path = os.path.join(ROOT, "configs", "mmdet", "kat_t_maskrcnn_demo.py")
    try:
        from mmdet.testing import demo_mm_inputs
        from mmdet.utils import register_all_modules
        from mmengine.config import Config
        from mmengine.registry import MODELS, init_default_scope
    except ImportError as err:
        print(f"[demo]     OpenMMLab stack unavailable: {err}")
        return 1
    register_all_modules()
    init_default_scope("mmdet")
    cfg = Config.fromfile(cfg_path)
    detector = MODELS.build(cfg.model)
    num_classes = cfg.model.roi_head.bbox_head.num_classes
    packed = demo_mm_inputs(2, [[3, 128, 128]] * 2, num_items=[3, 3], num_classes=num_classes, with_mask=True)
    data = detector.data_preprocessor(packed, True)
    with torch.no_grad():
        det_losses = detector(**data, mode="loss")
    det_losses = {k: float(sum(v) if isinstance(v, list) else v) for k, v in det_losses.items() if "loss" in k}
    total = sum(det_losses.values())
    parts = [f"{k}={v:.3f}" for k, v in det_losses.items()]
    print(f"[demo]     Mask R-CNN losses: {', '.join(parts)}")
    summary["maskrcnn_loss"] = f"{float(total):.3f}"

    print(f"demo: kat_backbones {kat_backbones.__version__} backends={','.join(available_backends())} "
          + " ".join(f"{k}={v}" for k, v in summary.items()) + f" time={time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""fp16 gradient compression for DDP runs: ``kat_backbones.Fp16CompressionHook`` (ViTDet's recipe).

ViTDet (mmdet ``projects/ViTDet``, ``Fp16CompresssionHook``; detectron2's ``--fp16-compression``) all-reduces the
gradients in fp16 under DDP; mmdet credits it with 51.4 -> 51.6 box AP for ViT-B and a shorter iteration. mmdet's hook
lives in ``projects/``, which is not in the mmdet wheel, and mmengine's ``MMDistributedDataParallel`` has no
comm-hook option in ``model_wrapper_cfg``, so this hook registers torch's own
:func:`torch.distributed.algorithms.ddp_comm_hooks.default_hooks.fp16_compress_hook` on the wrapped model before the
first iteration.
"""

from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import fp16_compress_hook
from torch.nn.parallel import DistributedDataParallel

from .registry import HOOKS

__all__ = ["Fp16CompressionHook"]


@HOOKS.register_module()
class Fp16CompressionHook(Hook):
    """All-reduce DDP gradients in fp16 (``custom_hooks = [dict(type='kat_backbones.Fp16CompressionHook')]``).

    In a distributed run (``runner.distributed``) the model must be wrapped in a
    :class:`~torch.nn.parallel.DistributedDataParallel` (mmengine's default ``MMDistributedDataParallel`` is one);
    the hook registers :func:`~torch.distributed.algorithms.ddp_comm_hooks.default_hooks.fp16_compress_hook` on it:
    each gradient bucket is cast to fp16, all-reduced, divided by the world size and cast back, halving the
    communication. In single-process runs it does nothing (and says so once). Other wrappers (FSDP, DeepSpeed) are
    refused with a ``TypeError``: they have no DDP comm hooks.
    """

    priority = "VERY_HIGH"

    def __init__(self) -> None:
        self._registered_on: int | None = None  # id of the DDP module the hook was registered on

    def before_train(self, runner) -> None:
        if not runner.distributed:
            print_log("Fp16CompressionHook: single-process run, gradients are not all-reduced (inactive)",
                      logger="current")
            return
        model = runner.model
        if not isinstance(model, DistributedDataParallel):
            raise TypeError(
                "Fp16CompressionHook needs the model wrapped in torch's DistributedDataParallel (mmengine's default "
                f"MMDistributedDataParallel), got {type(model).__name__}; remove the hook for this wrapper"
            )
        if self._registered_on == id(model):
            return  # DDP accepts one comm hook; train() called again on the same runner
        model.register_comm_hook(state=None, hook=fp16_compress_hook)
        self._registered_on = id(model)
        print_log("Fp16CompressionHook: DDP gradients are all-reduced in fp16 (torch fp16_compress_hook)",
                  logger="current")

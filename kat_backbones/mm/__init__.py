"""OpenMMLab glue, registered in the ``kat_backbones`` registry scope (see :mod:`kat_backbones.mm.registry`).

Imported by ``import kat_backbones`` when mmengine is installed; configs name the modules with the scope prefix:
``kat_backbones.KATBackbone``, ``kat_backbones.SimpleFPN``, ``kat_backbones.LN2d`` and
``kat_backbones.LayerDecayOptimizerConstructor``, ``kat_backbones.Fp16CompressionHook``.
"""

# cls: TimmClassifier, TimmTransform (dataset: mmpretrain's CustomDataset; metric: mmpretrain's Accuracy);
# checkpoint: safe loading of mmengine checkpoints (weights_only allow-list); hooks: NonFiniteLossHook, RNGStateHook;
# fault tolerance (kat_backbones.mm.fault_tolerance): AtomicCheckpointHook, PreemptionHook, WorkDirLockHook,
# ResumeCheckHook, CheckpointFitHook, DistRNGStateHook, GuardedDataset
from . import (  # noqa: F401
    atomic_checkpoint,
    checkpoint,
    checkpoint_fit,
    cls,
    dist_rng,
    guarded_dataset,
    hooks,
    preemption,
    registry,
    resume,
    work_dir_lock,
)
from .backbone import KATBackbone
from .cpu_compat import convert_cfg_for_cpu, destroy_distributed, init_cpu_distributed
from .fp16_compression import Fp16CompressionHook
from .layer_decay import LayerDecayOptimizerConstructor, get_layer_id
from .ln2d import LN2d
from .simple_fpn import SimpleFPN

__all__ = [
    "registry",
    "KATBackbone",
    "SimpleFPN",
    "LN2d",
    "LayerDecayOptimizerConstructor",
    "Fp16CompressionHook",
    "get_layer_id",
    "convert_cfg_for_cpu",
    "init_cpu_distributed",
    "destroy_distributed",
]

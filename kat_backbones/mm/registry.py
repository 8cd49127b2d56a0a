"""The ``kat_backbones`` registry scope: children of mmengine's root registries.

Everything the package registers for OpenMMLab lives here, so one class is reachable from mmdet, mmseg and mmpretrain
configs alike as ``type='kat_backbones.Name'`` (the prefix names this scope; mmengine finds it through the root
registry). ``locations`` lets a registry import :mod:`kat_backbones.mm` on first use. Inside the package, nested builds
use prefixed names or instantiate classes directly, so they don't depend on the caller's default scope.
"""

from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

__all__ = [
    "SCOPE",
    "MODELS",
    "MODEL_WRAPPERS",
    "OPTIMIZERS",
    "OPTIM_WRAPPERS",
    "OPTIM_WRAPPER_CONSTRUCTORS",
    "PARAM_SCHEDULERS",
    "HOOKS",
    "LOOPS",
    "DATASETS",
    "DATA_SAMPLERS",
    "TRANSFORMS",
    "METRICS",
    "EVALUATOR",
    "VISBACKENDS",
    "VISUALIZERS",
]

#: Registry scope (and the ``type`` prefix in configs).
SCOPE = "kat_backbones"
_LOCATIONS = ["kat_backbones.mm"]


def _child(name: str, parent: Registry) -> Registry:
    return Registry(name, parent=parent, scope=SCOPE, locations=_LOCATIONS)


#: Backbones, necks, norm layers (``kat_backbones.KATBackbone``, ``kat_backbones.SimpleFPN``, ``kat_backbones.LN2d``).
MODELS = _child("model", MMENGINE_MODELS)
MODEL_WRAPPERS = _child("model_wrapper", MMENGINE_MODEL_WRAPPERS)
OPTIMIZERS = _child("optimizer", MMENGINE_OPTIMIZERS)
OPTIM_WRAPPERS = _child("optim_wrapper", MMENGINE_OPTIM_WRAPPERS)
#: ``kat_backbones.LayerDecayOptimizerConstructor``.
OPTIM_WRAPPER_CONSTRUCTORS = _child("optimizer wrapper constructor", MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _child("parameter scheduler", MMENGINE_PARAM_SCHEDULERS)
HOOKS = _child("hook", MMENGINE_HOOKS)
LOOPS = _child("loop", MMENGINE_LOOPS)
DATASETS = _child("dataset", MMENGINE_DATASETS)
DATA_SAMPLERS = _child("data sampler", MMENGINE_DATA_SAMPLERS)
TRANSFORMS = _child("transform", MMENGINE_TRANSFORMS)
METRICS = _child("metric", MMENGINE_METRICS)
EVALUATOR = _child("evaluator", MMENGINE_EVALUATOR)
VISBACKENDS = _child("vis_backend", MMENGINE_VISBACKENDS)
VISUALIZERS = _child("visualizer", MMENGINE_VISUALIZERS)

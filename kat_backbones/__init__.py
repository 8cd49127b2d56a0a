"""kat_backbones: the Kolmogorov-Arnold Transformer (KAT) for timm and OpenMMLab.

``import kat_backbones`` registers everything: the compiled op (``torch.ops.kat_backbones.*``) and the KAT models in
timm's registry.
"""

from importlib.util import find_spec as _find_spec

from . import layers, models, ops

# OpenMMLab glue (kat_backbones.KATBackbone, SimpleFPN, LN2d, LayerDecayOptimizerConstructor) when mmengine + mmcv exist
if _find_spec("mmengine") is not None and _find_spec("mmcv") is not None:
    from . import mm  # noqa: F401

__version__ = "0.1.0"

__all__ = ["layers", "models", "ops", "__version__"]

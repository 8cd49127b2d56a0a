"""kat_backbones: the Kolmogorov-Arnold Transformer (KAT) for timm and OpenMMLab.

``import kat_backbones`` registers everything: the compiled op (``torch.ops.kat_backbones.*``) and the KAT models in
timm's registry.
"""

from . import ops

__version__ = "0.1.0"

__all__ = ["ops", "__version__"]

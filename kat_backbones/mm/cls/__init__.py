"""Image classification through mmengine's Runner, without a classification toolbox.

- :class:`TimmClassifier` (``kat_backbones.TimmClassifier``): any timm model (KAT included) with timm's Mixup/CutMix
  and soft-target / label-smoothing losses; :class:`ClsDataPreprocessor` batches its inputs.
- :class:`TimmTransform` (``kat_backbones.TimmTransform``): image loading + :func:`timm.data.create_transform`.

What mmpretrain already provides is used from it: the dataset is ``type='mmpretrain.CustomDataset'``
(``<split>/<class>/<image>`` folders, classes = sorted folder names), the metric ``type='mmpretrain.Accuracy'`` (reads
:meth:`TimmClassifier.predict`'s outputs).

Configs: ``configs/imagenet/`` (see docs/classification.md).
"""

from .classifier import ClsDataPreprocessor, TimmClassifier
from .transforms import TimmTransform

__all__ = ["ClsDataPreprocessor", "TimmClassifier", "TimmTransform"]

"""Image classification through mmengine's Runner, without a classification toolbox.

- :class:`TimmClassifier` (``kat_backbones.TimmClassifier``): any timm model (KAT included) with timm's Mixup/CutMix
  and soft-target / label-smoothing losses; :class:`ClsDataPreprocessor` batches its inputs.
- :class:`ImageFolderDataset` (``kat_backbones.ImageFolderDataset``): ``<split>/<class>/<image>`` folders.
- :class:`TimmTransform` (``kat_backbones.TimmTransform``): image loading + :func:`timm.data.create_transform`.

Metric: mmpretrain's ``Accuracy`` (``type='mmpretrain.Accuracy'``) reads :meth:`TimmClassifier.predict`'s outputs.

Configs: ``configs/imagenet/`` (see docs/classification.md).
"""

from .classifier import ClsDataPreprocessor, TimmClassifier
from .dataset import IMG_EXTENSIONS, ImageFolderDataset, TimmTransform

__all__ = ["ClsDataPreprocessor", "IMG_EXTENSIONS", "ImageFolderDataset", "TimmClassifier", "TimmTransform"]

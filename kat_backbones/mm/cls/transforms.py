"""The timm-native data step for mmengine: :class:`TimmTransform` reads an image and applies timm's transforms.

The dataset is mmpretrain's ``CustomDataset`` (ImageFolder layout ``data/imagenet/{train,val}/<class>/*.JPEG``, class
list = sorted folder names, entries ``dict(img_path=..., gt_label=<int>)``); this step turns its entries into samples::

    train_dataloader = dict(
        batch_size=128, drop_last=True, sampler=dict(type='DefaultSampler', shuffle=True),
        dataset=dict(
            type='mmpretrain.CustomDataset', data_root='data/imagenet', data_prefix=dict(img_path='train'),
            pipeline=[dict(type='kat_backbones.TimmTransform', input_size=224, is_training=True,
                           auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic', re_prob=0.25)]))

Each sample comes out as ``dict(inputs=<normalised (3, H, W) float tensor>, data_samples=<class index>)``, the input
of :class:`kat_backbones.mm.cls.ClsDataPreprocessor` / :class:`kat_backbones.mm.cls.TimmClassifier`. mmpretrain's own
pipeline (``LoadImageFromFile``, ``PackInputs``, its RandAugment) yields ``DataSample`` objects and has no timm
``create_transform``: this step is the part of the timm recipe it lacks.
"""

from __future__ import annotations

import io
from typing import Any

from mmengine.fileio import get
from PIL import Image
from timm.data import create_transform

from ..guarded_dataset import SampleLoadError
from ..registry import TRANSFORMS

__all__ = ["TimmTransform"]


@TRANSFORMS.register_module()
class TimmTransform:
    """Load an image and apply :func:`timm.data.create_transform` (``type='kat_backbones.TimmTransform'``).

    Takes a data-list entry (``img_path``, ``gt_label`` = class index, as mmpretrain's ``CustomDataset`` writes them;
    ``sample_idx`` names the sample in errors), reads the image as RGB with PIL (through mmengine's file
    backends, so ``backend_args`` can point at remote storage), applies the timm transform and returns
    ``dict(inputs=tensor, data_samples=gt_label)``.

    Args:
        backend_args (dict, optional): mmengine file-backend arguments. Defaults to None (local files).
        **transform_kwargs: Arguments of :func:`timm.data.create_transform`, e.g. training:
            ``input_size=224, is_training=True, auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic',
            re_prob=0.25, re_mode='pixel'``; evaluation: ``input_size=224, interpolation='bicubic', crop_pct=0.875``.
            ``use_prefetcher`` must stay False (the output must be a normalised tensor).
    """

    def __init__(self, backend_args: dict | None = None, **transform_kwargs: Any) -> None:
        if transform_kwargs.get("use_prefetcher") or transform_kwargs.get("separate"):
            raise ValueError("TimmTransform needs one normalised-tensor transform: no use_prefetcher / separate")
        self.backend_args = backend_args
        self.transform_kwargs = transform_kwargs
        self.transform = create_transform(**transform_kwargs)

    def __call__(self, results: dict) -> dict:
        img = results.get("img")
        if img is None:
            path = results["img_path"]
            try:  # PIL decodes lazily: convert() is where a truncated file fails
                img = Image.open(io.BytesIO(get(path, backend_args=self.backend_args))).convert("RGB")
            except (OSError, ValueError, SyntaxError) as err:  # PIL: UnidentifiedImageError / truncated / bad header
                raise SampleLoadError(
                    f"cannot read image {path} (sample index {results.get('sample_idx')}): {type(err).__name__}: {err}"
                ) from err
        elif not isinstance(img, Image.Image):
            img = Image.fromarray(img)
        return dict(inputs=self.transform(img.convert("RGB")), data_samples=results["gt_label"])

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.transform_kwargs})"


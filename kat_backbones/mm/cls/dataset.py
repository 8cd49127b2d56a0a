"""ImageNet-style classification data for mmengine: an ImageFolder dataset and a timm-transform pipeline step.

``data/imagenet/train/<class>/*.JPEG`` and ``data/imagenet/val/<class>/*.JPEG`` (class list = sorted folder names)::

    train_dataloader = dict(
        batch_size=128, drop_last=True, sampler=dict(type='DefaultSampler', shuffle=True),
        dataset=dict(
            type='kat_backbones.ImageFolderDataset', data_root='data/imagenet', data_prefix=dict(img_path='train'),
            pipeline=[dict(type='kat_backbones.TimmTransform', input_size=224, is_training=True,
                           auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic', re_prob=0.25)]))

Each sample comes out as ``dict(inputs=<normalised (3, H, W) float tensor>, data_samples=<class index>)``, the input
of :class:`kat_backbones.mm.cls.ClsDataPreprocessor` / :class:`kat_backbones.mm.cls.TimmClassifier`.
"""

from __future__ import annotations

import io
import os
from typing import Any, Sequence

from mmengine.dataset import BaseDataset
from mmengine.fileio import get
from PIL import Image
from timm.data import create_transform

from ..guarded_dataset import SampleLoadError
from ..registry import DATASETS, TRANSFORMS

__all__ = ["IMG_EXTENSIONS", "ImageFolderDataset", "TimmTransform"]

#: File extensions read as images (lower-cased before comparing; ImageNet's files end in ``.JPEG``).
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@TRANSFORMS.register_module()
class TimmTransform:
    """Load an image and apply :func:`timm.data.create_transform` (``type='kat_backbones.TimmTransform'``).

    Takes a data-list entry (``img_path``, ``gt_label``), reads the image as RGB with PIL (through mmengine's file
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


@DATASETS.register_module()
class ImageFolderDataset(BaseDataset):
    """Images in one folder per class: ``{data_root}/{data_prefix['img_path']}/<class>/<image>``
    (``type='kat_backbones.ImageFolderDataset'``).

    The classes are the sorted sub-folder names (ImageNet's ``n01440764``, ...) unless ``metainfo=dict(classes=...)``
    fixes them (then only those folders are read, in that order: the class index is the position in the list).
    Images are found recursively below each class folder and sorted, so the data list is deterministic. Each entry is
    ``dict(img_path=..., gt_label=class_index)``; the ``pipeline`` (e.g. :class:`TimmTransform`) turns it into a
    sample.

    Args:
        data_root (str): Root, e.g. ``'data/imagenet'``. Defaults to ''.
        data_prefix (dict): ``img_path``: the split folder below ``data_root``, e.g. ``'train'`` or ``'val'``.
            Defaults to ``dict(img_path='')``.
        extensions (Sequence[str]): Image file extensions (case-insensitive). Defaults to :data:`IMG_EXTENSIONS`.
        **kwargs: :class:`mmengine.dataset.BaseDataset` arguments (``pipeline``, ``metainfo``, ``test_mode``,
            ``indices``, ``lazy_init``, ...).
    """

    METAINFO: dict = dict(classes=None)

    def __init__(
        self,
        data_root: str = "",
        data_prefix: dict | None = None,
        extensions: Sequence[str] = IMG_EXTENSIONS,
        **kwargs: Any,
    ) -> None:
        self.extensions = tuple(e.lower() for e in extensions)
        super().__init__(data_root=data_root, data_prefix=data_prefix or dict(img_path=""), **kwargs)

    def _images(self, folder: str) -> list[str]:
        found = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames.sort()
            found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(self.extensions)]
        return found

    def load_data_list(self) -> list[dict]:
        """Scan the class folders; sets ``metainfo['classes']`` when it was not given."""
        root = self.data_prefix["img_path"]
        if not os.path.isdir(root):
            raise FileNotFoundError(f"ImageFolderDataset: no folder {root!r} (expected {root}/<class>/<image>)")
        classes = self._metainfo.get("classes")
        if classes is None:
            with os.scandir(root) as entries:
                classes = sorted(e.name for e in entries if e.is_dir(follow_symlinks=True))
            self._metainfo["classes"] = tuple(classes)
        data_list = []
        for label, name in enumerate(classes):
            folder = os.path.join(root, name)
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"ImageFolderDataset: class folder {folder!r} is missing")
            data_list += [dict(img_path=path, gt_label=label) for path in self._images(folder)]
        if not data_list:
            raise FileNotFoundError(f"ImageFolderDataset: no images with extensions {self.extensions} in {root!r}")
        return data_list

"""Image classification with mmengine's Runner: any timm model (KAT included) as an mmengine ``BaseModel``.

``type='kat_backbones.TimmClassifier'`` builds the network from timm's registry by name, trains it with timm's
Mixup/CutMix and soft-target / label-smoothing cross-entropy, and predicts class scores for mmpretrain's
``Accuracy`` (``type='mmpretrain.Accuracy'``). Batches come from mmpretrain's ``CustomDataset``
(``type='mmpretrain.CustomDataset'``) with the :class:`~kat_backbones.mm.cls.TimmTransform` pipeline (already
normalised tensors) through :class:`ClsDataPreprocessor`.
"""

from __future__ import annotations

from typing import Any, Literal

import timm
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmengine.model import BaseDataPreprocessor, BaseModel
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from kat_backbones.checkpoint import read_state_dict
from kat_backbones.convert import load_kat_weights

from ..registry import MODELS

__all__ = ["ClsDataPreprocessor", "TimmClassifier"]

ForwardMode = Literal["loss", "predict", "tensor"]


@MODELS.register_module()
class ClsDataPreprocessor(BaseDataPreprocessor):
    """Batches classification inputs and moves them to the model's device
    (``type='kat_backbones.ClsDataPreprocessor'``).

    Accepts both collate functions of mmengine: ``pseudo_collate`` (the default; lists of ``(3, H, W)`` tensors and
    ``int`` labels) and ``default_collate`` (a stacked ``(B, 3, H, W)`` tensor and a label tensor). Images are
    expected already normalised (``TimmTransform`` does it), so nothing else is done to them.
    """

    def forward(self, data: dict, training: bool = False) -> dict[str, Any]:
        inputs = data["inputs"]
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(list(inputs))
        labels = data.get("data_samples")
        if labels is not None and not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor([int(label) for label in labels], dtype=torch.long)
        return self.cast_data(dict(inputs=inputs, data_samples=labels))


@MODELS.register_module()
class TimmClassifier(BaseModel):
    """A timm model as an mmengine model for image classification (``type='kat_backbones.TimmClassifier'``).

    Example config::

        model = dict(
            type='kat_backbones.TimmClassifier',
            model_name='kat_tiny_swish_patch16_224', pretrained=False, num_classes=1000, drop_path_rate=0.1,
            mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1))

    Loss (``mode='loss'``, as timm's ``train.py``): with an active ``mixup`` (``mixup_alpha``/``cutmix_alpha`` > 0)
    the batch is mixed by :class:`timm.data.Mixup` during training and the loss is
    :class:`timm.loss.SoftTargetCrossEntropy`; otherwise :class:`timm.loss.LabelSmoothingCrossEntropy` when
    ``label_smoothing`` > 0, else plain cross-entropy. Mixup needs even batch sizes (use ``drop_last=True``).

    Args:
        model_name (str): A timm model name, e.g. ``'kat_tiny_swish_patch16_224'`` (``import kat_backbones``
            registers the KAT models) or ``'vit_tiny_patch16_224'``.
        pretrained (bool): Load timm's pretrained weights for ``model_name`` (``pretrained_cfg_overlay=dict(file=...)``
            in ``model_kwargs`` points timm at a local file). Defaults to False.
        checkpoint (str, optional): A ``.pth``/``.safetensors`` state dict loaded at construction through
            :func:`kat_backbones.convert.load_kat_weights`: a KAT checkpoint (timm layout, or the ``state_dict`` of a
            TimmClassifier run) loads as is; a timm ViT/DeiT checkpoint is converted (the paper's KAT* transfer: ViT
            weights copied, rationals keep their init). A classifier head whose shape differs from the model's
            (another ``num_classes``) keeps its fresh init. Defaults to None.
        mixup (dict, optional): Arguments of :class:`timm.data.Mixup` (``mixup_alpha``, ``cutmix_alpha``, ``prob``,
            ``switch_prob``, ``mode``, ``label_smoothing``, ...); ``num_classes`` is filled in. Defaults to None.
        label_smoothing (float): Label smoothing without mixup, and Mixup's ``label_smoothing`` unless ``mixup``
            sets its own. Defaults to 0.0.
        data_preprocessor (dict | nn.Module, optional): Defaults to :class:`ClsDataPreprocessor`.
        init_cfg (dict, optional): mmengine init config; unused by timm models (they are initialised by timm at
            construction). Defaults to None.
        **model_kwargs: Passed to :func:`timm.create_model` (``num_classes``, ``drop_path_rate``, ``img_size``,
            ``kan_init``, ...).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool = False,
        checkpoint: str | None = None,
        mixup: dict | None = None,
        label_smoothing: float = 0.0,
        data_preprocessor: dict | nn.Module | None = None,
        init_cfg: dict | None = None,
        **model_kwargs: Any,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor or ClsDataPreprocessor(), init_cfg=init_cfg)
        self.model_name = model_name
        self.model = timm.create_model(model_name, pretrained=pretrained, **model_kwargs)
        self.num_classes: int = self.model.num_classes
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

        # timm's Mixup defaults (mixup_alpha=1.0, cutmix_alpha=0.0) decide whether a given dict mixes anything
        mixup_args = {"label_smoothing": label_smoothing, **(mixup or {})}
        mixes = (
            mixup_args.get("mixup_alpha", 1.0) > 0
            or mixup_args.get("cutmix_alpha", 0.0) > 0
            or mixup_args.get("cutmix_minmax") is not None
        )
        self.mixup_fn: Mixup | None = None
        if mixup is not None and mixes:
            self.mixup_fn = Mixup(num_classes=self.num_classes, **mixup_args)
        self.label_smoothing = label_smoothing
        if self.mixup_fn is not None:
            self.train_loss: nn.Module = SoftTargetCrossEntropy()
        elif label_smoothing > 0:
            self.train_loss = LabelSmoothingCrossEntropy(smoothing=label_smoothing)
        else:
            self.train_loss = nn.CrossEntropyLoss()

    def load_checkpoint(self, path: str) -> None:
        """Load a KAT or ViT/DeiT state dict file into the timm model (see ``checkpoint``)."""
        logger = MMLogger.get_current_instance()
        state = read_state_dict(path)  # weights saved from a TimmClassifier lose their 'model.' prefix there
        target = self.model.state_dict()
        head = getattr(self.model, "pretrained_cfg", {}).get("classifier", "head")
        heads = (head,) if isinstance(head, str) else tuple(head)
        reset = [
            k for k in state
            if k.rsplit(".", 1)[0] in heads and k in target and state[k].shape != target[k].shape
        ]
        for key in reset:  # another number of classes: keep the model's own (fresh) head
            state[key] = target[key]
        if reset:
            logger.info(f"TimmClassifier: classifier {reset} not loaded from {path} (shape differs), kept its init")
        load_kat_weights(self.model, state, strict=True)
        logger.info(f"TimmClassifier: loaded {path} into {self.model_name}")

    def init_weights(self) -> None:
        """Nothing to do: timm initialised the model (and ``checkpoint`` was loaded) at construction.

        mmengine's default would call the timm model's own ``init_weights()`` again, which re-draws every weight
        (undoing a loaded checkpoint and the KAN initialisation of KAT models).
        """
        self._is_init = True

    def forward(
        self, inputs: torch.Tensor, data_samples: torch.Tensor | None = None, mode: ForwardMode = "tensor"
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]] | torch.Tensor:
        """Run the model.

        Args:
            inputs (torch.Tensor): Images ``(B, 3, H, W)``, normalised.
            data_samples (torch.Tensor, optional): Class indices ``(B,)``; required for ``'loss'``.
            mode (str): ``'loss'`` -> ``dict(loss=...)``; ``'predict'`` -> one dict per image with
                ``pred_score`` (softmax, ``(num_classes,)``), ``pred_label`` and ``gt_label`` when labels are given
                (``(1,)`` tensors, the layout of mmpretrain's ``DataSample`` that its ``Accuracy`` concatenates);
                ``'tensor'`` -> logits ``(B, num_classes)``. Defaults to ``'tensor'``.
        """
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self.model(inputs)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training loss (mixup/cutmix + soft-target CE in training mode); plain cross-entropy in eval mode."""
        if labels is None:
            raise ValueError("mode='loss' needs the labels (data_samples)")
        if not self.training:
            return dict(loss=F.cross_entropy(self.model(inputs).float(), labels))
        if self.mixup_fn is not None:
            if inputs.shape[0] % 2:
                raise ValueError(f"mixup/cutmix need an even batch size, got {inputs.shape[0]} (use drop_last=True)")
            inputs, labels = self.mixup_fn(inputs, labels)
        return dict(loss=self.train_loss(self.model(inputs).float(), labels))

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> list[dict[str, torch.Tensor]]:
        """Class scores (softmax) and the predicted class of each image."""
        scores = self.model(inputs).float().softmax(dim=-1)
        pred = scores.argmax(dim=-1)
        outputs = []
        for i in range(scores.shape[0]):
            out = dict(pred_score=scores[i], pred_label=pred[i : i + 1])
            if labels is not None:
                out["gt_label"] = labels[i : i + 1]
            outputs.append(out)
        return outputs

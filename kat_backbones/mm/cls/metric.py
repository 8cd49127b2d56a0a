"""Top-k classification accuracy as an mmengine metric (``type='kat_backbones.Accuracy'``)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.evaluator import BaseMetric

from ..registry import METRICS

__all__ = ["Accuracy"]


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Top-k accuracy in percent: ``{'accuracy/top1': ..., 'accuracy/top5': ...}``.

    Reads the predictions of :class:`kat_backbones.mm.cls.TimmClassifier` (``pred_score`` and ``gt_label`` per
    image). Per image only the ``max(topk)`` best class indices are kept, so evaluating ImageNet's 50,000 images
    collects a few hundred kilobytes across processes rather than the score matrix. With fewer classes than ``k``,
    top-k counts every image as correct (as :func:`timm.utils.accuracy`).

    Args:
        topk (int | Sequence[int]): The k's. Defaults to (1, 5).
        collect_device (str): ``'cpu'`` or ``'gpu'``, where results are gathered across processes. Defaults to
            ``'cpu'``.
        prefix (str, optional): Key prefix. Defaults to ``'accuracy'``.
        collect_dir (str, optional): Temporary directory for CPU collection. Defaults to None.
    """

    default_prefix = "accuracy"

    def __init__(
        self,
        topk: int | Sequence[int] = (1, 5),
        collect_device: str = "cpu",
        prefix: str | None = None,
        collect_dir: str | None = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.topk = (topk,) if isinstance(topk, int) else tuple(topk)
        if not self.topk or min(self.topk) < 1:
            raise ValueError(f"topk must be positive integers, got {topk}")

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        maxk = max(self.topk)
        for sample in data_samples:
            score = torch.as_tensor(sample["pred_score"])
            self.results.append(
                dict(
                    topk=score.topk(min(maxk, score.numel())).indices.cpu(),
                    gt_label=int(sample["gt_label"]),
                )
            )

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        if not results:
            raise ValueError("Accuracy: no predictions were collected")
        gt = torch.tensor([r["gt_label"] for r in results])
        topk = torch.stack([r["topk"] for r in results])  # (N, min(maxk, num_classes))
        hits = topk == gt[:, None]
        return {f"top{k}": float(hits[:, :k].any(dim=1).float().mean()) * 100.0 for k in self.topk}

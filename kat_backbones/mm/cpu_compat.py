"""Config rewrites shared by ``tools/train.py`` and ``tools/test.py`` (mmdet and mmseg configs alike)."""

from __future__ import annotations

from typing import Any

__all__ = ["SYNC_BN_TYPES", "convert_cfg_for_cpu"]

#: Norm types that need a process group and a GPU; on CPU they become plain ``BN``.
SYNC_BN_TYPES = ("SyncBN", "MMSyncBN")


def _convert_sync_bn(node: Any, path: str, changes: list[str]) -> None:
    if isinstance(node, dict):
        norm_type = node.get("type")
        if isinstance(norm_type, str) and norm_type.rsplit(".", 1)[-1] in SYNC_BN_TYPES:
            node["type"] = "BN"
            changes.append(f"{path}.type: {norm_type} -> BN")
        for key, value in node.items():
            _convert_sync_bn(value, f"{path}.{key}" if path else str(key), changes)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _convert_sync_bn(value, f"{path}[{i}]", changes)


def convert_cfg_for_cpu(cfg: Any) -> list[str]:
    """Rewrite a GPU training config so it runs on CPU, in place, and say what changed.

    - ``optim_wrapper.type='AmpOptimWrapper'`` becomes ``'OptimWrapper'`` (AMP's wrapper needs CUDA/NPU/MLU; its
      ``loss_scale``/``dtype`` keys are dropped);
    - every ``SyncBN`` / ``MMSyncBN`` norm config becomes ``BN`` (sync BN needs a GPU process group);
    - ``env_cfg.dist_cfg.backend='nccl'`` becomes ``'gloo'`` (for ``--launcher pytorch`` on CPU).

    Args:
        cfg (mmengine.Config | dict): The config.

    Returns:
        list[str]: One line per change (empty when nothing had to change).
    """
    changes: list[str] = []
    optim_wrapper = cfg.get("optim_wrapper")
    if isinstance(optim_wrapper, dict) and str(optim_wrapper.get("type", "")).endswith("AmpOptimWrapper"):
        optim_wrapper["type"] = "OptimWrapper"
        for key in ("loss_scale", "dtype", "use_fsdp"):
            optim_wrapper.pop(key, None)
        changes.append("optim_wrapper.type: AmpOptimWrapper -> OptimWrapper")
    for key in list(cfg.keys()):
        _convert_sync_bn(cfg[key], key, changes)
    dist_cfg = (cfg.get("env_cfg") or {}).get("dist_cfg")
    if isinstance(dist_cfg, dict) and dist_cfg.get("backend") == "nccl":
        dist_cfg["backend"] = "gloo"
        changes.append("env_cfg.dist_cfg.backend: nccl -> gloo")
    return changes

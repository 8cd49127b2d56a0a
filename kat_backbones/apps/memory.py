"""Memory measurements shared by the benchmark tools (``tools/benchmark_kat.py``, ``tools/benchmark_karat.py``)."""

from __future__ import annotations

import torch

__all__ = ["saved_tensor_bytes", "proc_status_kib", "reset_peak_rss"]


def saved_tensor_bytes(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for backward in one forward of ``module(*inputs)``.

    Each storage is counted once and the parameters' storages are excluded: the activation memory a train step holds
    at its peak (before backward). Deterministic, unlike process RSS.
    """
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(*inputs)
    del out
    return sum(seen.values())


def proc_status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (Linux), e.g. ``VmRSS`` or ``VmHWM`` (the peak RSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Resets the peak-RSS mark ``VmHWM`` to the current RSS (Linux >= 4.0); False where the OS does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True

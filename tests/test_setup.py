"""The environment that `make setup` builds: compiled backends, mmcv ops on CPU, the OpenMMLab stack, timm."""

import importlib
import os
import shutil
import subprocess
import sys

import pytest
import torch

import kat_backbones


def test_package_reports_compiled_backends():
    backends = kat_backbones.ops.available_backends()
    assert backends in (["cpu"], ["cpu", "cuda"])
    assert kat_backbones.ops.extension_error() is None
    assert hasattr(torch.ops.kat_backbones, "group_rational_fwd")


def _nvcc_available() -> bool:
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and bool(
        (CUDA_HOME and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))) or shutil.which("nvcc"))


@pytest.mark.skipif(not _nvcc_available() or os.environ.get("FORCE_CUDA") == "0",
                    reason="needs nvcc and a CUDA build of torch")
def test_cuda_sources_compiled_and_linked():
    """Where nvcc exists the build compiles csrc/cuda and links it: the CUDA kernels are registered."""
    assert "cuda" in kat_backbones.ops.available_backends()
    for op in ("group_rational_fwd", "group_rational_bwd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"kat_backbones::{op}", "CUDA")
    so = kat_backbones._C.__file__
    with open(so, "rb") as f:
        assert b"group_rational_bwd_kernel" in f.read()  # the device kernels are in the library


def test_mmcv_ops_nms_and_roialign_forward_backward_on_cpu():
    from mmcv.ops import RoIAlign, nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2] and dets.shape == (2, 5)

    feats = torch.randn(1, 4, 16, 16, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 9.0], [0, 4.0, 2.0, 14.0, 12.0]])
    out = RoIAlign((3, 3), spatial_scale=1.0, sampling_ratio=2)(feats, rois)
    assert out.shape == (2, 4, 3, 3)
    out.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "module", ["mmdet", "mmseg", "mmpretrain", "mmengine", "timm", "torchvision", "pycocotools.coco"]
)
def test_stack_imports_alongside_package(module):
    importlib.import_module(module)


def test_torchvision_nms_runs():
    import torchvision

    keep = torchvision.ops.nms(torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11]]), torch.tensor([0.9, 0.8]), 0.5)
    assert keep.tolist() == [0]


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("ldd") is None, reason="needs Linux ldd")
def test_extension_links_libstdcxx_dynamically():
    """A statically linked libstdc++ (some compiler wrappers do it) turns every TORCH_CHECK error into a crash."""
    import kat_backbones._C as ext

    out = subprocess.run(["ldd", ext.__file__], capture_output=True, text=True, check=True).stdout
    assert "libstdc++" in out, f"kat_backbones._C does not link libstdc++ dynamically:\n{out}"

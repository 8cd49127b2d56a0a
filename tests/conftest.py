"""Shared test parametrisation: devices (CUDA cases skip without a GPU) and the dtype tolerance table."""

import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]

FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# Tolerances against a float64 reference: fp32 within 1e-5 relative (the op's accuracy target); fp64 near machine
# precision.
# Half types are judged against plain PyTorch's own error at that precision (see tests/test_ops.py).
RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

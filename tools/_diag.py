import faulthandler
import sys

import torch

import kat_backbones.ops  # noqa: F401

faulthandler.enable()
O = torch.ops.kat_backbones
dev = sys.argv[1]
x = torch.randn(2, 16, device=dev)
n = torch.randn(1, 6, device=dev)
d = torch.randn(4, 4, device=dev)
print("valid", O.group_rational_fwd(x, n, d, 1).shape, flush=True)
try:
    O.group_rational_fwd(x, n, d[:3], 1)
except RuntimeError as e:
    print("caught", dev, str(e)[:100], flush=True)

"""kat_backbones.Fp16CompressionHook: ViTDet's fp16 gradient all-reduce under DDP (torch's fp16_compress_hook), run
through mmengine's Runner in a one-process gloo group on CPU."""

from __future__ import annotations

import socket

import pytest
import torch
from torch import nn

pytest.importorskip("mmengine")

import torch.distributed as dist  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from kat_backbones.mm import Fp16CompressionHook, destroy_distributed  # noqa: E402


class _Regressor(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 1)

    def forward(self, inputs, data_samples=None, mode="tensor"):
        x = torch.stack(list(inputs)) if isinstance(inputs, (list, tuple)) else inputs
        out = self.linear(x)
        return dict(loss=out.pow(2).mean()) if mode == "loss" else out


def _runner(tmp_path, launcher: str) -> Runner:
    g = torch.Generator().manual_seed(0)
    data = [dict(inputs=torch.randn(8, generator=g)) for _ in range(8)]
    return Runner(
        model=_Regressor(),
        work_dir=str(tmp_path),
        train_dataloader=dict(dataset=data, batch_size=2, sampler=dict(type="DefaultSampler", shuffle=False),
                              collate_fn=dict(type="default_collate"), num_workers=0),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=2, val_interval=10**6),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.1)),
        custom_hooks=[dict(type="kat_backbones.Fp16CompressionHook")],
        default_hooks=dict(checkpoint=None),
        launcher=launcher,
        # CPU DDP: no device_ids (what tools/train.py's init_cpu_distributed sets)
        cfg=None if launcher == "none" else dict(
            model_wrapper_cfg=dict(type="MMDistributedDataParallel", device_ids=None)),
        env_cfg=dict(dist_cfg=dict(backend="gloo")),
        default_scope="mmengine",
    )


@pytest.fixture
def gloo_group(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(port)).items():
        monkeypatch.setenv(key, value)
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    destroy_distributed()


def test_ddp_gradients_are_all_reduced_in_fp16(tmp_path, gloo_group):
    runner = _runner(tmp_path, "pytorch")
    runner.train()  # before_train registers the comm hook; two iterations run through it
    ddp = runner.model
    assert isinstance(ddp, nn.parallel.DistributedDataParallel)
    # one more backward through DDP: the reduced gradients went through fp16 (divided by world size 1)
    ddp.zero_grad(set_to_none=True)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1)) * 1e-3 + 1.0 / 3.0
    ddp(x).pow(2).mean().backward()
    grad = ddp.module.linear.weight.grad
    expected = torch.autograd.grad(ddp.module(x).pow(2).mean(), ddp.module.linear.weight)[0]
    assert not torch.equal(expected, expected.half().float())  # fp32 gradient that fp16 cannot hold exactly
    torch.testing.assert_close(grad, expected.half().float(), rtol=0, atol=0)
    runner.train()  # a second train() keeps the one registered hook (DDP refuses a second)
    del runner, ddp


def test_single_process_run_is_untouched(tmp_path):
    runner = _runner(tmp_path, "none")
    runner.train()
    assert not isinstance(runner.model, nn.parallel.DistributedDataParallel)
    hook = next(h for h in runner.hooks if isinstance(h, Fp16CompressionHook))
    assert hook._registered_on is None

"""NonFiniteLossHook's policy under mixed precision, through mmengine's Runner on CPU.

fp16 with a dynamic loss scaler: a non-finite loss skips the step (the scaler does it), is logged and counted, and the
run stops only after ``max_consecutive`` non-finite iterations in a row or when the loss scale collapses. fp32 keeps the
immediate stop. mmengine's ``AmpOptimWrapper`` refuses to build without an accelerator and creates a CUDA
``GradScaler``; the tests let it build on CPU and give it torch's CPU ``GradScaler`` (``torch.amp.GradScaler('cpu')``,
same skip/back-off logic), so the real wrapper, scaler and Runner loop run unchanged.
"""

from __future__ import annotations

import functools
import logging

import pytest
import torch
from torch import nn

pytest.importorskip("mmengine")

from mmengine.model import BaseModel  # noqa: E402
from mmengine.optim.optimizer import amp_optimizer_wrapper  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from kat_backbones.mm.hooks import NonFiniteLossError, NonFiniteLossHook  # noqa: E402


class _Regressor(BaseModel):
    """y = w x; the loss is NaN for the iterations listed in ``nan_iters`` (1-based), counted per training call."""

    def __init__(self, nan_iters=()) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.nan_iters = set(nan_iters)
        self.calls = 0

    def forward(self, inputs, data_samples=None, mode="tensor"):
        x = torch.stack(list(inputs)) if isinstance(inputs, (list, tuple)) else inputs
        out = self.linear(x)
        if mode != "loss":
            return out
        self.calls += 1
        loss = out.float().pow(2).mean()
        if self.calls in self.nan_iters:
            loss = loss * float("nan")
        return dict(loss=loss)


def _dataset(n=32):
    g = torch.Generator().manual_seed(0)
    return [dict(inputs=torch.randn(4, generator=g)) for _ in range(n)]


def _runner(tmp_path, model, amp: bool, max_iters: int, hook: dict, loss_scale="dynamic"):
    optim = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.01))
    if amp:
        optim = dict(
            type="AmpOptimWrapper", loss_scale=loss_scale, dtype="bfloat16", optimizer=dict(type="SGD", lr=0.01))
    return Runner(
        model=model,
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=_dataset(), batch_size=2, sampler=dict(type="DefaultSampler", shuffle=False),
            collate_fn=dict(type="default_collate"), num_workers=0),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=10**6),
        optim_wrapper=optim,
        custom_hooks=[dict(type="kat_backbones.NonFiniteLossHook", **hook)],
        default_hooks=dict(logger=dict(type="LoggerHook", interval=1), checkpoint=None),
        default_scope="mmengine",
        log_level=logging.INFO,
    )


@pytest.fixture
def cpu_amp(monkeypatch):
    """Let mmengine's AmpOptimWrapper build on CPU, with torch's CPU GradScaler."""
    monkeypatch.setattr(amp_optimizer_wrapper, "is_cuda_available", lambda: True)
    monkeypatch.setattr(amp_optimizer_wrapper, "GradScaler", functools.partial(torch.amp.GradScaler, "cpu"))


def _hook(runner) -> NonFiniteLossHook:
    return next(h for h in runner.hooks if isinstance(h, NonFiniteLossHook))


def test_amp_overflows_skip_steps_and_training_continues(tmp_path, cpu_amp):
    """Isolated non-finite losses: steps skipped (weights unchanged), scale halved, counted, logged; run completes."""
    model = _Regressor(nan_iters=(3, 5, 6))
    runner = _runner(tmp_path, model, amp=True, max_iters=8, hook=dict(max_consecutive=3))
    w0 = model.linear.weight.detach().clone()
    runner.train()
    hook = _hook(runner)
    assert runner.iter == 8
    assert hook.total == 3 and hook.consecutive == 0
    scaler = runner.optim_wrapper.loss_scaler
    assert scaler.get_scale() == 2.0**16 * 0.5**3  # halved once per skipped step, no growth within 2000 iterations
    assert torch.isfinite(model.linear.weight).all() and not torch.equal(model.linear.weight, w0)
    assert runner.message_hub.get_info("nonfinite_loss_iters") == 3
    log = "\n".join(p.read_text() for p in tmp_path.rglob("*.log"))
    assert "non-finite loss loss=nan at iteration 5: fp16 overflow, the dynamic loss scaler skipped this step" in log
    assert "1 in a row, 2 in this run" in log and "2 in a row, 3 in this run" in log


def test_amp_skipped_step_leaves_weights_unchanged(tmp_path, cpu_amp):
    """The step of a non-finite iteration is skipped by the scaler: the weights after it equal those before it."""
    model = _Regressor(nan_iters=(3,))
    runner = _runner(tmp_path, model, amp=True, max_iters=2, hook=dict())
    runner.train()
    w2 = model.linear.weight.detach().clone()
    runner.train_loop._max_iters = 3  # one more iteration: the NaN one
    runner.train_loop.run()
    assert _hook(runner).total == 1
    torch.testing.assert_close(model.linear.weight, w2, rtol=0, atol=0)


def test_amp_stops_after_max_consecutive(tmp_path, cpu_amp):
    model = _Regressor(nan_iters=(2, 4, 5, 6))
    runner = _runner(tmp_path, model, amp=True, max_iters=10, hook=dict(max_consecutive=3))
    message = r"at iteration 6: 3 consecutive iterations .*max_consecutive=3"
    with pytest.raises(NonFiniteLossError, match=message) as err:
        runner.train()
    assert err.value.iteration == 6 and err.value.values == {"loss": pytest.approx(float("nan"), nan_ok=True)}
    assert _hook(runner).total == 4
    assert torch.isfinite(model.linear.weight).all()


def test_amp_stops_on_collapsed_loss_scale(tmp_path, cpu_amp):
    """Non-consecutive overflows (below max_consecutive) that drive the scale under min_loss_scale stop the run:
    16 -> 8 -> 4 -> 2 at iterations 1, 3, 5."""
    model = _Regressor(nan_iters=(1, 3, 5, 7))
    runner = _runner(
        tmp_path, model, amp=True, max_iters=10, hook=dict(max_consecutive=5, min_loss_scale=3.0),
        loss_scale=dict(init_scale=16.0))
    with pytest.raises(NonFiniteLossError, match=r"loss scale collapsed to 2 \(< min_loss_scale=3\) at iteration 5"):
        runner.train()


def test_fp32_and_static_scale_stop_immediately(tmp_path, cpu_amp):
    model = _Regressor(nan_iters=(2,))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss loss=nan at iteration 2; training stopped"):
        _runner(tmp_path / "fp32", model, amp=False, max_iters=5, hook=dict()).train()
    model = _Regressor(nan_iters=(2,))
    runner = _runner(tmp_path / "static", model, amp=True, max_iters=5, hook=dict(), loss_scale=512.0)
    with pytest.raises(NonFiniteLossError, match=r"at iteration 2; training stopped"):
        runner.train()


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(max_consecutive=0), "max_consecutive must be an integer >= 1"),
     (dict(max_consecutive=2.5), "max_consecutive must be an integer >= 1"),
     (dict(min_loss_scale=-1.0), "min_loss_scale must be >= 0")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NonFiniteLossHook(**kwargs)

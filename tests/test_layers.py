"""GroupRational, KAN (GR-KAN) and the rational init table / fitter."""

import math
import time

import pytest
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block

from kat_backbones.layers import KAN, GroupRational, get_rational_init, kan_init_, rational_second_moment
from kat_backbones.layers.rational_fit import ACTIVATIONS, fit_rational, max_abs_error
from kat_backbones.ops import rational_1d

INIT_MODES = ["identity", "swish", "silu", "gelu", "relu", "tanh", "sigmoid"]

# Max |F - f| on [-3, 3] allowed per init. The issue asks <= 1e-2 for every mode and <= 1e-5 for swish; the tighter
# bounds pin the packaged fits. relu: a (5, 4) rational of this form cannot follow the kink closer than ~1.28e-2
# (see kat_backbones/layers/rational_init.py), the one mode above 1e-2.
MAX_ERROR = {
    "identity": 1e-12, "swish": 1e-5, "silu": 1e-5, "gelu": 1.5e-3, "relu": 1.3e-2, "tanh": 1e-5, "sigmoid": 1e-5,
}


def _target(name):
    return ACTIVATIONS["swish" if name == "silu" else name]


@pytest.mark.parametrize("init", INIT_MODES)
def test_init_accuracy_through_module(init):
    """The module (compiled op, float64) reproduces the target activation on [-3, 3]."""
    act = GroupRational(num_groups=8, init=init)
    x = torch.linspace(-3, 3, 8 * 3001, dtype=torch.float64).reshape(-1, 8)
    with torch.no_grad():
        y = act(x)
    err = (y - _target(init)(x)).abs().max().item()
    assert err <= MAX_ERROR[init], f"{init}: max error {err:.3e}"
    assert err <= 1e-2 or init == "relu"


@pytest.mark.parametrize("init", ["swish", "gelu", "relu", "tanh", "sigmoid"])
def test_init_table_errors_dense_grid(init):
    num, den = get_rational_init(init)
    assert max_abs_error(init, num, den) <= MAX_ERROR[init]


def test_gelu_init_is_really_gelu():
    """The reference implementation's 'gelu' entry gives F(3) = 1.53 under this formula; ours must give ~3."""
    num, den = get_rational_init("gelu")
    x = torch.tensor([3.0, -3.0, 1.0], dtype=torch.float64)
    y = rational_1d(x, torch.tensor(num, dtype=torch.float64), torch.tensor(den, dtype=torch.float64))
    torch.testing.assert_close(y, F.gelu(x), atol=2e-3, rtol=0)


def test_parameter_layout():
    act = GroupRational(num_groups=8, init="swish")
    assert act.weight_numerator.shape == (1, 6)
    assert act.weight_denominator.shape == (8, 4)
    assert sum(p.numel() for p in act.parameters()) == 38
    per_group = GroupRational(num_groups=4, init="gelu", shared_numerator=False, order=(5, 4))
    assert per_group.weight_numerator.shape == (4, 6)
    assert torch.equal(per_group.weight_numerator[0], per_group.weight_numerator[3])
    ident = GroupRational(num_groups=2, init="identity", order=(3, 2))
    assert ident.weight_numerator.tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert ident.weight_denominator.shape == (2, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown rational init"):
        GroupRational(init="nope")
    with pytest.raises(ValueError, match="fit_rational.py"):
        GroupRational(init="gelu", order=(6, 6))
    with pytest.raises(ValueError, match="num_groups"):
        KAN(100, 400, num_groups=8)
    with pytest.raises(ValueError, match="kan_init"):
        KAN(64, kan_init="xavier")


def test_dtypes_and_channel_dim():
    act = GroupRational(num_groups=4, init="gelu")
    x64 = torch.randn(3, 5, 16, dtype=torch.float64)
    y64 = act(x64)
    assert y64.dtype == torch.float64
    num, den = act.weight_numerator.double(), act.weight_denominator.double()
    x_g = x64.reshape(3, 5, 4, 4)
    ref = rational_1d(x_g, num[0], den[0])  # all groups share the init coefficients
    torch.testing.assert_close(y64, ref.reshape(3, 5, 16))
    y32 = act(x64.float())
    torch.testing.assert_close(y32, y64.float(), rtol=1e-5, atol=1e-6)
    ybf = act(x64.bfloat16())  # float32 coefficients with a bfloat16 input
    assert ybf.dtype == torch.bfloat16 and act.weight_numerator.dtype == torch.float32
    torch.testing.assert_close(ybf.float(), act(x64.bfloat16().float()), rtol=1e-2, atol=1e-2)
    # channels-first
    act_cf = GroupRational(num_groups=4, init="gelu", channel_dim=1)
    x_cf = x64.permute(0, 2, 1).contiguous()  # (3, 16, 5)
    torch.testing.assert_close(act_cf(x_cf), y64.permute(0, 2, 1))


def test_gradients_flow():
    act = GroupRational(num_groups=4, init="swish")
    x = torch.randn(8, 32, requires_grad=True)
    act(x).square().sum().backward()
    assert x.grad is not None and act.weight_numerator.grad.abs().sum() > 0
    assert act.weight_denominator.grad.abs().sum() > 0


def test_second_moment_matches_monte_carlo_and_silu():
    act = GroupRational(init="swish")
    m2 = act.second_moment()
    x = torch.randn(2_000_000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mc = rational_1d(x, act.weight_numerator[0].double(), act.weight_denominator[0].double()).square().mean().item()
    assert abs(m2 - mc) / mc < 5e-3
    # against the true SiLU by a fine quadrature (the rational is within 1.2e-6 of SiLU on [-3, 3])
    xs = torch.linspace(-12, 12, 240001, dtype=torch.float64)
    true = torch.trapezoid(F.silu(xs).square() * torch.exp(-xs * xs / 2) / math.sqrt(2 * math.pi), xs).item()
    assert abs(1 / m2 - 1 / true) < 2e-3  # g ~ 2.8108 for SiLU
    assert rational_second_moment(GroupRational(init="identity").weight_numerator,
                                  GroupRational(init="identity").weight_denominator) == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("act_init", ["identity", "swish", "gelu", "relu", "tanh", "sigmoid"])
def test_variance_preserving(act_init):
    """At init a KAN layer fed N(0, 1) tokens returns output variance within 20% of the input's."""
    torch.manual_seed(0)
    layer = KAN(192, 768, act_init=act_init)
    x = torch.randn(4096, 192)
    with torch.no_grad():
        y = layer(x)
    ratio = y.var().item() / x.var().item()
    assert 0.8 <= ratio <= 1.2, f"{act_init}: Var(y)/Var(x) = {ratio:.3f}"
    # the std follows the formula from the actual coefficients
    g = 1.0 / layer.act2.second_moment()
    assert layer.fc1.weight.std().item() == pytest.approx(1 / math.sqrt(192), rel=0.03)
    assert layer.fc2.weight.std().item() == pytest.approx(math.sqrt(g / 768), rel=0.03)
    assert layer.fc1.bias.abs().max() == 0 and layer.fc2.bias.abs().max() == 0


def test_reference_init_and_timm_overwrite():
    torch.manual_seed(0)
    layer = KAN(384, 1536, kan_init="reference")
    for fc in (layer.fc1, layer.fc2):
        assert fc.weight.std().item() == pytest.approx(0.02, rel=0.03)
        assert fc.bias.abs().max() == 0
    vp = KAN(384, 1536)
    with torch.no_grad():  # what timm's ViT init does to every Linear
        for fc in (vp.fc1, vp.fc2):
            fc.weight.normal_(std=0.02)
    assert vp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.05)
    kan_init_(vp)
    assert vp.fc1.weight.std().item() == pytest.approx(1 / math.sqrt(384), rel=0.03)


def test_kan_in_timm_block():
    """KAN has timm's Mlp constructor: timm's Block passes act_layer, norm_layer, bias, drop, device, dtype."""
    block = Block(dim=64, num_heads=4, mlp_layer=KAN, scale_mlp_norm=True, norm_layer=LayerNorm, proj_drop=0.1)
    assert [n for n, _ in block.mlp.named_children()] == ["act1", "drop1", "fc1", "act2", "drop2", "norm", "fc2"]
    assert isinstance(block.mlp.norm, LayerNorm)
    assert block.mlp.drop1.p == 0.1 and block.mlp.drop2.p == 0.1
    x = torch.randn(2, 10, 64, requires_grad=True)
    block(x).sum().backward()
    assert block.mlp.act1.weight_numerator.grad is not None
    layer = KAN(64, 128, bias=(True, False), drop=(0.0, 0.2), device="cpu", dtype=torch.float64)
    assert layer.fc2.bias is None and layer.drop2.p == 0.2 and layer.fc1.weight.dtype == torch.float64


def test_kan_forward_order_and_conv():
    """Forward is act1 -> fc1 -> act2 -> fc2 (dropout off), for tokens and (use_conv) channels-first maps."""
    layer = KAN(16, 32, out_features=8, act_init="gelu", num_groups=4).double()
    x = torch.randn(5, 16, dtype=torch.float64)
    expected = layer.fc2(layer.act2(layer.fc1(layer.act1(x))))
    torch.testing.assert_close(layer(x), expected)
    conv = KAN(16, 32, use_conv=True, act_init="gelu", num_groups=4).double()
    with torch.no_grad():
        conv.fc1.weight.copy_(layer.fc1.weight[:, :, None, None])
        conv.fc1.bias.copy_(layer.fc1.bias)
        conv.fc2.weight.normal_()
    img = torch.randn(2, 16, 3, 3, dtype=torch.float64)
    hidden = conv.act2(conv.fc1(conv.act1(img)))
    tokens = layer.act2(layer.fc1(layer.act1(img.permute(0, 2, 3, 1))))
    torch.testing.assert_close(hidden, tokens.permute(0, 3, 1, 2))
    assert conv(img).shape == (2, 16, 3, 3)


def test_reset_parameters_restores_init():
    layer = KAN(32, 64, act_init="tanh", num_groups=4)
    with torch.no_grad():
        layer.act2.weight_numerator.add_(1.0)
        layer.act1.weight_denominator.add_(1.0)
    layer.reset_parameters()
    num, den = get_rational_init("tanh")
    torch.testing.assert_close(layer.act2.weight_numerator[0], torch.tensor(num, dtype=torch.float32))
    assert layer.act1.weight_denominator.abs().max() == 0


def test_fitter_swish_fast_and_accurate():
    start = time.perf_counter()
    fit = fit_rational("swish", order=(5, 4), fit_range=(-3, 3))
    assert time.perf_counter() - start < 60
    assert fit.max_error <= 1e-5
    assert max_abs_error("swish", fit.numerator, fit.denominator) == pytest.approx(fit.max_error, rel=1e-3)


def test_fitter_gaussian_weighting_and_other_order():
    fit = fit_rational("sigmoid", order=(3, 2), weighting="gaussian", max_iter=300)
    assert len(fit.numerator) == 4 and len(fit.denominator) == 2
    assert fit.max_error < 5e-3
    with pytest.raises(ValueError):
        fit_rational("sigmoid", weighting="cauchy")

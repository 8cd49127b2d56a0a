"""What timm's own tests/test_models.py checks on its models, run on every registered KAT model.

Mirrors timm's tests (forward + grad checkpointing, backward, the non-standard default-cfg test that timm applies to
its ViTs, features_only with the getter and with fx, forward_intermediates, fx forward/backward through timm's
leaf lists, TorchScript under ``set_scriptable(True)``, fx + TorchScript), plus plain ``torch.fx.symbolic_trace``,
``torch.compile(fullgraph=True)`` and channels-last input. KAT's pretrained cfgs fix the input at 224 px; like timm
(which shrinks inputs and skips large fixed-size models to keep its CI cheap) these run at 32 px (``img_size=32``,
a 2 x 2 patch grid), with every structural check unchanged. Each model is built once per name (the ``built``
fixture; tests work on copies); the checks that cost seconds per call whatever the size (TorchScript compilation,
fx + TorchScript, torch.compile) run on one model per size or on KAT-T.
"""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import get_notrace_functions, get_notrace_modules
from timm.models._features import FeatureGetterNet
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

import kat_backbones  # noqa: F401  (registers the models)
from kat_backbones.layers import GroupRational

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(timm.list_models("kat_*"))
TINY = [n for n in NAMES if n.startswith("kat_tiny")]
IMG = 32  # 2 x 2 patches of 16 px
INPUT = (3, IMG, IMG)


def _create(name, **kwargs):
    return timm.create_model(name, pretrained=False, img_size=IMG, **kwargs)


@pytest.fixture(scope="module", params=NAMES)
def built(request):
    """(name, model) built once per name; pytest groups the tests by name, so one model is alive at a time."""
    torch.manual_seed(0)
    return request.param, _create(request.param)


def _copy(built, num_classes=None):
    model = copy.deepcopy(built[1])
    if num_classes is not None:
        model.reset_classifier(num_classes)
    return model


def _create_fx_model(model, train=False):
    """timm's tests/test_models.py::_create_fx_model: torchvision's feature extractor with timm's leaf lists."""
    tracer_kwargs = dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True
    )
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    eval_return_nodes = [eval_nodes[-1]]
    train_return_nodes = [train_nodes[-1]]
    if train:
        graph = NodePathTracer(**tracer_kwargs).trace(model)
        graph_nodes = list(reversed(graph.nodes))
        output_node_names = [n.name for n in graph_nodes[0]._input_nodes.keys()]
        graph_node_names = [n.name for n in graph_nodes]
        output_node_indices = [-graph_node_names.index(node_name) for node_name in output_node_names]
        train_return_nodes = [train_nodes[ix] for ix in output_node_indices]
    return create_feature_extractor(
        model, train_return_nodes=train_return_nodes, eval_return_nodes=eval_return_nodes, tracer_kwargs=tracer_kwargs
    )


def test_nine_models_registered():
    assert len(NAMES) == 9 and all(n.endswith("_patch16_224") for n in NAMES)
    assert GroupRational in get_notrace_modules()  # a leaf for timm's fx tools


def test_model_forward(built):
    """timm: test_model_forward (incl. grad checkpointing leaves the output unchanged) + channels-last input."""
    model = _copy(built).eval()
    x = torch.randn(1, *INPUT)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1000) and not torch.isnan(out).any()
        torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), out, rtol=1e-5, atol=1e-5)
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)


def test_model_backward(built):
    """timm: test_model_backward (every parameter gets a gradient; a 42-class head as timm's ``num_classes=42``)."""
    model = _copy(built, num_classes=42).train()
    num_params = sum(p.numel() for p in model.parameters())
    out = model(torch.randn(2, *INPUT))
    out.mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"
    assert sum(p.grad.numel() for p in model.parameters()) == num_params
    assert out.shape == (2, 42) and not torch.isnan(out).any()


def test_model_default_cfgs(built):
    """timm: test_model_default_cfgs_non_std (the variant timm runs on its ViTs: token outputs), plus the
    ``global_pool`` variants (the constructor arguments ``num_classes=0`` / ``global_pool`` in the next test)."""
    name, model = built[0], _copy(built).eval()
    assert model.num_classes == 1000 and model.num_features > 0 and model.head_hidden_size > 0
    state_dict = model.state_dict()
    cfg = model.pretrained_cfg
    x = torch.randn(1, *INPUT)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert feats.shape == (1, 1 + (IMG // 16) ** 2, model.num_features)
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0
        out = model(x)
        assert out.shape == pre.shape
        torch.testing.assert_close(out, pre)
        for pool in ("avg", "max", "avgmax", "token", ""):
            model.reset_classifier(0, pool)
            out = model(x)
            assert out.shape == (feats.shape if pool == "" else (1, model.num_features)), pool
    for c in (cfg["classifier"],) if isinstance(cfg["classifier"], str) else cfg["classifier"]:
        assert c + ".weight" in state_dict
    assert cfg["first_conv"] + ".weight" in state_dict
    assert model.pretrained_cfg["architecture"] == name


@pytest.mark.parametrize("name", ["kat_tiny_patch16_224"])
def test_create_head_and_pool_arguments(name):
    """timm's cfg test builds with ``num_classes=0`` and ``global_pool=''``; also ``'avg'`` (fc_norm on) and
    ``'map'`` (attention pooling)."""
    x = torch.randn(1, *INPUT)
    with torch.no_grad():
        headless = _create(name, num_classes=0).eval()
        assert headless(x).shape == (1, headless.num_features) and headless.num_classes == 0
        unpooled = _create(name, num_classes=0, global_pool="").eval()
        assert unpooled(x).shape == (1, 1 + (IMG // 16) ** 2, unpooled.num_features)
        avg = _create(name, global_pool="avg").eval()  # avg pooling switches fc_norm on, as in timm's ViT
        assert avg(x).shape == (1, 1000) and not isinstance(avg.fc_norm, torch.nn.Identity)
        attn_pool = _create(name, global_pool="map", num_classes=7).eval()
        assert attn_pool(x).shape == (1, 7) and attn_pool.attn_pool is not None


def test_default_cfgs_every_tag():
    """timm runs the cfg test on every tag (``include_tags=True``); the cfgs of each KAT tag resolve and build."""
    tagged = timm.list_models("kat_*", include_tags=True)
    assert len(tagged) == 12  # 6 from-scratch names without weights + 3 names x (.in1k, .vitft_in1k)
    for name in tagged:
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.input_size == (3, 224, 224) and cfg.num_classes == 1000 and cfg.classifier == "head"
        assert cfg.first_conv == "patch_embed.proj" and cfg.crop_pct == 0.875 and cfg.interpolation == "bicubic"
    model = timm.create_model("kat_tiny_patch16_224.vitft_in1k", img_size=IMG)
    assert model.pretrained_cfg["tag"] == "vitft_in1k"


def _check_feature_outputs(model, outputs, batch=1):
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3 and len(outputs) == len(channels)
    fmt = getattr(model, "output_fmt", "NCHW")
    feat_axis, spatial_axis = get_channel_dim(fmt), get_spatial_dim(fmt)
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[0] == batch and o.shape[feat_axis] == c
        assert o.shape[spatial_axis[0]] <= math.ceil(IMG / r) + 1 and o.shape[spatial_axis[1]] <= math.ceil(IMG / r) + 1
        assert not torch.isnan(o).any()


def test_model_forward_features(built):
    """timm: test_model_forward_features and test_model_forward_intermediates_features (``features_only``; KAT's
    default feature class is timm's getter, as for its ViTs)."""
    name = built[0]
    model = _create(name, features_only=True).eval()
    assert isinstance(model, FeatureGetterNet)
    with torch.no_grad():
        _check_feature_outputs(model, model(torch.randn(1, *INPUT)))


def test_model_forward_intermediates(built):
    """timm: test_model_forward_intermediates (all 12 blocks, NCHW; final output equals forward_features)."""
    model = _copy(built).eval()
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    x = torch.randn(1, *INPUT)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x, output_fmt="NCHW")
        assert len(intermediates) == len(info.channels()) == 12
        for c, r, o in zip(info.channels(), info.reduction(), intermediates):
            assert o.shape == (1, c, math.ceil(IMG / r), math.ceil(IMG / r)) and not torch.isnan(o).any()
        assert torch.allclose(final, model.forward_features(x))
        model.set_grad_checkpointing()
        final2, _ = model.forward_intermediates(x, output_fmt="NCHW")
        assert torch.allclose(final, final2, rtol=1e-4, atol=1e-5)


def test_model_forward_fx(built):
    """timm: test_model_forward_fx (exactly the eager output) + ``features_only`` with ``feature_cls='fx'``.

    As for timm's ViTs, the fx feature net returns the blocks' token maps (B, 1 + H*W, C): the model's
    ``forward_intermediates`` tokens with the cls token in front.
    """
    name, model = built[0], _copy(built).eval()
    x = torch.randn(1, *INPUT)
    with torch.inference_mode():
        out = model(x)
        fx_out = torch.cat(tuple(_create_fx_model(model)(x).values()))
        assert torch.equal(fx_out, out)
    if name not in TINY:
        return  # the fx feature net below: built the same way for every size, checked on the KAT-T names
    fx_feats = _create(name, features_only=True, feature_cls="fx", out_indices=(2, 5, 8, 11)).eval()
    assert fx_feats.feature_info.module_name() == [f"blocks.{i}" for i in (2, 5, 8, 11)]
    missing, _ = fx_feats.graph_module.load_state_dict(model.state_dict(), strict=False)  # the traced part only
    assert not missing
    with torch.no_grad():
        tokens = fx_feats(x)
        _, ref = model.forward_intermediates(x, indices=[2, 5, 8, 11], output_fmt="NLC", return_prefix_tokens=True)
    assert len(tokens) == len(ref) == 4
    for t, (spatial, prefix) in zip(tokens, ref):
        assert t.shape == (1, 1 + (IMG // 16) ** 2, model.num_features)
        assert torch.equal(t, torch.cat([prefix, spatial], dim=1))


def test_model_backward_fx(built):
    """timm: test_model_backward_fx."""
    model = _copy(built, num_classes=42).train()
    num_params = sum(p.numel() for p in model.parameters())
    fx_model = _create_fx_model(model, train=True)
    out = torch.cat(tuple(fx_model(torch.randn(2, *INPUT)).values()))
    out.mean().backward()
    for n, p in fx_model.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"
    assert sum(p.grad.numel() for p in fx_model.parameters()) == num_params
    assert out.shape[-1] == 42 and not torch.isnan(out).any()


@pytest.mark.parametrize("name", ["kat_tiny_gelu_patch16_224"])
def test_plain_fx_symbolic_trace(name):
    """torch.fx.symbolic_trace without timm's leaf lists: the op call is an fx leaf (``torch.fx.wrap``)."""
    model = _create(name).eval()
    gm = torch.fx.symbolic_trace(model)
    ops = [n for n in gm.graph.nodes if n.op == "call_function" and n.target.__name__ == "apply_group_rational"]
    assert len(ops) == 24  # act1 + act2 in 12 blocks
    x = torch.randn(2, *INPUT)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    feats = timm.models.create_feature_extractor(model, return_nodes={"blocks.5": "mid", "norm": "out"})
    with torch.no_grad():
        got = feats(x)
    assert got["mid"].shape == got["out"].shape == (2, 5, 192)


@pytest.mark.parametrize("name", [f"kat_{s}_patch16_224" for s in ("tiny", "small", "base")])
def test_model_forward_torchscript(name):
    """timm: test_model_forward_torchscript (``set_scriptable(True)``, ``torch.jit.script``), against eager."""
    with timm.layers.set_scriptable(True):
        model = _create(name).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, *INPUT)
    with torch.no_grad():
        out = scripted(x)
        assert out.shape == (1, 1000) and not torch.isnan(out).any()
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["kat_tiny_swish_patch16_224"])
def test_model_forward_fx_torchscript(name):
    """timm: test_model_forward_fx_torchscript (fx-traced, then scripted)."""
    with timm.layers.set_scriptable(True):
        model = _create(name).eval()
    scripted = torch.jit.script(_create_fx_model(model))
    x = torch.randn(1, *INPUT)
    with torch.inference_mode():
        out = torch.cat(tuple(scripted(x).values()))
        assert out.shape == (1, 1000) and not torch.isnan(out).any()
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)


def test_torchscript_training_gradients():
    """A scripted KAT trains: the registered op's autograd reaches the rational coefficients."""
    with timm.layers.set_scriptable(True):
        model = _create("kat_tiny_patch16_224", num_classes=10).train()
    scripted = torch.jit.script(model)
    scripted(torch.randn(2, *INPUT)).logsumexp(-1).mean().backward()
    act = model.blocks[-1].mlp.act2
    assert act.weight_numerator.grad is not None and act.weight_denominator.grad.abs().sum() > 0


def test_torch_compile_fullgraph():
    """torch.compile(fullgraph=True) on KAT-T: forward and backward match eager (no graph breaks)."""
    torch.manual_seed(0)
    model = _create("kat_tiny_patch16_224", num_classes=10).train()
    x = torch.randn(2, *INPUT)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    ref = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.square().mean().backward()
    grad = model.blocks[0].mlp.act1.weight_denominator.grad.clone()
    model.zero_grad()
    ref.square().mean().backward()
    torch.testing.assert_close(grad, model.blocks[0].mlp.act1.weight_denominator.grad, rtol=1e-4, atol=1e-6)


def test_without_extension_fx_works_and_script_says_why():
    """Without kat_backbones._C (fallback op): eager and fx still work; TorchScript names the missing extension."""
    code = """
import sys, warnings
sys.modules["kat_backbones._C"] = None  # makes `from kat_backbones import _C` fail, as on a broken install
warnings.simplefilter("ignore")
import timm, torch, kat_backbones
assert kat_backbones.ops.available_backends() == []
model = timm.create_model("kat_tiny_patch16_224", img_size=32).eval()
x = torch.randn(1, 3, 32, 32)
with torch.no_grad():
    assert torch.equal(torch.fx.symbolic_trace(model)(x), model(x))
try:
    torch.jit.script(model)
except RuntimeError as err:
    assert "TorchScript needs the compiled op kat_backbones._C" in str(err), err
    print("OK")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout + result.stderr


def test_kan_block_scripts_and_traces_like_timm_block():
    """KANBlock keeps timm's Block.forward signature (no **kwargs, which TorchScript cannot compile) and gives
    TorchScript and torch.fx the plain norm2 -> KAN graph, matching eager (which may fuse norm2 with act1)."""
    from kat_backbones.layers import KAN, KANBlock

    block = KANBlock(dim=16, num_heads=2, mlp_layer=KAN).train()
    x = torch.randn(2, 5, 16)
    ref = block(x, attn_mask=None, is_causal=False)
    torch.testing.assert_close(torch.jit.script(block)(x), ref, rtol=1e-5, atol=1e-6)
    traced = torch.fx.symbolic_trace(block)
    assert "norm2.weight" in {n.target for n in traced.graph.nodes} and "layer_norm_rational" not in traced.code
    torch.testing.assert_close(traced(x), ref, rtol=1e-5, atol=1e-6)

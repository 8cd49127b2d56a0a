"""Recipe fidelity: every headline det/seg config equals its published OpenMMLab config field by field, except the
fields docs/recipes.md lists (with the published value, ours and the reason). Drift either way fails: a new
difference that the table lacks, a listed difference that is gone, or a listed value that no longer holds.

Both configs are resolved with mmengine's ``Config.fromfile`` (``_base_`` and ``mmdet::``/``mmseg::`` bases included)
and compared over the fields the Runner and the tools read. The backbones are different classes, so they are compared
through what they compute (width, depth, attention pattern, position encoding, norms, outputs, weights). The
weight-decay / layer-decay rules, which live in the optimizer constructors' code rather than in the configs, are
checked per parameter against the published constructors' rules on the built models.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from kat_backbones.models import KAT_ARCHS  # noqa: E402
from kat_backbones.models.dense import KATDense  # noqa: E402
from tests.mm_utils import single_thread_fixture  # noqa: E402, F401  (fixture: single_thread)

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "recipes.md"
REFERENCES = {
    "vitdet": str(REPO / "tests" / "recipe_refs" / "vitdet_mask-rcnn_vit-b-mae_lsj-100e.py"),
    "mae-b": "mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py",
    "deit-s": "mmseg::vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py",
}
HEADLINE = {
    **{f"mmdet/{m}_{s}_maskrcnn.py": "vitdet" for m in ("kat", "vit") for s in "tsb"},
    **{f"mmseg/{m}_b_upernet.py": "mae-b" for m in ("kat", "vit")},
    **{f"mmseg/{m}_{s}_upernet.py": "deit-s" for m in ("kat", "vit") for s in "ts"},
}
#: Top-level keys the Runner (``Runner.from_cfg``) and tools/train.py / tools/test.py read, plus the published
#: ``fp16`` key (mmseg's AMP request in the 0.x style); helper variables of config files are not fields of a run.
RUN_KEYS = (
    "model", "train_dataloader", "val_dataloader", "test_dataloader", "train_cfg", "val_cfg", "test_cfg",
    "optim_wrapper", "param_scheduler", "val_evaluator", "test_evaluator", "default_hooks", "custom_hooks",
    "default_scope", "env_cfg", "log_processor", "log_level", "load_from", "resume", "visualizer", "randomness",
    "auto_scale_lr", "model_wrapper_cfg", "launcher", "tta_model", "tta_pipeline", "fp16",
)
ABSENT = "(absent)"


# --------------------------------------------------------------------------------------------------- resolving
@pytest.fixture(scope="module", autouse=True)
def _fast_config_parsing():
    """Cache mmengine's scan of a toolbox's metafiles, repeated for every ``mmdet::``/``mmseg::`` base."""
    import mmengine.config.utils as cfg_utils

    scan = cfg_utils._get_cfg_metainfo

    @functools.cache
    def outcome(package_path: str, cfg_path: str):
        try:
            return scan(package_path, cfg_path), None
        except ValueError as err:  # a `_base_/...` file: not in the metafiles
            return None, err

    def cached(package_path: str, cfg_path: str):
        meta, err = outcome(package_path, cfg_path)
        if err is not None:
            raise err
        return meta

    cfg_utils._get_cfg_metainfo = cached
    import mmengine.config.config as cfg_module

    original = getattr(cfg_module, "_get_cfg_metainfo", None)
    if original is not None:
        cfg_module._get_cfg_metainfo = cached
    yield
    cfg_utils._get_cfg_metainfo = scan
    if original is not None:
        cfg_module._get_cfg_metainfo = original


@functools.cache
def resolved(path: str) -> Config:
    if "::" in path:  # a toolbox's own config: its package ships it under .mim/configs
        package, rel = path.split("::")
        path = str(Path(importlib.import_module(package).__file__).parent / ".mim" / "configs" / rel)
    elif not path.startswith("/"):
        path = str(REPO / "configs" / path)
    # the references import modules that are not installed (ViTDet: projects.ViTDet); the fields are all we need
    return Config.fromfile(path, import_custom_modules=False)


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    return value


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaf values; lists of dicts are indexed (``param_scheduler.1.type``), other lists are tuples.
    ``None`` values are left out (mmengine treats a missing key and ``None`` alike)."""
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(node, (list, tuple)) and any(isinstance(v, dict) for v in node):
        for i, value in enumerate(node):
            out.update(flatten(value, f"{prefix}.{i}"))
    elif node is not None:
        out[prefix] = _norm(node)
    return out


def run_fields(cfg: Config) -> dict[str, Any]:
    fields = {}
    for key in RUN_KEYS:
        if key in cfg:
            fields.update(flatten(cfg.to_dict()[key], key))
    # the backbones are compared through backbone_view(); custom_imports is how each side finds its modules
    # (model.pretrained goes with the backbone); `_scope_` marks fields inherited across a `mmdet::` base boundary
    return {
        k: v for k, v in fields.items()
        if not k.startswith(("model.backbone.", "model.pretrained")) and not k.endswith("._scope_")
    }


def _signature_defaults(cls) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _tuple2(x) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else tuple(x)


def backbone_view(cfg: Config) -> dict[str, Any]:
    """What the backbone computes, in one vocabulary for KATBackbone, ViTDet's ViT and mmseg's ViT/MAE."""
    bb = dict(cfg.model.backbone)
    kind = bb["type"].rsplit(".", 1)[-1]
    if kind == "KATBackbone":
        args = {**_signature_defaults(KATDense), **bb}
        arch = KAT_ARCHS[args["arch"]]
        depth = arch["depth"]
        global_all = args["window_size"] == 0 or set(range(depth)) <= set(args["global_blocks"])
        return dict(
            embed_dims=arch["embed_dim"], depth=depth, num_heads=arch["num_heads"],
            img_size=_tuple2(args["img_size"]), patch_size=args["patch_size"], mlp_ratio=float(args["mlp_ratio"]),
            attn_bias="qkv" if args["qkv_bias"] else "none", drop_path_rate=args["drop_path_rate"],
            attention="global" if global_all else
            f"window {args['window_size']}, global {tuple(sorted(args['global_blocks']))}",
            rel_pos="decomposed h/w (ViTDet)" if args["use_rel_pos"] else None,
            norm_eps=1e-6,  # timm's ViT/KAT LayerNorm(eps=1e-6)
            layer_scale=None, cls_token_in_sequence=False,
            mlp="GR-KAN" if args["mlp_type"] == "kan" else "Linear-GELU-Linear",
            out_indices=_norm(args["out_indices"]), final_norm=bool(args["final_norm"]),
            weights=(args.get("init_cfg") or {}).get("checkpoint"),
        )
    if kind == "ViT":  # mmdet projects/ViTDet (values all explicit in the published config)
        depth = bb["depth"]
        windows = set(bb["window_block_indexes"])
        return dict(
            embed_dims=bb["embed_dim"], depth=depth, num_heads=bb["num_heads"], img_size=_tuple2(bb["img_size"]),
            patch_size=bb["patch_size"], mlp_ratio=float(bb["mlp_ratio"]),
            attn_bias="qkv" if bb["qkv_bias"] else "none", drop_path_rate=bb["drop_path_rate"],
            attention=f"window {bb['window_size']}, global {tuple(i for i in range(depth) if i not in windows)}",
            rel_pos="decomposed h/w (ViTDet)" if bb["use_rel_pos"] else None,
            norm_eps=bb["norm_cfg"].get("eps", 1e-5),  # type='LN': nn.LayerNorm's default
            layer_scale=None, cls_token_in_sequence=False, mlp="Linear-GELU-Linear",
            out_indices=(depth - 1,), final_norm=False, weights=bb["init_cfg"]["checkpoint"],
        )
    from mmseg.models.backbones import MAE, VisionTransformer

    cls = {"MAE": MAE, "VisionTransformer": VisionTransformer}[kind]
    args = {**_signature_defaults(cls), **bb}
    if kind == "MAE":  # BEiT layers built with bias=True; layer scale gamma_1/2; a relative-position bias table each
        attn_bias, layer_scale, rel_pos, cls_in_seq = "qkv", args["init_values"], "bias table (BEiT)", True
    else:
        attn_bias, layer_scale, rel_pos = ("qkv" if args["qkv_bias"] else "none"), None, None
        cls_in_seq = bool(args["with_cls_token"])
    return dict(
        embed_dims=args["embed_dims"], depth=args["num_layers"], num_heads=args["num_heads"],
        img_size=_tuple2(args["img_size"]), patch_size=args["patch_size"], mlp_ratio=float(args["mlp_ratio"]),
        attn_bias=attn_bias, drop_path_rate=args["drop_path_rate"], attention="global", rel_pos=rel_pos,
        norm_eps=args["norm_cfg"].get("eps", 1e-5), layer_scale=layer_scale, cls_token_in_sequence=cls_in_seq,
        mlp="Linear-GELU-Linear", out_indices=_norm(args["out_indices"]), final_norm=bool(args["final_norm"]),
        weights=cfg.model.get("pretrained"),
    )


def recipe_diff(config: str) -> dict[str, tuple[Any, Any]]:
    """``{field: (published, ours)}`` for every field that differs (``ABSENT`` where a side lacks it)."""
    ours, ref = resolved(config), resolved(REFERENCES[HEADLINE[config]])
    a, b = run_fields(ref), run_fields(ours)
    diff = {
        k: (a.get(k, ABSENT), b.get(k, ABSENT)) for k in sorted(a.keys() | b.keys())
        if a.get(k, ABSENT) != b.get(k, ABSENT)
    }
    va, vb = backbone_view(ref), backbone_view(ours)
    diff.update({f"model.backbone[{k}]": (va[k], vb[k]) for k in va if va[k] != vb[k]})
    return diff


# --------------------------------------------------------------------------------------------------- the table
_MARK = re.compile(r"<!--\s*recipe-table:(.*?)-->")
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*`([^`]*)`\s*\|\s*`([^`]*)`\s*\|(.+)\|\s*$")


ANY = "*"  # the row's value is set elsewhere (the backbone weights: init_cfg, docs/detection.md, docs/segmentation.md)


def _literal(text: str) -> Any:
    return text if text in (ABSENT, ANY) else _norm(ast.literal_eval(text))


def _same(documented_value: Any, actual: Any) -> bool:
    return documented_value == ANY or documented_value == actual


@functools.cache
def documented() -> dict[str, dict[str, tuple[Any, Any, str]]]:
    """``{config: {field: (published, ours, reason)}}`` from the tables of docs/recipes.md: each table follows a
    ``<!-- recipe-table: CONFIG ... -->`` marker naming the configs its rows apply to."""
    table: dict[str, dict[str, tuple[Any, Any, str]]] = {}
    configs: list[str] = []
    for line in DOC.read_text().splitlines():
        mark = _MARK.search(line)
        if mark:
            configs = mark.group(1).split()
            continue
        row = _ROW.match(line)
        if row and configs:
            field, published, ours, reason = row.groups()
            for config in configs:
                if field in table.setdefault(config, {}):
                    raise AssertionError(f"docs/recipes.md lists {field} twice for {config}")
                table[config][field] = (_literal(published), _literal(ours), reason.strip())
        elif line.startswith("#"):
            configs = []  # a table's scope ends at the next heading
    return table


def test_table_covers_the_headline_configs():
    assert set(documented()) == set(HEADLINE)
    for config, rows in documented().items():
        for field, (_, _, reason) in rows.items():
            assert len(reason) > 15, f"{config} {field}: give the reason"


@pytest.mark.parametrize("config", sorted(HEADLINE))
def test_config_equals_published_recipe_except_documented_fields(config):
    diff = recipe_diff(config)
    rows = documented()[config]
    undocumented = {k: v for k, v in diff.items() if k not in rows}
    stale = sorted(set(rows) - set(diff))
    wrong = {
        k: (rows[k][:2], diff[k]) for k in rows.keys() & diff.keys()
        if not (_same(rows[k][0], diff[k][0]) and _same(rows[k][1], diff[k][1]))
    }
    assert not undocumented, f"{config}: differences from {REFERENCES[HEADLINE[config]]} missing in docs/recipes.md: " \
        f"{undocumented}"
    assert not stale, f"{config}: docs/recipes.md lists fields that no longer differ: {stale}"
    assert not wrong, f"{config}: docs/recipes.md values (published, ours) vs actual: {wrong}"


# --------------------------------------------------------------------------------------------------- wd / layer decay
def _param_groups(cfg: Config, model: torch.nn.Module) -> dict[str, tuple[float, float]]:
    from mmengine.optim import build_optim_wrapper

    optim_cfg = cfg.optim_wrapper.to_dict() if hasattr(cfg.optim_wrapper, "to_dict") else dict(cfg.optim_wrapper)
    optim_cfg["type"] = "OptimWrapper"
    optim_cfg.pop("loss_scale", None)
    wrapper = build_optim_wrapper(model, optim_cfg)
    base_lr = optim_cfg["optimizer"]["lr"]
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in wrapper.optimizer.param_groups:
        for p in group["params"]:
            out[names[id(p)]] = (group["lr"] / base_lr, group["weight_decay"])
    return out


def _vitdet_rule(name: str, shape, num_layers: int, rate: float, wd: float) -> tuple[float, float]:
    """mmdet projects/ViTDet LayerDecayOptimizerConstructor (``get_layer_id_for_vit`` + its no-decay test)."""
    no_decay = (name.startswith("backbone.blocks") and "norm" in name) or "pos_embed" in name
    if name.startswith("backbone") and ("patch_embed" in name or "pos_embed" in name):
        layer = 0
    elif name.startswith("backbone") and ".blocks." in name:
        layer = int(name.split(".")[2]) + 1
    else:
        layer = num_layers + 1
    return rate ** (num_layers + 1 - layer), 0.0 if no_decay else wd


def _mmseg_mae_rule(name: str, shape, num_layers: int, rate: float, wd: float) -> tuple[float, float]:
    """mmseg LearningRateDecayOptimizerConstructor for BEiT/MAE, with mmseg's ``backbone.layers`` as ``blocks``."""
    no_decay = len(shape) == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed") or name.startswith(
        "backbone.patch_embed"
    ):
        layer = 0
    elif name.startswith("backbone.blocks"):
        layer = int(name.split(".")[2]) + 1
    else:
        layer = num_layers + 2 - 1
    return rate ** (num_layers + 2 - layer - 1), 0.0 if no_decay else wd


@pytest.mark.parametrize(
    "config, scope, rule",
    [("mmdet/kat_t_maskrcnn.py", "mmdet", _vitdet_rule), ("mmseg/kat_b_upernet.py", "mmseg", _mmseg_mae_rule)],
)
def test_layer_decay_and_weight_decay_follow_the_published_constructor(config, scope, rule):
    """Every parameter's lr scale and weight decay equal the published constructor's (KAT-T model for both: the rules
    are name and shape based; the seg case uses kat_b_upernet.py's optimizer on it)."""
    cfg = resolved(config)
    model_cfg = cfg.model.copy()
    model_cfg.backbone.init_cfg = None
    if scope == "mmseg":  # KAT-B's segmentor at T width with slim heads: the same parameter names, a smaller build
        model_cfg.backbone.arch = "tiny"
        model_cfg.neck.embed_dim = model_cfg.auxiliary_head.in_channels = 192
        model_cfg.decode_head.in_channels = [192] * 4
        model_cfg.decode_head.channels = model_cfg.auxiliary_head.channels = 32
    init_default_scope(scope)
    if scope == "mmdet":
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model = MODELS.build(model_cfg)
    paramwise = cfg.optim_wrapper.paramwise_cfg
    rate = paramwise.get("decay_rate", paramwise.get("layer_decay_rate"))
    wd = cfg.optim_wrapper.optimizer.weight_decay
    got = _param_groups(cfg, model)
    expected = {n: rule(n, p.shape, paramwise.num_layers, rate, wd) for n, p in model.named_parameters()}
    mismatched = {n: (got[n], expected[n]) for n in expected if got[n] != pytest.approx(expected[n])}
    assert not mismatched, mismatched
    # the rules this reproduces (and that differ from the project's former defaults)
    kinds = {n: got[n][1] for n in got}
    if scope == "mmdet":
        assert kinds["backbone.blocks.0.norm1.weight"] == 0 and kinds["backbone.pos_embed"] == 0
        assert kinds["backbone.blocks.0.attn.rel_pos_h"] == wd and kinds["backbone.blocks.0.mlp.fc1.bias"] == wd
        assert kinds["backbone.blocks.0.mlp.act2.weight_denominator"] == wd
        assert kinds["neck.fpn1.1.weight"] == wd  # neck LN2d
    else:
        assert kinds["backbone.pos_embed"] == wd and kinds["backbone.blocks.0.mlp.act2.weight_numerator"] == wd
        assert kinds["backbone.blocks.0.attn.rel_pos_h"] == wd  # 2-D, like MAE's relative_position_bias_table
        assert kinds["backbone.blocks.0.norm1.weight"] == 0 and kinds["decode_head.conv_seg.bias"] == 0


def test_published_vit_norm_key_matches_no_parameter():
    """mmseg's ViT/DeiT configs exempt ``custom_keys={'norm': ...}`` from weight decay, but mmseg's VisionTransformer
    names its LayerNorms ``ln1``/``ln2``: the key matches nothing there (docs/recipes.md). With KAT's names
    (``norm1``/``norm2``) the same key exempts the block LayerNorms."""
    from mmseg.models.backbones import VisionTransformer

    vit = VisionTransformer(img_size=(32, 32), embed_dims=48, num_layers=2, num_heads=3, out_indices=(1,))
    assert not [n for n, _ in vit.named_parameters() if "norm" in n]
    kat = KATDense("tiny", img_size=32, window_size=0, global_blocks=(), out_indices=(11,), use_rel_pos=False)
    assert {n for n, _ in kat.named_parameters() if "norm" in n} >= {"blocks.0.norm1.weight", "blocks.0.norm2.bias"}


def test_constructor_rejects_unknown_norm_decay_scope():
    from kat_backbones.mm import LayerDecayOptimizerConstructor

    constructor = LayerDecayOptimizerConstructor(
        dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.1)),
        dict(num_layers=12, norm_decay_scope="neck"))
    backbone = KATDense("tiny", img_size=32, window_size=0, global_blocks=(), out_indices=(11,), use_rel_pos=False)
    with pytest.raises(ValueError, match="norm_decay_scope must be 'all' or 'backbone', got 'neck'"):
        constructor(backbone)

#!/usr/bin/env bash
# One-command, idempotent set-up of the kat_backbones environment (called by `make setup`).
#
# Creates .venv/ in the repo root and installs, with the versions pinned in constraints.txt:
#   torch + torchvision, timm, mmengine, mmcv (built from source WITH ops, wheel cached outside the repo),
#   mmdet, mmsegmentation (+ ftfy, regex), mmpretrain (+ model-index), pycocotools, ninja, onnx + onnxscript +
#   onnxruntime (export), pytest, ruff, then this package (editable, compiling kat_backbones._C).
#
# Environment knobs:
#   KAT_USE_CURRENT_ENV=1  install into the current Python environment instead of .venv/ and skip the torch and
#                          torchvision steps (for users who already have a CUDA torch environment).
#   KAT_PYTHON             interpreter used to create .venv (default: python3).
#   KAT_CACHE_DIR          cache root (default: ~/.cache/kat_backbones); the mmcv wheel lands in $KAT_CACHE_DIR/wheels.
#   MAX_JOBS               parallel compile jobs for mmcv and our extension (default: number of cores).
#   FORCE_CUDA, TORCH_CUDA_ARCH_LIST, KAT_DEBUG   passed through to setup.py (see README).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CONSTRAINTS="$ROOT/constraints.txt"
CACHE_DIR=${KAT_CACHE_DIR:-$HOME/.cache/kat_backbones}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export PIP_DISABLE_PIP_VERSION_CHECK=1
T0=$(date +%s)
STEP=0
NSTEPS=7

step() { # step "title" command...
  local title=$1; shift
  STEP=$((STEP + 1))
  local t=$(date +%s)
  echo "[setup] ($STEP/$NSTEPS) $title ..."
  "$@"
  echo "[setup] ($STEP/$NSTEPS) $title: done in $(($(date +%s) - t)) s (total $(($(date +%s) - T0)) s)"
}

pin() { grep -E "^$1(==|===|>=)" "$CONSTRAINTS" | head -n1 | sed -E 's/^[^=<>]+(===|==)//'; }

if [[ "${KAT_USE_CURRENT_ENV:-0}" == "1" ]]; then
  PY=$(command -v python)
  echo "[setup] KAT_USE_CURRENT_ENV=1: installing into $($PY -c 'import sys; print(sys.prefix)') (torch steps skipped)"
else
  PY="$ROOT/.venv/bin/python"
fi
pipi() { "$PY" -m pip install -q -c "$CONSTRAINTS" "$@"; }

make_venv() {
  if [[ "${KAT_USE_CURRENT_ENV:-0}" == "1" ]]; then return 0; fi
  if [[ ! -x "$PY" ]]; then
    "${KAT_PYTHON:-python3}" -m venv "$ROOT/.venv"
  fi
  pipi --upgrade pip wheel "setuptools>=77.0.3,<81"
}

install_torch() {
  if [[ "${KAT_USE_CURRENT_ENV:-0}" == "1" ]]; then
    "$PY" -c 'import torch, torchvision; print("[setup] using torch", torch.__version__, "torchvision", torchvision.__version__)'
    return 0
  fi
  # Fast path: already the pinned versions.
  if "$PY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('$(pin torch)') and torchvision.__version__.startswith('$(pin torchvision)')))" 2>/dev/null; then
    echo "[setup] torch $(pin torch) / torchvision $(pin torchvision) already installed"
    return 0
  fi
  pipi "torch===$(pin torch)" "torchvision==$(pin torchvision)"
}

# Environment for compiling against the pip-installed (CUDA) torch on a machine with nvcc but no GPU.
cuda_env() {
  if [[ -z "${CUDA_HOME:-}" ]]; then
    for d in /usr/local/cuda-13.0 /usr/local/cuda; do
      if [[ -x "$d/bin/nvcc" ]]; then export CUDA_HOME=$d; break; fi
    done
  fi
  local inc
  inc=$("$PY" - <<'EOF'
import glob, os, site
paths = []
for sp in site.getsitepackages():
    paths += glob.glob(os.path.join(sp, "nvidia", "cu*", "include"))
print(":".join(sorted(paths)))
EOF
)
  if [[ -n "$inc" ]]; then export CPATH="$inc${CPATH:+:$CPATH}"; fi
}

install_mmcv() {
  local ver pyver tver key wheel_dir
  ver=$(pin mmcv)
  if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$ver')" 2>/dev/null; then
    echo "[setup] mmcv $ver with ops already installed"
    return 0
  fi
  pyver=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  tver=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
  key="mmcv-$ver-torch$tver-$pyver-$(uname -m)"
  wheel_dir="$CACHE_DIR/wheels/$key"
  if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    echo "[setup] building mmcv $ver from source with ops (MAX_JOBS=$MAX_JOBS; ~13 min on 2 cores) into $wheel_dir"
    pipi "setuptools>=77.0.3,<81" wheel ninja packaging
    local tmp="$wheel_dir.tmp.$$"
    rm -rf "$tmp"; mkdir -p "$tmp"
    # FORCE_CUDA=0: the mmcv build decides CUDA by GPU presence; on GPU machines users can set it themselves.
    local log="$CACHE_DIR/mmcv-build-$key.log"
    if ! MMCV_WITH_OPS=1 "$PY" -m pip wheel -c "$CONSTRAINTS" --no-build-isolation --no-deps -w "$tmp" \
        "mmcv==$ver" >"$log" 2>&1; then
      tail -n 40 "$log"; echo "[setup] mmcv build failed; full log: $log"; return 1
    fi
    rm -rf "$wheel_dir"; mv "$tmp" "$wheel_dir"
  else
    echo "[setup] reusing cached wheel $(ls "$wheel_dir"/mmcv-*.whl)"
  fi
  pipi "$wheel_dir"/mmcv-*.whl
}

install_rest() {
  pipi -r "$ROOT/requirements.txt"
}

install_package() {
  local so
  so=$(ls "$ROOT"/kat_backbones/_C*.so 2>/dev/null | head -n1 || true)
  if "$PY" -m pip show kat_backbones >/dev/null 2>&1 && [[ -n "$so" ]]; then
    if [[ -z "$(find "$ROOT/csrc" "$ROOT/setup.py" -newer "$so" 2>/dev/null | head -n1)" ]]; then
      echo "[setup] kat_backbones installed (editable) and kat_backbones._C up to date"
      return 0
    fi
    # Editable install present: rebuild the extension in place; ninja reuses build/ so only changed sources compile.
    (cd "$ROOT" && "$PY" setup.py -q build_ext --inplace)
    return 0
  fi
  # --no-build-isolation: the extension must compile against the torch installed above (an isolated build would
  # download another torch), and setup.py imports torch.utils.cpp_extension.
  "$PY" -m pip install -q --no-build-isolation --no-deps -e "$ROOT"
}

check() {
  "$PY" -c "import kat_backbones, mmdet, mmseg, mmpretrain, mmcv.ops, timm, torchvision, torch; \
print('[setup] torch', torch.__version__, '| torchvision', torchvision.__version__, '| timm', timm.__version__, \
'| mmcv', mmcv.__version__, '| mmdet', mmdet.__version__, '| mmseg', mmseg.__version__, \
'| mmpretrain', mmpretrain.__version__); \
print('[setup] kat_backbones backends:', kat_backbones.ops.available_backends())"
}

mkdir -p "$CACHE_DIR/wheels"
if [[ "${1:-}" == "--package-only" ]]; then  # `make build`: just (re)build kat_backbones._C
  NSTEPS=1
  cuda_env
  step "kat_backbones (compiles kat_backbones._C)" install_package
  exit 0
fi
step "python environment" make_venv
step "torch + torchvision" install_torch
cuda_env
step "mmcv (compiled ops, cached wheel)" install_mmcv
step "timm, mmengine, mmdet, mmseg and tools" install_rest
step "kat_backbones (compiles kat_backbones._C)" install_package
step "import check" check
STEP=$((STEP + 1))
echo "[setup] ($NSTEPS/$NSTEPS) finished in $(($(date +%s) - T0)) s"

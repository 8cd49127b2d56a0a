#!/usr/bin/env bash
# What a machine with a GPU runs: build the CUDA kernels for its GPU, run the CUDA and Triton test cases (and the
# CPU ones), benchmark the fused GR-KAN layer, a KAT-T vs ViT-Ti train step and the op, and check the kernels under
# compute-sanitizer. Steps run in this order (most wanted first); STEPS="build test_kan ..." runs a subset.
#
#   OUT=work_dirs/gpu_check bash tools/gpu_check.sh        # logs land in $OUT ($OUT/summary.txt: ratios only)
#   STEPS="build test_kan bench_kan bench_kat" OUT=... bash tools/gpu_check.sh      # ~6 min on an H100/H200
#
# Uses the current python (PYTHON=...) as is: torch with CUDA, timm, pytest. Nothing is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-work_dirs/gpu_check}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
status=0
STEPS=${STEPS:-build test_kan bench_kan bench_kat bench_op test_ops test_layers_models sanitizer}
step() {  # step NAME TIMEOUT CMD...: runs CMD, logs to $OUT/NAME.log, prints the tail and the time
  local name=$1 limit=$2; shift 2
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc, $((SECONDS - t0)) s"
  tail -n "${TAIL:-25}" "$OUT/$name.log"
  [ $rc -eq 0 ] || status=1
}

nvidia-smi -L
$PY -c "import torch, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__,
torch.cuda.get_device_name())"
# Link libstdc++ dynamically, like torch: a toolchain wrapper that links it statically (seen on one GPU image) makes
# every C++ exception thrown by the op (bad input) crash the process instead of raising. Override with CXX=...
export CC=${CC_KAT:-/usr/bin/gcc} CXX=${CXX_KAT:-/usr/bin/g++} LDSHARED=${LDSHARED_KAT:-/usr/bin/gcc -shared}
export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
step build 400 $PY setup.py build_ext --inplace
$PY -c "import kat_backbones.ops as o, triton; print('backends', o.available_backends(), 'triton', triton.__version__)"
# the fused GR-KAN layer: Triton kernels compiled for this GPU vs the unfused layer (float64/float32/bf16 rules)
step test_kan 300 $PY -m pytest -q -p no:cacheprovider tests/test_kan_fused.py
# layer forward / forward+backward vs LayerNorm + Linear-GELU-Linear at KAT-T and KAT-B widths, and the op's
# per-call overhead vs GELU
step bench_kan 300 $PY tools/benchmark_kan.py --device cuda --amp --tokens 128x197 --dims 192 768
TAIL=40 step bench_kat 300 $PY tools/benchmark_kat.py --device cuda --batch 128 --steps 20 --warmup 5 --amp \
  --kan-impl auto triton unfused
step bench_op 400 $PY tools/benchmark_rational.py --device cuda --dtypes float32 bfloat16 \
  --shapes 128x197x768 64x1024x3072 128x197x3072
step test_ops 400 $PY -m pytest -q -p no:cacheprovider tests/test_ops.py
TAIL=8 step test_layers_models 400 $PY -m pytest -q -p no:cacheprovider tests/test_layers.py tests/test_models.py \
  tests/test_karat.py
# memcheck (out-of-bounds, misaligned vector accesses) and racecheck (the shared-memory reduction) on small inputs
step sanitizer 300 bash -c "for tool in memcheck racecheck; do compute-sanitizer --tool \$tool --error-exitcode 9 \
  $PY tools/cuda_smoke.py || exit 9; done"
grep -h "ratio\|vs MLP\|^| [0-9]\|^| cuda\|^| nn.GELU\|^| Group\|^| group\|passed\|failed" "$OUT"/*.log \
  >"$OUT/summary.txt" 2>/dev/null
exit $status

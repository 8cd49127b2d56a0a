#!/usr/bin/env bash
# torchrun launcher shared by tools/dist_train.sh and tools/dist_test.sh:
#   tools/dist_run.sh SCRIPT NUM_PROCS [SCRIPT args]      (SCRIPT: a file in tools/, e.g. train.py)
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host PORT=29500 on each node. PYTHON picks the interpreter.
# The repository goes first on PYTHONPATH, so every process imports this checkout's kat_backbones.
set -euo pipefail
SCRIPT=$1
NPROCS=$2
DIR="$(cd "$(dirname "$0")" && pwd)"

PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROCS" \
    --master_port="${PORT:-29500}" \
    "$DIR/$SCRIPT" "${@:3}"

#!/usr/bin/env bash
# Multi-process training via torchrun: tools/dist_train.sh CONFIG NUM_PROCS [tools/train.py args]
#   e.g. tools/dist_train.sh configs/mmdet/kat_b_maskrcnn.py 8 --work-dir work_dirs/kat_b
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host PORT=29500 on each node. PYTHON picks the interpreter.
# On CPU, tools/train.py uses a gloo process group (override with --cfg-options env_cfg.dist_cfg.backend=...).
set -euo pipefail
CONFIG=$1
NPROCS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
DIR="$(cd "$(dirname "$0")" && pwd)"

PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROCS" \
    --master_port="$PORT" \
    "$DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"

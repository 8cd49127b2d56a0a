#!/usr/bin/env bash
# Multi-process training via torchrun: tools/dist_train.sh CONFIG NUM_PROCS [tools/train.py args]
#   e.g. tools/dist_train.sh configs/mmdet/kat_b_maskrcnn.py 8 --work-dir work_dirs/kat_b
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host PORT=29500 on each node. PYTHON picks the interpreter.
# On CPU, tools/train.py uses a gloo process group (override with --cfg-options env_cfg.dist_cfg.backend=...).
set -euo pipefail
exec bash "$(dirname "$0")/dist_run.sh" train.py "$2" "$1" --launcher pytorch "${@:3}"

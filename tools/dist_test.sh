#!/usr/bin/env bash
# Multi-process testing via torchrun: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [tools/test.py args]
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host PORT=29500 on each node. PYTHON picks the interpreter.
# On CPU, tools/test.py uses a gloo process group (override with --cfg-options env_cfg.dist_cfg.backend=...).
set -euo pipefail
exec bash "$(dirname "$0")/dist_run.sh" test.py "$3" "$1" "$2" --launcher pytorch "${@:4}"

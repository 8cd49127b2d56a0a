#!/usr/bin/env bash
# Training on Slurm in OpenMMLab's style: one srun task per GPU, tools/train.py --launcher slurm.
#   [GPUS=16] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#       tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py args]
# e.g. GPUS=16 tools/slurm_train.sh gpu kat_b configs/mmdet/kat_b_maskrcnn.py work_dirs/kat_b --amp
#
# Preemption (docs/reliability.md): Slurm sends SIGTERM to every task before it kills them (KillWait later, 30 s by
# default); `sbatch --signal=USR1@120` (no "B:", so the tasks get it) warns 120 s before the time limit. On either
# signal every process finishes its iteration, the run writes a checkpoint and exits with status 75. This script then
# requeues the batch job (`scontrol requeue`, needs `sbatch --requeue`; REQUEUE=0 turns it off), and the requeued job
# continues from the checkpoint: tools/train.py runs with --resume (RESUME=0 starts from scratch instead; --resume on
# an empty work dir also starts from scratch). Any other status is passed through (3: non-finite loss; don't retry).
set -uo pipefail

if [ $# -lt 4 ]; then
    echo "usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py args]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
PREEMPTED=75  # kat_backbones.mm.preemption.PREEMPTED_EXIT_CODE
DIR="$(cd "$(dirname "$0")" && pwd)"
RESUME_ARG=()
if [ "${RESUME:-1}" = 1 ]; then
    RESUME_ARG=(--resume)
fi

# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$DIR/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${RESUME_ARG[@]}" "${@:5}"
STATUS=$?

if [ "$STATUS" -eq "$PREEMPTED" ] && [ -n "${SLURM_JOB_ID:-}" ] && [ "${REQUEUE:-1}" = 1 ]; then
    echo "slurm_train.sh: preempted, checkpoint written in $WORK_DIR; requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$STATUS"

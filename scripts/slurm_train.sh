#!/usr/bin/env bash
# PDFNet training on several machines under SLURM: srun starts one torchrun per node, torchrun one process per GPU,
# and the processes meet at a c10d rendezvous on the job's first node. Submit from the repository root:
#
#   sbatch --nodes 2 --gpus-per-node 4 scripts/slurm_train.sh --config configs/dis5k.yaml --opt data.root=/data/DIS5K
#
# Training runs with --resume auto, so a requeued or resubmitted job continues <train.out_dir>/last.pth, and torchrun
# restarts the group up to MAX_RESTARTS times when a worker dies (the restarted workers resume last.pth themselves).
# Knobs (environment): GPUS_PER_NODE (default: what SLURM gives the node), MASTER_PORT (29500), MAX_RESTARTS (3).
#SBATCH --job-name=pdfnet
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
if [ ! -f train.py ]; then echo "submit from the PDFNet repository root (no train.py in $PWD)" >&2; exit 2; fi
if [ -z "${GPUS_PER_NODE:-}" ]; then
  GPUS_PER_NODE="${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE##*:}}"
fi
: "${GPUS_PER_NODE:?set GPUS_PER_NODE or submit with --gpus-per-node}"
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
echo "job $SLURM_JOB_ID: $SLURM_NNODES node(s) x $GPUS_PER_NODE GPU(s), rendezvous on $head_node:${MASTER_PORT:-29500}"
srun --kill-on-bad-exit=1 torchrun \
  --nnodes "$SLURM_NNODES" --nproc_per_node "$GPUS_PER_NODE" \
  --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$head_node:${MASTER_PORT:-29500}" \
  --max_restarts "${MAX_RESTARTS:-3}" \
  train.py --resume auto --no_progress "$@"

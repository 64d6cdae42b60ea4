#!/usr/bin/env bash
# Runs the same command on every worker of a Cloud TPU VM pod slice (one JAX process
# per worker host, all its TPU chips), joined by jax.distributed.
#
# Usage: launch/tpu_pod.sh TPU_NAME ZONE [--project=P] -- COMMAND [ARGS...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b -- python main.py \
#       --config=configs/charades.py --workdir=/mnt/shared/runs/charades
# The repository must already be at $REPO_DIR (default ~/momentdiff-jax) on every
# worker, with `pip install -e .[tpu]` done (this script with `--setup` runs that);
# the workdir must be a filesystem every worker sees (NFS/Filestore or a gcsfuse
# mount). Each worker reads its index and worker 0's address from the TPU metadata
# server and passes them through MOMENTDIFF_* variables; output comes back per worker.
set -euo pipefail
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 3 ]] || usage
TPU=$1; ZONE=$2; shift 2
EXTRA=()
SETUP=0
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    --project=*) EXTRA+=("$1") ;;
    --setup) SETUP=1 ;;
    *) usage ;;
  esac
  shift
done
[[ $# -ge 2 && "$1" == "--" ]] || usage
shift
REPO_DIR=${REPO_DIR:-'~/momentdiff-jax'}
PORT=${MOMENTDIFF_PORT:-8476}

CMD=$(printf '%q ' "$@")
if [[ $SETUP == 1 ]]; then CMD="pip install -q -e '.[tpu]' && $CMD"; fi
# Runs on each worker. worker-network-endpoints is "host,..." or "name:id:ip,...".
REMOTE=$(cat <<EOF
set -e
md() { curl -sf -H Metadata-Flavor:Google "http://metadata.google.internal/computeMetadata/v1/instance/attributes/\$1"; }
eps=\$(md worker-network-endpoints); first=\${eps%%,*}
export MOMENTDIFF_COORDINATOR=\${first##*:}:$PORT
export MOMENTDIFF_NUM_PROCESSES=\$(tr , '\n' <<< "\$eps" | wc -l)
export MOMENTDIFF_PROCESS_ID=\$(md agent-worker-number)
cd $REPO_DIR
$CMD
EOF
)
exec gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" "${EXTRA[@]}" --worker=all \
    --command="$REMOTE"

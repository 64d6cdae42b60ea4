#!/usr/bin/env bash
# Runs NPROC processes on this machine, each with NDEV CPU devices, joined by
# jax.distributed (gloo collectives): a multi-host run in miniature.
#
# Usage: launch/local.sh NPROC NDEV -- COMMAND [ARGS...]
#   launch/local.sh 2 2 -- python main.py --config=configs/synthetic.py --workdir=/tmp/r
#   launch/local.sh 1 4 -- python evaluate.py --workdir=/tmp/r
#
# Each child gets MOMENTDIFF_COORDINATOR / MOMENTDIFF_NUM_PROCESSES /
# MOMENTDIFF_PROCESS_ID (read by momentdiff_jax.run.mesh.maybe_initialize_distributed)
# and XLA_FLAGS=--xla_force_host_platform_device_count=NDEV. Output lines are
# prefixed with [pK] (process 0 prints the logs). Exits non-zero if any process
# fails; then, and on Ctrl-C / TERM, every remaining child is stopped.
# Env: MOMENTDIFF_PORT (default: a free port), LOCAL_LAUNCH_PREFIX=0 (no prefixes).
set -u

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 3 && "$3" == "--" ]] || usage
NPROC=$1; NDEV=$2; shift 3
[[ "$NPROC" =~ ^[1-9][0-9]*$ && "$NDEV" =~ ^[1-9][0-9]*$ && $# -gt 0 ]] || usage

PORT=${MOMENTDIFF_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

# Stops every child still running: TERM to each one's process group, KILL after a
# grace (jax.distributed catches TERM for its preemption notice, so KILL is needed).
PIDS=()
group_alive() { kill -0 -- "-$1" 2>/dev/null; }
cleanup() {
  local pid any
  for pid in "${PIDS[@]}"; do group_alive "$pid" && kill -TERM -- "-$pid" 2>/dev/null; done
  for _ in $(seq 30); do
    any=0
    for pid in "${PIDS[@]}"; do group_alive "$pid" && any=1; done
    [[ $any -eq 0 ]] && return
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do group_alive "$pid" && kill -KILL -- "-$pid" 2>/dev/null; done
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

# Existing XLA_FLAGS are kept; the device count is appended (the last one wins).
XFLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$NDEV"
for ((i = 0; i < NPROC; i++)); do
  # setsid: each child leads its own process group, so cleanup reaches its children too.
  if [[ "${LOCAL_LAUNCH_PREFIX:-1}" == 1 && $NPROC -gt 1 ]]; then
    setsid env XLA_FLAGS="$XFLAGS" JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo \
      MOMENTDIFF_COORDINATOR="127.0.0.1:$PORT" MOMENTDIFF_NUM_PROCESSES="$NPROC" \
      MOMENTDIFF_PROCESS_ID="$i" PYTHONUNBUFFERED=1 \
      bash -c 'exec "$@" 2>&1 | sed -u "s/^/[p'"$i"'] /"; exit ${PIPESTATUS[0]}' _ "$@" &
  else
    setsid env XLA_FLAGS="$XFLAGS" JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo \
      MOMENTDIFF_COORDINATOR="127.0.0.1:$PORT" MOMENTDIFF_NUM_PROCESSES="$NPROC" \
      MOMENTDIFF_PROCESS_ID="$i" PYTHONUNBUFFERED=1 "$@" &
  fi
  PIDS+=($!)
done

# The first failure stops the rest (a process waiting on a dead peer would hang).
status=0
running=("${PIDS[@]}")
while [[ ${#running[@]} -gt 0 ]]; do
  done_pid=''
  wait -n -p done_pid "${running[@]}"
  rc=$?
  [[ -z "$done_pid" ]] && break
  left=()
  for pid in "${running[@]}"; do [[ $pid != "$done_pid" ]] && left+=("$pid"); done
  running=("${left[@]}")
  if [[ $rc -ne 0 ]]; then
    echo "launch/local.sh: process $done_pid exited with $rc; stopping the others" >&2
    status=$rc
    cleanup
    break
  fi
done
exit $status

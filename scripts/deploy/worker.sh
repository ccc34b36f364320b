#!/usr/bin/env bash
# Joins a worker to a checked vLLM-on-Ray cluster: netcheck's local checks and its pair
# checks against the head (ports both ways incl. Ray's, MTU, NAT, versions, transport)
# gate the start; the environment comes from `netcheck --emit-env`; then
# `ray start --address=HEAD:PORT` from the checked address. Under a launcher (Slurm,
# LeaderWorkerSet, torchrun) pass --cluster to use netcheck's cluster mode instead.
#
#   worker.sh --iface eno1 --head-ip 10.0.0.1 [--ray-port 6379] [--check-only] [--force]
#             [--cluster] [--temp-dir DIR]
#
# Environment instead of flags: IFACE, HEAD_IP, RAY_PORT. Exit codes follow netcheck's.
set -euo pipefail
SCRIPT=worker.sh
# shellcheck source=scripts/deploy/common.sh
. "$(dirname "$0")/common.sh"

IFACE=${IFACE:-}
HEAD_IP=${HEAD_IP:-}
RAY_PORT=${RAY_PORT:-6379}
CHECK_ONLY=0
FORCE=0
CLUSTER=0
TEMP_DIR=""
PAIR_PORT=18516
while [ $# -gt 0 ]; do
  case $1 in
    --iface) IFACE=$2; shift 2 ;;
    --head-ip) HEAD_IP=$2; shift 2 ;;
    --ray-port) RAY_PORT=$2; shift 2 ;;
    --check-only) CHECK_ONLY=1; shift ;;
    --force) FORCE=1; shift ;;
    --cluster) CLUSTER=1; shift ;;
    --temp-dir) TEMP_DIR=$2; shift 2 ;;
    --pair-port) PAIR_PORT=$2; shift 2 ;;
    *) echo "worker.sh: error: unknown flag '$1': see the header of $0" >&2; exit 64 ;;
  esac
done
[ -n "$IFACE" ] || { echo "worker.sh: error: --iface is required (the inter-node interface, e.g. --iface eno1)" >&2; exit 64; }
[ -n "$HEAD_IP" ] || { echo "worker.sh: error: --head-ip is required (the head's address)" >&2; exit 64; }
need_netcheck

if [ "$CLUSTER" = 1 ]; then
  say "step 1: netcheck --iface $IFACE --cluster (rank and world from the launcher)"
  set +e; "$NETCHECK" --iface "$IFACE" --cluster --quick; code=$?; set -e
else
  say "step 1: netcheck --iface $IFACE --peer $HEAD_IP (local and pair checks against the head)"
  # The head answers one peer at a time: retry briefly while another worker is checked.
  for attempt in 1 2 3 4 5; do
    set +e
    out=$("$NETCHECK" --iface "$IFACE" --peer "$HEAD_IP" --pair-port "$PAIR_PORT" --port "$RAY_PORT" --quick -q --timeout 20s 2>&1)
    code=$?
    set -e
    case $out in *"pair checks with"*"refused"*|*"pair checks with"*"closed"*) say "the head is busy (attempt $attempt): retrying"; sleep 2 ;; *) break ;; esac
  done
  echo "$out" >&2
fi
gate "$code" "netcheck"
load_env
[ "$CHECK_ONLY" = 1 ] && { say "--check-only: stopping after the pre-flight"; exit "$code"; }

say "step 2: ray start --address=$HEAD_IP:$RAY_PORT --node-ip-address=$VLLM_HOST_IP"
ray_args=(start --address="$HEAD_IP:$RAY_PORT" --node-ip-address="$VLLM_HOST_IP" --disable-usage-stats)
[ -n "$TEMP_DIR" ] && ray_args+=(--temp-dir="$TEMP_DIR")
"$RAY" "${ray_args[@]}" >&2 || die 2 "ray start --address=$HEAD_IP:$RAY_PORT failed (see above)"
say "joined the ray cluster at $HEAD_IP:$RAY_PORT"

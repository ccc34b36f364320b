#!/usr/bin/env bash
# Starts the head of a vLLM-on-Ray cluster, checked first: netcheck's local checks gate the
# start (2 = failure refuses; 1 = warnings refuse unless --force), the environment comes
# from `netcheck --emit-env`, workers' pair checks are answered while they join, then
# `ray start --head` on the checked address, a bounded wait until `ray status` shows the
# expected nodes, and `vllm serve` with the arguments after `--`.
#
#   head.sh --iface eno1 [--ray-port 6379] [--expect-nodes 2] [--expect-gpus 16] [--wait 300s]
#           [--check-only] [--force] [--no-serve] [--temp-dir DIR] -- --model M --tensor-parallel-size 4 ...
#
# Environment instead of flags: IFACE, RAY_PORT, EXPECT_NODES. Tools: NETCHECK, RAY,
# PYTHON (default: on PATH). Exit codes follow netcheck's (1 warnings, 2 failures, 64 bad
# flags); a timeout waiting for the workers is 2.
set -euo pipefail
SCRIPT=head.sh
# shellcheck source=scripts/deploy/common.sh
. "$(dirname "$0")/common.sh"

IFACE=${IFACE:-}
RAY_PORT=${RAY_PORT:-6379}
EXPECT_NODES=${EXPECT_NODES:-1}
EXPECT_GPUS=${EXPECT_GPUS:-0}
WAIT=300
CHECK_ONLY=0
FORCE=0
NO_SERVE=0
TEMP_DIR=""
PAIR_PORT=18516
while [ $# -gt 0 ]; do
  case $1 in
    --iface) IFACE=$2; shift 2 ;;
    --ray-port) RAY_PORT=$2; shift 2 ;;
    --expect-nodes) EXPECT_NODES=$2; shift 2 ;;
    --expect-gpus) EXPECT_GPUS=$2; shift 2 ;;
    --wait) WAIT=${2%s}; shift 2 ;;
    --check-only) CHECK_ONLY=1; shift ;;
    --force) FORCE=1; shift ;;
    --no-serve) NO_SERVE=1; shift ;;
    --temp-dir) TEMP_DIR=$2; shift 2 ;;
    --pair-port) PAIR_PORT=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "head.sh: error: unknown flag '$1': see the header of $0" >&2; exit 64 ;;
  esac
done
[ -n "$IFACE" ] || { echo "head.sh: error: --iface is required (the inter-node interface, e.g. --iface eno1)" >&2; exit 64; }
case $EXPECT_NODES$EXPECT_GPUS$WAIT in *[!0-9]*) echo "head.sh: error: --expect-nodes, --expect-gpus and --wait take whole numbers" >&2; exit 64 ;; esac
need_netcheck

say "step 1: netcheck --iface $IFACE --port $RAY_PORT (local checks)"
set +e
"$NETCHECK" --iface "$IFACE" --port "$RAY_PORT" -q
code=$?
set -e
gate "$code" "netcheck"
load_env
[ "$CHECK_ONLY" = 1 ] && { say "--check-only: stopping after the pre-flight"; exit "$code"; }

# Answer each worker's pair checks while they join (one `netcheck --listen` per worker).
pair_server() {
  while true; do
    "$NETCHECK" --iface "$IFACE" --listen --pair-port "$PAIR_PORT" --quick -q --timeout "${WAIT}s" >/dev/null 2>&1 || true
  done
}
pair_server &
PAIR_PID=$!
trap 'kill "$PAIR_PID" 2>/dev/null || true' EXIT
say "step 2: answering workers' pair checks on $VLLM_HOST_IP:$PAIR_PORT"

say "step 3: ray start --head --node-ip-address=$VLLM_HOST_IP --port=$RAY_PORT"
ray_args=(start --head --node-ip-address="$VLLM_HOST_IP" --port="$RAY_PORT" --include-dashboard=false --disable-usage-stats)
[ -n "$TEMP_DIR" ] && ray_args+=(--temp-dir="$TEMP_DIR")
"$RAY" "${ray_args[@]}" >&2 || die 2 "ray start --head failed (see above)"

say "step 4: waiting up to ${WAIT}s for $EXPECT_NODES node(s) and $EXPECT_GPUS GPU(s) in ray status"
deadline=$(( $(date +%s) + WAIT ))
while true; do
  counts=$("$PYTHON" - "$VLLM_HOST_IP:$RAY_PORT" <<'PY' 2>/dev/null || echo "0 0"
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
nodes = sum(1 for n in ray.nodes() if n["Alive"])
print(nodes, int(ray.cluster_resources().get("GPU", 0)))
PY
)
  counts=${counts##*$'\n'}
  nodes=${counts%% *}
  gpus=${counts##* }
  [ "${nodes:-0}" -ge "$EXPECT_NODES" ] && [ "${gpus:-0}" -ge "$EXPECT_GPUS" ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    die 2 "${nodes:-0} of $EXPECT_NODES node(s) and ${gpus:-0} of $EXPECT_GPUS GPU(s) joined within ${WAIT}s: check worker.sh's output on the missing nodes (its netcheck says why)"
  fi
  sleep 2
done
say "ray cluster ready: $nodes node(s), $gpus GPU(s)"
"$RAY" status --address="$VLLM_HOST_IP:$RAY_PORT" >&2 || true

if [ "$NO_SERVE" = 1 ]; then
  command -v vllm >/dev/null 2>&1 || say "vllm not installed: not serving"
  say "--no-serve: the cluster is up; not starting vllm serve"
  exit 0
fi
command -v vllm >/dev/null 2>&1 || die 2 "vllm not installed on the head: pip install vllm, or pass --no-serve"
say "step 5: vllm serve $*"
exec vllm serve "$@"

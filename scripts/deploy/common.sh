# shellcheck shell=bash
# Shared by head.sh and worker.sh: logging, the netcheck gate, the environment.
# Sourced, not run.

say() { echo "[$SCRIPT] $*" >&2; }
die() { local code=$1; shift; say "refusing to start: $*"; exit "$code"; }

NETCHECK=${NETCHECK:-netcheck}
RAY=${RAY:-ray}
PYTHON=${PYTHON:-python3}

need_netcheck() {
  command -v "$NETCHECK" >/dev/null 2>&1 ||
    die 2 "netcheck not found ($NETCHECK): build it with 'cargo build --release -p netcheck' and put it on PATH, or set NETCHECK=/path/to/netcheck"
}

# gate CODE: netcheck's exit code decides. 2 (a failure) always refuses; 1 (warnings)
# refuses unless --force.
gate() {
  local code=$1 what=$2
  case $code in
    0) say "$what: passed" ;;
    1) if [ "$FORCE" = 1 ]; then say "$what: warnings, starting anyway (--force)"; else
         die 1 "$what found warnings (see above); fix them, or pass --force to start despite warnings"; fi ;;
    *) die "$code" "$what failed (see the FAIL lines above): fix them first; --force never overrides a failure" ;;
  esac
}

# Evals netcheck --emit-env: NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME, VLLM_HOST_IP (and
# NCCL_IB_GID_INDEX on RoCE), derived from the checks.
load_env() {
  local exports
  if ! exports=$("$NETCHECK" --iface "$IFACE" --emit-env); then
    die 2 "netcheck --emit-env emitted nothing: a check failed (see above)"
  fi
  eval "$exports"
  say "environment from netcheck: $(echo "$exports" | sed 's/^export //' | tr '\n' ' ')"
}

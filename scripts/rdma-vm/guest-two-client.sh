#!/bin/bash
# Two-kernel topology, client guest (10.11.0.2): linkbench RDMA tests against the other
# kernel's rxe device over the virtual cable, GID chosen by --iface's address, then
# ib_write_bw/ib_write_lat against the same server. Prints TWO-VM-TEST: PASS or FAIL.
exec 2>&1
set -u
share=/var/tmp/rdma-share
LB=/root/linkbench
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
ulimit -l unlimited
modprobe rdma_rxe
dev=$(ls /sys/class/net | grep -v '^lo$' | head -1)
ip link set lo up
ip addr add 10.11.0.2/24 dev "$dev" && ip link set "$dev" up
rdma link add rxe0 type rxe netdev "$dev"
for _ in $(seq 50); do ibv_devinfo -d rxe0 2>/dev/null | grep -q PORT_ACTIVE && break; sleep 0.2; done
for _ in $(seq 300); do [ -f $share/server-ready ] && break; sleep 1; done
for _ in $(seq 30); do ping -c1 -W1 10.11.0.1 >/dev/null 2>&1 && break; sleep 1; done
common=(--transport rdma --peer 10.11.0.1 --port 18600 --iface "$dev" --device rxe0)
for op in write read send; do
  echo "== bw --op $op --validate (two kernels)"
  timeout 300 $LB bw "${common[@]}" --op $op --validate -n 300 || fail "bw $op"
done
echo "== bw --qps 4 --validate (two kernels)"
timeout 300 $LB bw "${common[@]}" --qps 4 --validate -n 200 || fail "bw qps 4"
echo "== lat (two kernels)"
timeout 300 $LB lat "${common[@]}" -n 1000 --inline 0 || fail "lat"
timeout 300 $LB bw "${common[@]}" -n 1000 --json >/tmp/bw.json || fail "bw json"
timeout 300 $LB lat "${common[@]}" -n 1000 --inline 0 --json >/tmp/lat.json || fail "lat json"
echo "== compare (two kernels)"
timeout 300 $LB compare --peer 10.11.0.1 --port 18600 --iface "$dev" --device rxe0 -n 500 -t 2s || fail "compare"
gid=$(python3 -c 'import json; print(json.load(open("/tmp/bw.json"))["gid_index"])' 2>/dev/null)
echo "linkbench chose GID index ${gid:-?} (RoCE v2 by --iface address)"
echo "${gid:-0}" > $share/gid
sleep 3
echo "== ib_write_bw / ib_write_lat against the other kernel"
timeout 300 ib_write_bw -d rxe0 -x "${gid:-0}" -s 65536 -n 1000 --report_gbits 10.11.0.1 | tee /tmp/pt_bw.log || fail "ib_write_bw"
sleep 3
timeout 300 ib_write_lat -d rxe0 -x "${gid:-0}" -s 2 -n 1000 10.11.0.1 | tee /tmp/pt_lat.log || fail "ib_write_lat"
python3 - <<'PY' || fail "ratios"
import json
bw = json.load(open("/tmp/bw.json"))["throughput_gbps"]
lat = json.load(open("/tmp/lat.json"))["latency_us"]["p50"]
pt_bw = [float(l.split()[3]) for l in open("/tmp/pt_bw.log") if l.split()[:1] == ["65536"]][-1]
pt_lat = [float(l.split()[4]) for l in open("/tmp/pt_lat.log") if l.split()[:1] == ["2"]][-1]
print(f"two kernels: WRITE bw linkbench {bw:.4f} / ib_write_bw {pt_bw:.4f} Gb/s = {bw / pt_bw:.3f}; "
      f"lat linkbench {lat:.2f} / ib_write_lat {pt_lat:.2f} us = {lat / pt_lat:.3f}")
PY
echo "== netcheck --peer (two kernels): pair checks, RDMA WRITE, active MTU"
touch $share/netcheck-go
for _ in $(seq 120); do [ -f $share/netcheck-ready ] && break; sleep 1; done
# The exit code reflects this VM's own warnings too; the pair checks are what matter here.
timeout 600 /root/netcheck --iface "$dev" --peer 10.11.0.1 --quick --json >/tmp/netcheck.json 2>/tmp/netcheck.err
echo "netcheck exit $?"
python3 - <<'PY' || fail "netcheck pair RDMA"
import json
d = json.load(open("/tmp/netcheck.json"))
checks = {c["id"]: c for c in d["pair"]["checks"]}
for cid in ("pair.bandwidth", "pair.mtu", "pair.transport"):
    c = checks[cid]
    print(f"{cid}: {c['status']}: {c['summary']}")
bw = checks["pair.bandwidth"]
assert bw["status"] != "fail" and "RDMA WRITE" in bw["summary"], bw
ev = checks["pair.mtu"]["evidence"]
assert ev.get("a_rdma_active_mtu") and ev.get("b_rdma_active_mtu"), ev
assert checks["pair.mtu"]["status"] != "fail", checks["pair.mtu"]
PY
touch $share/done
if [ $failures = 0 ]; then echo "TWO-VM-TEST: PASS"; exit 0; fi
echo "TWO-VM-TEST: FAIL ($failures failures)"; exit 1

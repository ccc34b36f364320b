#!/bin/bash
# Two-kernel topology, server guest: rxe0 on the virtual cable's NIC (10.11.0.1), linkbench
# serve, then ib_write_bw and ib_write_lat servers in turn; ends when the client says done.
exec 2>&1
set -u
share=/var/tmp/rdma-share
ulimit -l unlimited
modprobe rdma_rxe
dev=$(ls /sys/class/net | grep -v '^lo$' | head -1)
ip link set lo up
ip addr add 10.11.0.1/24 dev "$dev" && ip link set "$dev" up
rdma link add rxe0 type rxe netdev "$dev"
for _ in $(seq 50); do ibv_devinfo -d rxe0 2>/dev/null | grep -q PORT_ACTIVE && break; sleep 0.2; done
ibv_devinfo -d rxe0 | grep -E 'hca_id|state|active_mtu'
/root/linkbench serve --bind 10.11.0.1 --port 18600 --iface "$dev" --device rxe0 &
touch $share/server-ready
gid=""
for _ in $(seq 600); do [ -f $share/gid ] && gid=$(cat $share/gid) && break; sleep 1; done
if [ -n "$gid" ]; then
  timeout 300 ib_write_bw -d rxe0 -x "$gid" -s 65536 -n 1000 --report_gbits
  timeout 300 ib_write_lat -d rxe0 -x "$gid" -s 2 -n 1000
fi
# netcheck's pair mode: this node answers one --peer, RDMA WRITE included.
for _ in $(seq 600); do [ -f $share/netcheck-go ] && break; sleep 1; done
if [ -f $share/netcheck-go ]; then
  /root/netcheck --iface "$dev" --listen --timeout 600s --quick --json >/tmp/netcheck-listen.json 2>/tmp/netcheck-listen.err &
  sleep 2
  touch $share/netcheck-ready
fi
for _ in $(seq 600); do [ -f $share/done ] && break; sleep 1; done
echo "server guest: done"

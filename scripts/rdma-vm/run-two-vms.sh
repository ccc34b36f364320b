#!/usr/bin/env bash
# run-two-vms.sh SERVER_SCRIPT CLIENT_SCRIPT [FILES...]: boots two guests from the same
# vmroot, joined by a qemu socket network (a virtual cable: two kernels, two rxe devices,
# RoCE v2 over a real Ethernet frame path), runs SERVER_SCRIPT in the first and
# CLIENT_SCRIPT in the second. A host directory is writable in both at /var/tmp/rdma-share
# (the scripts meet there). Prints both outputs; exits 0 only when the client printed
# TWO-VM-TEST: PASS (vng's own exit status is not the script's here).
set -euo pipefail
R=${VMROOT:-/var/tmp/nodelink-vmroot}
server_script=$1
client_script=$2
shift 2
install -m 0755 "$server_script" "$R/root/guest-server.sh"
install -m 0755 "$client_script" "$R/root/guest-client.sh"
for f in "$@"; do cp -r "$f" "$R/root/"; done
share="$R/var/tmp/rdma-share"
rm -rf "$share"
mkdir -p "$share"
mount -t proc proc "$R/proc"; mount --rbind /sys "$R/sys"; mount --rbind /dev "$R/dev"
cleanup() {
  if [ -n "${server_pid:-}" ]; then kill "$server_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  umount -R "$R/dev" "$R/sys" "$R/proc" 2>/dev/null || true
}
trap cleanup EXIT
kver=$(ls "$R/lib/modules" | head -1)
port=$((40000 + RANDOM % 20000))
vm() { # mac, netdev option, script
  chroot "$R" env PATH=/opt/vng/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    vng --disable-kvm --run "/boot/vmlinuz-$kver" --memory 1G --cpus "${VM_CPUS:-2}" --rwdir /var/tmp/rdma-share \
    --qemu-opts="-netdev socket,id=cable,$2 -device virtio-net-pci,netdev=cable,mac=$1" \
    --exec "$3" | cat
}
vm 52:54:00:4e:4c:01 "listen=127.0.0.1:$port" /root/guest-server.sh >"$share.server.log" 2>&1 &
server_pid=$!
sleep 3
set +e
vm 52:54:00:4e:4c:02 "connect=127.0.0.1:$port" /root/guest-client.sh | tee "$share.client.log"
set -e
# The server script ends when the client leaves its done mark (or its own timeout).
for _ in $(seq 120); do kill -0 "$server_pid" 2>/dev/null || break; sleep 1; done
echo "---- server guest output"
cat "$share.server.log"
grep -q "^TWO-VM-TEST: PASS" "$share.client.log"


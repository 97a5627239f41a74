#!/usr/bin/env bash
# A real NFS-served folder for tests, on a machine whose kernel has no NFS client (recipe: shared docs
# test-servers.md). Needs root, iproute2, nfs-ganesha(-vfs), rpcbind, gvfs-backends, gvfs-fuse, dbus, gio
# (scripts/test-prereqs.mjs installs them).
#
#   scripts/nfs-server.sh start <dir>   → prints the mounted NFS path on its last stdout line (exit 0), or fails (exit 1)
#   scripts/nfs-server.sh stop <dir>    → unmounts, stops every process it started (by PID), removes the namespace
#
# Layout under <dir>: export/ (served by ganesha; never touch it directly while served), mnt/ (FUSE mount point),
# run/ (pids, logs, config, session bus). The server (rpcbind + ganesha, standard ports 111/2049/20048) and the
# gvfs NFS backend live in a private network namespace, so their ports never clash with the host's; the FUSE
# mount is made from the host's mount namespace (nsenter --net only), so every process on the host sees it.
# Only one instance at a time per host: rpcbind's socket (/run/rpcbind.sock) is host-wide.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [[ -z "$cmd" || -z "$dir" ]]; then
  echo "usage: $0 start|stop <dir>" >&2
  exit 2
fi
dir=$(realpath -m "$dir")
run="$dir/run"
ns="kvnfs-$(printf '%s' "$dir" | md5sum | cut -c1-8)"
nsx=(nsenter "--net=/run/netns/$ns")
export XDG_RUNTIME_DIR="$run" DBUS_SESSION_BUS_ADDRESS="unix:path=$run/bus" GVFS_REMOTE_VOLUME_MONITOR_IGNORE=1
url="nfs://127.0.0.1$dir/export"

die() {
  echo "nfs-server: $*" >&2
  for f in "$run"/*.log; do [[ -f "$f" ]] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
  exit 1
}

# wait_for <seconds> <command…>: retry until the command succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

start_bg() { # start_bg <name> <command…>: detached, pid in run/<name>.pid, output in run/<name>.log
  local name=$1
  shift
  setsid "$@" >"$run/$name.log" 2>&1 </dev/null &
  echo $! >"$run/$name.pid"
}

alive() { # a zombie (exited, not yet reaped by whoever adopted it) counts as gone
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ "$st" != Z* ]]
}

stop_pid() { # stop_pid <name>: TERM, then KILL after 3 s
  local f="$run/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid=$(cat "$f")
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}

mounted_path() {
  local p
  for p in "$dir"/mnt/nfs:*; do [[ -d "$p" ]] && { echo "$p"; return 0; }; done
  return 1
}

case "$cmd" in
start)
  for tool in ip nsenter rpcbind ganesha.nfsd dbus-daemon gio /usr/libexec/gvfsd /usr/libexec/gvfsd-fuse; do
    command -v "$tool" >/dev/null || die "missing $tool (run: node scripts/test-prereqs.mjs)"
  done
  [[ $(id -u) -eq 0 ]] || die "needs root (network namespace, FUSE mount)"
  [[ -e /dev/fuse ]] || die "no /dev/fuse"
  mkdir -p "$dir/export" "$dir/mnt" "$run/recovery"
  if ip netns list | grep -qw "$ns"; then die "namespace $ns exists: run '$0 stop $dir' first"; fi
  cat >"$run/ganesha.conf" <<EOF
NFS_CORE_PARAM { NFS_Port = 2049; MNT_Port = 20048; Protocols = 3, 4; Enable_NLM = false; Enable_RQUOTA = false; }
NFSV4 { Graceless = true; RecoveryBackend = fs; RecoveryRoot = $run/recovery; }
EXPORT { Export_Id = 1; Path = $dir/export; Pseudo = /export; Access_Type = RW; Squash = No_Root_Squash; Protocols = 3, 4; Transports = TCP; SecType = sys; FSAL { Name = VFS; } }
EOF
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
  start_bg rpcbind "${nsx[@]}" rpcbind -f
  wait_for 10 "${nsx[@]}" bash -c 'exec 3<>/dev/tcp/127.0.0.1/111' || die "rpcbind did not listen on 111"
  start_bg ganesha "${nsx[@]}" ganesha.nfsd -F -f "$run/ganesha.conf" -L "$run/ganesha-server.log" -p "$run/ganesha-self.pid" -N NIV_EVENT
  wait_for 20 "${nsx[@]}" bash -c 'exec 3<>/dev/tcp/127.0.0.1/2049' || die "ganesha did not listen on 2049"
  start_bg dbus "${nsx[@]}" dbus-daemon --session --address="$DBUS_SESSION_BUS_ADDRESS" --nofork --nopidfile
  wait_for 10 test -S "$run/bus" || die "session bus did not start"
  start_bg gvfsd "${nsx[@]}" /usr/libexec/gvfsd --no-fuse
  wait_for 10 gdbus call --session --dest org.gtk.vfs.Daemon --object-path /org/gtk/vfs/Daemon --method org.freedesktop.DBus.Peer.Ping ||
    die "gvfsd did not come up"
  start_bg fuse /usr/libexec/gvfsd-fuse "$dir/mnt" -f
  wait_for 10 mountpoint -q "$dir/mnt" || die "gvfsd-fuse did not mount $dir/mnt"
  timeout 30 "${nsx[@]}" gio mount "$url" >"$run/gio-mount.log" 2>&1 || die "gio mount $url failed"
  wait_for 10 mounted_path || die "the export did not appear under $dir/mnt"
  p=$(mounted_path)
  probe="$p/.kvstash-probe-$$"
  echo ok >"$probe" && [[ $(cat "$probe") == ok ]] && rm -f "$probe" || die "cannot write through the mount at $p"
  echo "$p"
  ;;
stop)
  if [[ -S "$run/bus" ]]; then timeout 10 "${nsx[@]}" gio mount -u "$url" >/dev/null 2>&1 || true; fi
  stop_pid fuse
  if mountpoint -q "$dir/mnt" 2>/dev/null; then fusermount -u -z "$dir/mnt" 2>/dev/null || umount -l "$dir/mnt" 2>/dev/null || true; fi
  stop_pid gvfsd
  # gvfsd's backends (gvfsd-nfs) are its children in its session: end that session's remaining processes by PID.
  if [[ -S "$run/bus" ]]; then
    for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
      if { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qx "DBUS_SESSION_BUS_ADDRESS=unix:path=$run/bus"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
  fi
  stop_pid dbus
  stop_pid ganesha
  stop_pid rpcbind
  if ip netns list 2>/dev/null | grep -qw "$ns"; then ip netns del "$ns" || true; fi
  rm -f "$run/bus"
  ;;
*)
  echo "usage: $0 start|stop <dir>" >&2
  exit 2
  ;;
esac

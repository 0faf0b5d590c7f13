#!/bin/sh
# /init of the kernel-client test guest (busybox sh). Driven by the kernel command line:
#
#   pflex.nbd_port=PORT       the SDC's NBD port on the host (required)
#   pflex.export=NAME         the export (volume) name (required)
#   pflex.host=ADDR           the host as the guest sees it (default 10.0.2.2, qemu user net)
#   pflex.connections=N       nbd-client -C N (default 1)
#   pflex.mode=basic|soak     basic: write a set of files once; soak: keep writing for soak_s
#   pflex.soak_s=SECONDS      how long soak mode writes (default 30)
#   pflex.files=N             basic mode: number of random-size files (default 20)
#   pflex.big_mib=N           basic mode: size of the one big file (default 32)
#   pflex.nbd_timeout=S       nbd-client -t (default: nbd-client's)
#   pflex.deadline_s=S        power off after S seconds whatever happens (so a hung guest never
#                             outlives the test that started it; default 600)
#
# Attaches /dev/nbd0 with the kernel client, makes ext4, mounts, writes files and records their
# sha256, unmounts, disconnects, reconnects, remounts, verifies every checksum, runs e2fsck -fn,
# checks dmesg for IO errors, and prints one machine-readable line per step on the console:
#
#   PFLEX-RESULT <step> ok [key=value ...]
#   PFLEX-RESULT <step> fail reason=<text>
#
# ending with `PFLEX-RESULT done ok` or `PFLEX-RESULT done fail step=<step>`, then powers off.
# Soak mode also prints `PFLEX-INFO soak writing` as its write loop starts (a test may then
# break something), progress every 5 s, and adds its slowest iteration and sync to the write
# step (iter_max_s, iter_max_at, iter_mean_s, sync_max_s): the longest the writes stalled.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /run /mnt
mount -t tmpfs tmpfs /tmp

HOST=10.0.2.2
PORT=
EXPORT=
CONNECTIONS=1
MODE=basic
SOAK_S=30
FILES=20
BIG_MIB=32
NBD_TIMEOUT=
DEADLINE_S=600
for word in $(cat /proc/cmdline); do
  case "$word" in
    pflex.host=*) HOST="${word#*=}" ;;
    pflex.nbd_port=*) PORT="${word#*=}" ;;
    pflex.export=*) EXPORT="${word#*=}" ;;
    pflex.connections=*) CONNECTIONS="${word#*=}" ;;
    pflex.mode=*) MODE="${word#*=}" ;;
    pflex.soak_s=*) SOAK_S="${word#*=}" ;;
    pflex.files=*) FILES="${word#*=}" ;;
    pflex.big_mib=*) BIG_MIB="${word#*=}" ;;
    pflex.nbd_timeout=*) NBD_TIMEOUT="${word#*=}" ;;
    pflex.deadline_s=*) DEADLINE_S="${word#*=}" ;;
  esac
done

DEV=/dev/nbd0
MNT=/mnt
SUMS=/tmp/sha256sums
START=$(cut -d' ' -f1 /proc/uptime)

result() { echo "PFLEX-RESULT $*"; }
info() { echo "PFLEX-INFO $*"; }

finish() {
  sync
  poweroff -f
  sleep 3600
}

# fail STEP REASON...: reports the step, dumps diagnostics, and powers off.
fail() {
  step="$1"
  shift
  result "$step fail reason=$*"
  echo "PFLEX-DIAG ---- dmesg (tail) ----"
  dmesg | tail -n 60 | sed 's/^/PFLEX-DIAG /'
  echo "PFLEX-DIAG ---- end ----"
  result "done fail step=$step"
  finish
}

ok() { # STEP [key=value ...], as one or several words
  set -- $*
  step="$1"
  shift
  result "$step ok${*:+ $*}"
}

rand() { od -An -N4 -tu4 /dev/urandom | tr -d ' \n'; }

elapsed() { awk -v s="$START" '{ printf "%.1f", $1 - s }' /proc/uptime; }

# Centiseconds since boot (the resolution of /proc/uptime): soak mode times its iterations.
uptime_cs() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }
cs_to_s() { awk -v c="$1" 'BEGIN { printf "%.2f", c / 100 }'; }

# The watchdog: poweroff -f does not wait for stuck IO.
(
  sleep "$DEADLINE_S"
  echo "PFLEX-RESULT watchdog fail reason=deadline of ${DEADLINE_S}s passed"
  echo "PFLEX-RESULT done fail step=watchdog"
  poweroff -f
) &

[ -n "$PORT" ] || fail args "pflex.nbd_port= missing"
[ -n "$EXPORT" ] || fail args "pflex.export= missing"
result "boot ok kernel=$(uname -r) mode=$MODE export=$EXPORT port=$PORT connections=$CONNECTIONS"

# ---- modules ----------------------------------------------------------------------------------
KREL=$(uname -r)
for module in $(cat /etc/modules.order); do
  insmod "/lib/modules/$KREL/$module.ko" 2>/tmp/insmod.err || fail modules "insmod $module: $(cat /tmp/insmod.err)"
done
ok modules

# ---- network ----------------------------------------------------------------------------------
i=0
while ! [ -e /sys/class/net/eth0 ]; do
  i=$((i + 1))
  [ $i -gt 50 ] && fail net "no eth0"
  sleep 0.1
done
ip link set lo up
ip link set eth0 up || fail net "ip link set eth0 up"
ip addr add 10.0.2.15/24 dev eth0 || fail net "ip addr add"
ip route add default via 10.0.2.2 || fail net "ip route add"
ok net addr=10.0.2.15

# ---- NBD attach / detach ----------------------------------------------------------------------
dev_size() { cat /sys/block/nbd0/size 2>/dev/null || echo 0; }

connect() { # STEP
  step="$1"
  i=0
  while :; do
    set -- -N "$EXPORT" -b 4096
    [ "$CONNECTIONS" -gt 1 ] && set -- "$@" -C "$CONNECTIONS"
    [ -n "$NBD_TIMEOUT" ] && set -- "$@" -t "$NBD_TIMEOUT"
    if nbd-client "$@" "$HOST" "$PORT" "$DEV" >/tmp/nbd-client.out 2>&1; then
      break
    fi
    i=$((i + 1))
    [ $i -ge 10 ] && fail "$step" "nbd-client: $(tr '\n' ' ' </tmp/nbd-client.out)"
    sleep 1
  done
  i=0
  while [ "$(dev_size)" = 0 ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && fail "$step" "$DEV has no size after nbd-client"
    sleep 0.1
  done
  bytes=$(blockdev --getsize64 "$DEV")
  ok "$step size=$bytes connections=$CONNECTIONS t=$(elapsed)"
}

disconnect() { # STEP
  nbd-client -d "$DEV" >/tmp/nbd-client.out 2>&1 || fail "$1" "nbd-client -d: $(tr '\n' ' ' </tmp/nbd-client.out)"
  i=0
  while [ "$(dev_size)" != 0 ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && fail "$1" "$DEV still has a size after nbd-client -d"
    sleep 0.1
  done
  ok "$1"
}

connect connect

# ---- mkfs, mount --------------------------------------------------------------------------------
mkfs.ext4 -F -q -b 4096 "$DEV" >/tmp/mkfs.out 2>&1 || fail mkfs "$(tr '\n' ' ' </tmp/mkfs.out)"
ok "mkfs t=$(elapsed)"
mount -t ext4 "$DEV" "$MNT" 2>/tmp/mount.out || fail mount "$(tr '\n' ' ' </tmp/mount.out)"
ok mount
mkdir -p "$MNT/data" || fail mount "mkdir"

# ---- write ----------------------------------------------------------------------------------------
: >"$SUMS"
write_file() { # NAME BYTES
  head -c "$2" /dev/urandom >"$MNT/data/$1" || fail write "writing $1 ($2 bytes)"
  (cd "$MNT" && sha256sum "data/$1") >>"$SUMS" || fail write "sha256sum $1"
}

written=0
count=0
timing=
if [ "$MODE" = soak ]; then
  end=$(($(date +%s) + SOAK_S))
  n=0
  last_info=$(date +%s)
  # The slowest iteration (write, checksum, maybe overwrite and sync) is how long IO stalled
  # at most, plus an iteration's normal cost (see the mean); the slowest sync likewise.
  iter_max_cs=0
  iter_max_at=0
  sync_max_cs=0
  loop_start_cs=$(uptime_cs)
  iter_start_cs=$loop_start_cs
  info "soak writing t=$(elapsed)"
  while [ "$(date +%s)" -lt "$end" ]; do
    n=$((n + 1))
    bytes=$(($(rand) % 4194304 + 1))
    write_file "s$n" "$bytes"
    written=$((written + bytes))
    r=$(($(rand) % 8))
    if [ "$r" = 0 ] && [ $n -gt 1 ]; then
      # Overwrite part of an earlier file in place, then re-record its checksum.
      victim="s$(($(rand) % (n - 1) + 1))"
      if [ -f "$MNT/data/$victim" ]; then
        size=$(stat -c %s "$MNT/data/$victim")
        blocks=$((size / 4096))
        if [ "$blocks" -gt 0 ]; then
          dd if=/dev/urandom of="$MNT/data/$victim" bs=4096 seek=$(($(rand) % blocks)) count=1 conv=notrunc 2>/dev/null || fail write "overwrite $victim"
          grep -v " data/$victim\$" "$SUMS" >"$SUMS.new"
          mv "$SUMS.new" "$SUMS"
          (cd "$MNT" && sha256sum "data/$victim") >>"$SUMS" || fail write "sha256sum $victim"
        fi
      fi
    fi
    # Keep the volume from filling: at most 48 files live, the oldest goes first.
    if [ "$(wc -l <"$SUMS")" -gt 48 ]; then
      oldest=$(head -n1 "$SUMS" | awk '{ print $2 }')
      rm -f "$MNT/$oldest"
      sed -i 1d "$SUMS"
    fi
    if [ $((n % 8)) = 0 ]; then
      sync_start_cs=$(uptime_cs)
      sync
      sync_cs=$(($(uptime_cs) - sync_start_cs))
      [ "$sync_cs" -gt "$sync_max_cs" ] && sync_max_cs=$sync_cs
    fi
    iter_end_cs=$(uptime_cs)
    if [ $((iter_end_cs - iter_start_cs)) -gt "$iter_max_cs" ]; then
      iter_max_cs=$((iter_end_cs - iter_start_cs))
      iter_max_at=$(elapsed)
    fi
    iter_start_cs=$iter_end_cs
    now=$(date +%s)
    if [ $((now - last_info)) -ge 5 ]; then
      info "soak files_written=$n bytes_written=$written live=$(wc -l <"$SUMS") iter_max_s=$(cs_to_s $iter_max_cs) t=$(elapsed)"
      last_info=$now
    fi
  done
  count=$n
  iter_mean_cs=$(((iter_start_cs - loop_start_cs) / (n > 0 ? n : 1)))
  timing="iter_max_s=$(cs_to_s $iter_max_cs) iter_max_at=$iter_max_at iter_mean_s=$(cs_to_s $iter_mean_cs) sync_max_s=$(cs_to_s $sync_max_cs)"
else
  i=1
  while [ $i -le "$FILES" ]; do
    bytes=$(($(rand) % 4194304 + 1))
    write_file "f$i" "$bytes"
    written=$((written + bytes))
    i=$((i + 1))
  done
  write_file big $((BIG_MIB * 1048576))
  written=$((written + BIG_MIB * 1048576))
  count=$((FILES + 1))
fi
sync || fail write "sync"
live=$(wc -l <"$SUMS")
ok "write files=$count live=$live bytes=$written $timing t=$(elapsed)"

umount "$MNT" 2>/tmp/umount.out || fail umount "$(tr '\n' ' ' </tmp/umount.out)"
ok umount
disconnect disconnect

# Nothing may come from the guest's caches on the way back.
sync
echo 3 >/proc/sys/vm/drop_caches

connect reconnect
mount -t ext4 "$DEV" "$MNT" 2>/tmp/mount.out || fail remount "$(tr '\n' ' ' </tmp/mount.out)"
ok remount

(cd "$MNT" && sha256sum -c "$SUMS") >/tmp/verify.out 2>&1
bad=$(grep -c -v ': OK$' /tmp/verify.out)
good=$(grep -c ': OK$' /tmp/verify.out)
if [ "$bad" != 0 ] || [ "$good" != "$live" ]; then
  grep -v ': OK$' /tmp/verify.out | head -n 20 | sed 's/^/PFLEX-DIAG /'
  fail verify "files=$good bad=$bad expected=$live"
fi
ok "verify files=$good t=$(elapsed)"

umount "$MNT" 2>/tmp/umount.out || fail umount2 "$(tr '\n' ' ' </tmp/umount.out)"
e2fsck -fn "$DEV" >/tmp/e2fsck.out 2>&1
rc=$?
if [ $rc != 0 ]; then
  sed 's/^/PFLEX-DIAG /' /tmp/e2fsck.out | tail -n 40
  fail e2fsck "exit $rc"
fi
ok e2fsck

disconnect disconnect2

# A clean run logs only "NBD_DISCONNECT", "Disconnected due to user request", "shutting down
# sockets" and "detected capacity change" for nbd0; these are the kernel's error reports.
errors=$(dmesg | grep -i -E 'I/O error|Buffer I/O|blk_update_request|critical .*error|EXT4-fs (error|warning)|JBD2: .*(error|fail)|Aborting journal|nbd[0-9]+: (Receive|Send|Connection timed out|Dead connection|Unexpected|Double reply|Other side returned error|Attempted send|Possible stuck|Suspicious reply|Device being setup|Request .* timed out)')
if [ -n "$errors" ]; then
  echo "$errors" | head -n 30 | sed 's/^/PFLEX-DIAG /'
  fail dmesg "kernel logged IO errors: $(echo "$errors" | head -n1)"
fi
ok dmesg

result "done ok t=$(elapsed)"
finish

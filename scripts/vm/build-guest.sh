#!/usr/bin/env bash
# Builds the kernel-client test guest: Debian's linux-image-amd64 kernel and a busybox initramfs
# holding nbd.ko (+ ext4, virtio-net and their dependencies), nbd-client, mkfs.ext4 and e2fsck
# (with their shared libraries and the dynamic loader) and scripts/vm/guest-init.sh as /init.
#
#   bash scripts/vm/build-guest.sh        # artifacts in $PFLEX_VM_DIR, else <repo>/.cache/vm
#
# Idempotent and non-interactive (CI=true, no stdin, root). Host packages are installed only if
# missing (qemu-system-x86, nbd-client, e2fsprogs, cpio; one `apt-get update` when needed). The
# kernel and busybox-static are NOT installed on the host: their .debs are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` (no initramfs-tools, no update-initramfs).
# The guest is rebuilt only when an input changes (this script, the init script, the package
# versions, the host binaries). Prints the artifact paths, and writes them to guest.env.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${PFLEX_VM_DIR:-$repo/.cache/vm}"
init_script="$here/guest-init.sh"
export DEBIAN_FRONTEND=noninteractive

log() { echo "build-guest: $*" >&2; }
die() { echo "build-guest: error: $*" >&2; exit 1; }

mkdir -p "$out"
# One build at a time (tests may call this concurrently).
exec 9>"$out/.lock"
flock 9

# ---- host packages ---------------------------------------------------------------------------
# package:command-that-proves-it
HOST_PACKAGES=(qemu-system-x86:qemu-system-x86_64 nbd-client:nbd-client e2fsprogs:mke2fs cpio:cpio)
apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get update -q >&2 || die "apt-get update failed"
    apt_updated=1
  fi
}
missing=()
for entry in "${HOST_PACKAGES[@]}"; do
  package="${entry%%:*}"; command="${entry#*:}"
  if ! dpkg -s "$package" >/dev/null 2>&1 || ! PATH="$PATH:/usr/sbin:/sbin" command -v "$command" >/dev/null 2>&1; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing host packages ${missing[*]} (run as root or install them)"
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 </dev/null; then
    apt_update_once
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 </dev/null || die "apt-get install ${missing[*]} failed"
  fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ---- guest package versions (from the local apt lists; no network when nothing changed) ------
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
kernel_meta_version="$(candidate linux-image-amd64)"
if [ -z "$kernel_meta_version" ] || [ "$kernel_meta_version" = "(none)" ]; then
  apt_update_once
  kernel_meta_version="$(candidate linux-image-amd64)"
fi
[ -n "$kernel_meta_version" ] && [ "$kernel_meta_version" != "(none)" ] || die "apt knows no linux-image-amd64"
# linux-image-amd64 depends on exactly one versioned image package, e.g. linux-image-6.1.0-56-amd64.
kernel_package="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
[ -n "$kernel_package" ] || die "cannot tell which image package linux-image-amd64 depends on"
kernel_version="$(candidate "$kernel_package")"
busybox_version="$(candidate busybox-static)"
[ -n "$busybox_version" ] && [ "$busybox_version" != "(none)" ] || die "apt knows no busybox-static"

GUEST_BINARIES=(/usr/sbin/nbd-client /usr/sbin/mke2fs /usr/sbin/e2fsck)
for binary in "${GUEST_BINARIES[@]}"; do [ -x "$binary" ] || die "$binary is missing"; done

stamp="$(
  {
    echo "format 1"
    sha256sum <"${BASH_SOURCE[0]}"
    sha256sum <"$init_script"
    echo "$kernel_package $kernel_version"
    echo "busybox-static $busybox_version"
    sha256sum "${GUEST_BINARIES[@]}"
    dpkg-query -W -f '${Package} ${Version}\n' nbd-client e2fsprogs libc6
  } | sha256sum | cut -d' ' -f1
)"

if [ -f "$out/guest.env" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio.gz" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  log "up to date"
  cat "$out/guest.env"
  exit 0
fi

# ---- fetch and unpack the kernel and busybox ---------------------------------------------------
log "building the guest ($kernel_package $kernel_version, busybox-static $busybox_version)"
debs="$out/debs"
mkdir -p "$debs"
fetch_deb() { # package version -> path of the .deb (downloaded unless already there)
  local package="$1" version="$2" file
  file="$(ls "$debs/${package}_"*.deb 2>/dev/null | while read -r f; do
    [ "$(dpkg-deb -f "$f" Version)" = "$version" ] && echo "$f"; done | head -n1)"
  if [ -z "$file" ]; then
    log "apt-get download $package=$version"
    # apt drops privileges to _apt for downloads; let it write here.
    chmod 0777 "$debs" 2>/dev/null || true
    (cd "$debs" && apt-get download -q "$package=$version" >&2) || {
      apt_update_once
      (cd "$debs" && apt-get download -q "$package=$version" >&2)
    } || die "apt-get download $package=$version failed"
    file="$(ls "$debs/${package}_"*.deb | while read -r f; do
      [ "$(dpkg-deb -f "$f" Version)" = "$version" ] && echo "$f"; done | head -n1)"
  fi
  echo "$file"
}
kernel_deb="$(fetch_deb "$kernel_package" "$kernel_version")"
busybox_deb="$(fetch_deb busybox-static "$busybox_version")"
# Drop .debs of other versions.
for f in "$debs"/*.deb; do
  [ "$f" = "$kernel_deb" ] || [ "$f" = "$busybox_deb" ] || rm -f "$f"
done

work="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$kernel_deb" "$work/kernel"
dpkg-deb -x "$busybox_deb" "$work/busybox"
vmlinuz="$(ls "$work"/kernel/boot/vmlinuz-* | head -n1)"
[ -f "$vmlinuz" ] || die "no vmlinuz in $kernel_deb"
uname_r="${vmlinuz##*/vmlinuz-}"
moddir="$work/kernel/lib/modules/$uname_r"
[ -d "$moddir" ] || moddir="$work/kernel/usr/lib/modules/$uname_r"
[ -d "$moddir" ] || die "no modules for $uname_r"

# ---- the initramfs tree --------------------------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,mnt,run,var/run,usr/bin,usr/sbin,lib/modules}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$root/dev/null" c 1 3 2>/dev/null || true

# Guest binaries with their shared libraries and the dynamic loader (found by ldd).
copy_with_parents() { # host path (symlinks resolved) -> same path in the guest
  local path="$1"
  mkdir -p "$root$(dirname "$path")"
  cp -L "$path" "$root$path"
}
for binary in "${GUEST_BINARIES[@]}"; do
  copy_with_parents "$binary"
  ldd "$binary" | awk '/=> \// { print $3 } /^[ \t]*\/[^ ]+ \(0x/ { print $1 }' | while read -r lib; do
    [ -f "$root$lib" ] || copy_with_parents "$lib"
  done
done
ls "$root"/lib64/ld-linux-*.so.* >/dev/null 2>&1 || die "ldd named no dynamic loader"
ln -sf mke2fs "$root/usr/sbin/mkfs.ext4"
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"
# busybox ships /bin/mke2fs too; the real one must win.
rm -f "$root/bin/mke2fs" "$root/bin/mkfs.ext2"

# Kernel modules: the wanted ones and their dependencies (read from each module's .modinfo), in
# load order, decompressed (busybox insmod then needs no decompressor).
declare -A module_path=()
while IFS= read -r -d '' ko; do
  name="$(basename "$ko")"; name="${name%%.ko*}"; name="${name//-/_}"
  module_path["$name"]="$ko"
done < <(find "$moddir/kernel" -name '*.ko*' -print0)
mkdir -p "$root/lib/modules/$uname_r"
declare -A module_done=()
load_order=()
add_module() {
  local name="${1//-/_}" src dest deps dep
  [ -n "${module_done[$name]:-}" ] && return 0
  module_done["$name"]=1
  src="${module_path[$name]:-}"
  if [ -z "$src" ]; then
    # Built in? Then there is nothing to load.
    grep -q "/${1}.ko\$\|/${name}.ko\$" "$moddir/modules.builtin" 2>/dev/null && return 0
    die "kernel module $name not found for $uname_r"
  fi
  dest="$root/lib/modules/$uname_r/$name.ko"
  case "$src" in
    *.ko.xz) xz -dc "$src" >"$dest" ;;
    *.ko.zst) zstd -qdc "$src" >"$dest" ;;
    *.ko.gz) gzip -dc "$src" >"$dest" ;;
    *) cp "$src" "$dest" ;;
  esac
  deps="$(tr '\0' '\n' <"$dest" | grep -a '^depends=' | head -n1 | cut -d= -f2 | tr ',' ' ')"
  for dep in $deps; do add_module "$dep"; done
  load_order+=("$name")
}
# crc32c_generic: ext4/jbd2 need the crypto "crc32c" (a softdep; TCG's CPU may lack SSE4.2).
for module in crc32c_generic nbd ext4 virtio_pci virtio_net; do add_module "$module"; done
printf '%s\n' "${load_order[@]}" >"$root/etc/modules.order"

install -m 0755 "$init_script" "$root/init"
echo "$uname_r" >"$root/etc/kernel-release"

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) | gzip -1 >"$work/initramfs.cpio.gz"
cp "$vmlinuz" "$work/vmlinuz"

# ---- publish atomically --------------------------------------------------------------------------
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
cat >"$out/guest.env" <<ENV
PFLEX_VM_KERNEL=$out/vmlinuz
PFLEX_VM_INITRD=$out/initramfs.cpio.gz
PFLEX_VM_KERNEL_RELEASE=$uname_r
PFLEX_VM_MODULES=${load_order[*]}
ENV
echo "$stamp" >"$out/stamp"
log "built: $(du -h "$out/initramfs.cpio.gz" | cut -f1) initramfs, modules: ${load_order[*]}"
cat "$out/guest.env"

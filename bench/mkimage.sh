#!/bin/sh
# mkimage.sh OUT.raw [SIZE]
#
# Builds the realistic benchmark disk: an ext4 file system (no partition
# table) holding a Debian minbase tree (debootstrap) plus the Go toolchain,
# about 480 MB of real files in a 2 GiB disk: ~23% allocated. The tree is
# cached in $CANGA_BENCH_CACHE (default ~/.cache/canga-bench); when
# debootstrap cannot run, system files (/usr/lib, /usr/share) stand in.
set -eu
out=$1
size=${2:-2G}
cache=${CANGA_BENCH_CACHE:-$HOME/.cache/canga-bench}
tree=$cache/rootfs
mkdir -p "$cache"
if [ ! -e "$tree/.complete" ]; then
	rm -rf "$tree" "$tree.tmp"
	if command -v debootstrap >/dev/null 2>&1 &&
		debootstrap --variant=minbase bookworm "$tree.tmp" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1; then
		mv "$tree.tmp" "$tree"
	else
		echo "mkimage: debootstrap failed (see $cache/debootstrap.log); using system files" >&2
		rm -rf "$tree.tmp"
		mkdir -p "$tree/usr"
		cp -a /usr/lib/x86_64-linux-gnu "$tree/usr/lib" 2>/dev/null || cp -a /usr/lib "$tree/usr/lib"
		cp -a /usr/share/doc "$tree/usr/share-doc"
	fi
	if [ -d /usr/local/go ]; then
		mkdir -p "$tree/opt"
		cp -a /usr/local/go "$tree/opt/go"
	fi
	touch "$tree/.complete"
fi
rm -f "$out"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 -d "$tree" "$out" "$size"

#!/bin/sh
# deps.sh: installs, from Debian, the tools canga's tests and demo use when
# they are missing. Safe to run again: it only installs what is absent.
set -eu

# deps.sh release: only what make dist and make deb need (dpkg-deb, tar,
# gzip, ssh-keygen to sign, man to read the pages).
need=""
want() { # want COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 || need="$need $2"
}
want dpkg-deb dpkg
want ssh-keygen openssh-client
want man man-db
if [ "${1:-}" = release ]; then
	want gzip gzip
	want tar tar
	want sha256sum coreutils
else
	want qemu-img qemu-utils
	want qemu-io qemu-utils
	want mkfs.ext4 e2fsprogs
	want debugfs e2fsprogs
	want filefrag e2fsprogs
	want mkfs.btrfs btrfs-progs
	want python3 python3
	want curl curl
	want openssl openssl
	want debootstrap debootstrap
	want virt-customize libguestfs-tools
	want /usr/bin/time time
	want docker-registry docker-registry
	# The lazy-access tests serve a repository with nginx too.
	want /usr/sbin/nginx nginx-light
	# The completion tests run bash, zsh and fish.
	want zsh zsh
	want fish fish
	[ -n "$(ls /boot/vmlinuz-* 2>/dev/null)" ] || need="$need linux-image-amd64"
fi

if ! command -v go >/dev/null 2>&1; then
	echo "deps: Go is missing: install Go 1.26 (https://go.dev/dl) and put it on PATH" >&2
	exit 1
fi
[ -z "$need" ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps: installing$need" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is wanted
$sudo apt-get install -y -qq $need >/dev/null
# The tests and the demo run their own registries on free loopback ports;
# the packaged service (on :5000) is not wanted where the package starts it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
	$sudo systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

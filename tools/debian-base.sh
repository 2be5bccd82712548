#!/usr/bin/env bash
# A Debian base image's root filesystem, for building the training image where no registry is
# reachable: debootstrap (minbase, python3 and venv), less apt's caches, docs and locales, as a
# tarball that `docker import` takes. Made once; a set-up step (it reads Debian's mirror).
#
#   tools/debian-base.sh OUT.tar [SUITE] [MIRROR]
set -euo pipefail
out=${1:?usage: tools/debian-base.sh OUT.tar [SUITE] [MIRROR]}
suite=${2:-bookworm}
mirror=${3:-http://deb.debian.org/debian}
[ -s "$out" ] && { echo "$out: made before"; exit 0; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$root/fs" "$mirror" \
  > "$root/debootstrap.log" 2>&1 || { tail -5 "$root/debootstrap.log"; exit 1; }
mkdir -p "$(dirname "$out")"
tar -C "$root/fs" --exclude=./var/cache/apt --exclude=./var/lib/apt/lists \
  --exclude=./usr/share/doc --exclude=./usr/share/locale --exclude=./usr/share/man \
  -cf "$out.partial" .
mv "$out.partial" "$out"
echo "$out: $(du -h "$out" | cut -f1)"

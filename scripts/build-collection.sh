#!/usr/bin/env bash
# Builds the module binaries in release mode, static (musl), for x86_64 and
# aarch64, and places them in the collection's bin/ARCH/ (the action plugin
# sends each host the build of its architecture; bin/NAME, which
# plugins/modules/NAME links to, is the x86_64 one), with the documents the
# modules point to, and the `pgherd` command (in bin/ARCH/ too, for the
# roles that install it on hosts, and the x86_64 one copied to
# target/bin/pgherd, dated like the modules). With --tarball, also packs the
# collection with ansible-galaxy.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
collection="$repo/ansible_collection/ansible_collections/pgherd/cluster"
modules=(instance patroni etcd)
cd "$repo"
cargo build --release --locked --target x86_64-unknown-linux-musl -p pgherd-modules -p pgherd-cli --bins
cargo build --release --locked --target aarch64-unknown-linux-musl -p pgherd-modules -p pgherd-cli --bins
# plugins/modules/NAME is a link to bin/NAME (in git), so that ansible-doc
# lists the modules from their NAME.py documents instead of trying to read
# an executable as text.
mkdir -p "$collection/docs"
for arch in x86_64 aarch64; do
  mkdir -p "$collection/bin/$arch"
  for m in "${modules[@]}" pgherd; do
    install -m 0755 "target/$arch-unknown-linux-musl/release/$m" "$collection/bin/$arch/$m"
  done
done
for m in "${modules[@]}"; do
  rm -f "$collection/bin/$m"
  ln -s "x86_64/$m" "$collection/bin/$m"
done
# The documents the modules' notes point to travel with the collection.
install -m 0644 docs/*.md "$collection/docs/"
install -D -m 0755 target/x86_64-unknown-linux-musl/release/pgherd target/bin/pgherd
sizes() { (cd "$collection/bin/$1" && stat -c '%n: %s bytes' "${modules[@]}" | paste -sd ';' | sed 's/;/, /g'); }
printf 'build-collection: x86_64: %s; aarch64: %s; pgherd: %s bytes\n' \
  "$(sizes x86_64)" "$(sizes aarch64)" "$(stat -c %s target/bin/pgherd)" >&2
if [ "${1:-}" = "--tarball" ]; then
  "$repo/.venv/bin/ansible-galaxy" collection build --force --output-path "$repo/target" "$collection"
fi

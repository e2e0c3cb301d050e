#!/usr/bin/env bash
# Builds the module binaries in release mode and places them in the
# collection's bin/, which plugins/modules/ links to, with the documents the
# modules point to, and the `pgherd` command (copied to target/bin/pgherd,
# dated like the modules). With --tarball, also packs the collection with
# ansible-galaxy.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
collection="$repo/ansible_collection/ansible_collections/pgherd/cluster"
cd "$repo"
cargo build --release --locked -p pgherd-modules -p pgherd-cli --bins
# The executables live in bin/; plugins/modules/NAME is a link to each (in
# git), so that ansible-doc lists the modules from their NAME.py documents
# instead of trying to read an executable as text.
mkdir -p "$collection/bin" "$collection/docs"
for m in instance patroni etcd; do
  install -m 0755 "target/release/$m" "$collection/bin/$m"
done
# The documents the modules' notes point to travel with the collection.
install -m 0644 docs/*.md "$collection/docs/"
install -D -m 0755 target/release/pgherd target/bin/pgherd
printf 'build-collection: %s\n' "$(cd "$collection/bin" && ls -l instance patroni etcd | awk '{print $NF": "$5" bytes"}' | paste -sd ';' | sed 's/;/, /g'), pgherd: $(stat -c %s target/bin/pgherd) bytes" >&2
if [ "${1:-}" = "--tarball" ]; then
  "$repo/.venv/bin/ansible-galaxy" collection build --force --output-path "$repo/target" "$collection"
fi

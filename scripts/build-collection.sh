#!/usr/bin/env bash
# Builds the module binaries in release mode and places them in the
# collection's plugins/modules/, where Ansible finds them. With --tarball,
# also packs the collection with ansible-galaxy.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
collection="$repo/ansible_collection/ansible_collections/pgherd/cluster"
cd "$repo"
cargo build --release --locked -p pgherd-modules --bins
mkdir -p "$collection/plugins/modules"
for m in instance patroni; do
  install -m 0755 "target/release/$m" "$collection/plugins/modules/$m"
done
printf 'build-collection: %s\n' "$(cd "$collection/plugins/modules" && ls -l instance patroni | awk '{print $NF": "$5" bytes"}' | paste -sd ', ')" >&2
if [ "${1:-}" = "--tarball" ]; then
  "$repo/.venv/bin/ansible-galaxy" collection build --force --output-path "$repo/target" "$collection"
fi

#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a used one: installs what is
# missing, checks formatting and lints, builds the collection, then runs the
# unit tests and the end-to-end tests against real etcd, Patroni and Ansible.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

step() { printf '\n== %s\n' "$*" >&2; }

# The suite compares generated files with what is committed; blessing would
# rewrite them instead and hide a stale file.
if [ -n "${PGHERD_BLESS:-}" ]; then
  echo "test.sh: PGHERD_BLESS is set; unset it: the suite checks, it never rewrites" >&2
  exit 2
fi

step "setup"
bash scripts/setup.sh
step "format"
cargo fmt --all -- --check
step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "ansible-lint"
PATH="$repo/.venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$repo/ansible_collection" \
  .venv/bin/ansible-lint --offline --profile production playbooks/ molecule/ \
  ansible_collection/ansible_collections/pgherd/cluster/roles/
step "build the collection"
bash scripts/build-collection.sh
step "tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The end-to-end tests share 127.0.0.11-13: one test at a time.
cargo test --workspace --locked --no-fail-fast -- --test-threads=1 2>&1 | tee "$log" || status=$?
# Molecule: the playbooks as a user runs them, idempotence included. It
# uses the same local addresses, so it runs after the cargo tests. Each
# scenario is run and counted on its own.
if [ "$status" -eq 0 ]; then
  for scenario in molecule/*/molecule.yml; do
    name=$(basename "$(dirname "$scenario")")
    step "molecule: $name"
    if PATH="$repo/.venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$repo/ansible_collection" \
      .venv/bin/molecule test -s "$name"; then
      echo "test result: ok. 1 passed; 0 failed (molecule scenario $name)" >>"$log"
    else
      status=1
      echo "test result: FAILED. 0 passed; 1 failed (molecule scenario $name)" >>"$log"
    fi
  done
fi
# One closing line for the whole run: cargo's own last line is often a
# doc-test run of zero tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "pgherd: %d passed, %d failed\n", p, f }' "$log"
exit "$status"

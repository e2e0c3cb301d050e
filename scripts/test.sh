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
step "build the tests"
cargo test --workspace --locked --no-run
step "tests"
# Three chains run at once, sharing nothing: the tests on this machine's
# local addresses (127.0.0.11-13), then the Molecule scenarios that use
# them; the lab's tests (its own hosts, on its own bridge), then the lab's
# Molecule scenario; and more of the lab's tests on a second lab beside
# the first (PGHERD_LAB_ID=1: another bridge and network, scripts/lab.py).
# The lab's tests mostly wait on their hosts: two labs use the machine's
# second core that one leaves idle. Within a chain, one test at a time.
# Each chain's output is kept whole in its log and shown as it comes,
# each line marked with its chain, which ends saying how long it took.
# The second lab's tests, chosen so that both labs take about as long.
second_lab=" lab_bootstrap lab_failover_clients lab_minor_upgrade lab_vip lab_sites lab_bare "
local_tests=()
lab_tests=()
lab2_tests=()
for f in tests/tests/*.rs; do
  name=$(basename "$f" .rs)
  case "$name" in
    lab | lab_*)
      if [[ "$second_lab" == *" $name "* ]]; then
        lab2_tests+=(--test "$name")
      else
        lab_tests+=(--test "$name")
      fi
      ;;
    *) local_tests+=(--test "$name") ;;
  esac
done
molecule_scenario() {
  local name=$1
  step "molecule: $name"
  if PATH="$repo/.venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$repo/ansible_collection" \
    .venv/bin/molecule test -s "$name"; then
    echo "test result: ok. 1 passed; 0 failed (molecule scenario $name)"
  else
    echo "test result: FAILED. 0 passed; 1 failed (molecule scenario $name)"
    return 1
  fi
}
local_chain() {
  local failed=0 started=$SECONDS
  cargo test --workspace --exclude pgherd-e2e --locked --no-fail-fast -- --test-threads=1 || failed=1
  cargo test -p pgherd-e2e --lib "${local_tests[@]}" --locked --no-fail-fast -- --test-threads=1 || failed=1
  # Molecule: the playbooks as a user runs them, idempotence included.
  if [ "$failed" -eq 0 ]; then
    for scenario in molecule/*/molecule.yml; do
      name=$(basename "$(dirname "$scenario")")
      [ "$name" = lab ] || molecule_scenario "$name" || failed=1
    done
  fi
  echo "chain done in $((SECONDS - started)) s"
  return "$failed"
}
lab_chain() {
  local failed=0 started=$SECONDS
  cargo test -p pgherd-e2e "${lab_tests[@]}" --locked --no-fail-fast -- --test-threads=1 || failed=1
  if [ "$failed" -eq 0 ]; then
    molecule_scenario lab || failed=1
  fi
  echo "chain done in $((SECONDS - started)) s"
  return "$failed"
}
lab2_chain() {
  local failed=0 started=$SECONDS
  PGHERD_LAB_ID=1 cargo test -p pgherd-e2e "${lab2_tests[@]}" --locked --no-fail-fast \
    -- --test-threads=1 || failed=1
  echo "chain done in $((SECONDS - started)) s"
  return "$failed"
}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
local_chain 2>&1 | tee "$logs/local" | sed -u 's/^/local| /' &
local_pid=$!
lab_chain 2>&1 | tee "$logs/lab" | sed -u 's/^/lab  | /' &
lab_pid=$!
lab2_chain 2>&1 | tee "$logs/lab2" | sed -u 's/^/lab2 | /' &
lab2_pid=$!
wait "$local_pid" || status=1
wait "$lab_pid" || status=1
wait "$lab2_pid" || status=1
log="$logs/all"
cat "$logs/local" "$logs/lab" "$logs/lab2" >"$log"
# The failed tests of both chains, together at the end.
grep -E '^test .* \.\.\. FAILED$' "$log" || true
# One closing line for the whole run: cargo's own last line is often a
# doc-test run of zero tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "pgherd: %d passed, %d failed\n", p, f }' "$log"
exit "$status"

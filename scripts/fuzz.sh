#!/usr/bin/env bash
# Runs each fuzz target of fuzz/ for a bounded time (default 60 s each):
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Targets: module_args (arguments file + argument specs + manifest + rendered
# configuration), settings (settings file), config_merge (null-deleting merge
# + YAML emitter). Each uses libFuzzer through cargo-fuzz (installed here if
# missing). An input that breaks a property is copied to
# fuzz/regressions/<target>/, which the test suite replays
# (crates/pgherd-modules/tests/fuzz_regressions.rs), and the script fails.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(module_args settings config_merge)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz needs unstable compiler flags (sanitizers, coverage): on the
# one stable toolchain of this machine, allow them.
export RUSTC_BOOTSTRAP=1

status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/regressions/$t"
  log="fuzz/fuzz-$t.log"
  echo "fuzz: $t for ${seconds}s"
  if (cd fuzz && cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1) >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    echo "fuzz: $t: $runs executions, no failure"
  else
    status=1
    echo "fuzz: $t FAILED; the property that broke:" >&2
    grep -m1 -A3 "panicked" "$log" >&2 || tail -20 "$log" >&2
    for a in fuzz/artifacts/"$t"/*; do
      [ -f "$a" ] && cp "$a" "fuzz/regressions/$t/" && echo "fuzz: kept $a as a regression input" >&2
    done
  fi
done
exit $status

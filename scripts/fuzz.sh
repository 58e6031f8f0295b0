#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 10), starting from its corpus in
# fuzz/corpus/<target>/ (inputs found on the way go to a scratch directory, not into the tree).
# A crash fails the run and is kept in fuzz/artifacts/<target>/. Needs a nightly toolchain;
# installs cargo-fuzz when it is missing. The build is without a sanitizer (`-s none`): the
# code is safe Rust, what is looked for is panics, and the sanitizer build takes far longer.
# CARGO_TARGET_DIR applies (default: target/fuzz, apart from the stable builds).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}

# Says that fuzzing could not run: a failure under CI=true, a NOT RUN line elsewhere.
not_run() {
    echo "NOT RUN: fuzzing ($1)" >&2
    if [ -n "${FLOTILLA_NOT_RUN_LOG:-}" ]; then
        echo "fuzzing: $1" >>"$FLOTILLA_NOT_RUN_LOG"
    fi
    case "${CI:-}" in "" | 0 | false) exit 0 ;; *) exit 1 ;; esac
}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    not_run "no nightly toolchain: rustup toolchain install nightly"
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked || not_run "cargo-fuzz could not be installed"
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/fuzz}
# A bounded run spends most of its time compiling: unoptimised builds (--dev) unless
# FLOTILLA_FUZZ_RELEASE=1 asks for the optimised ones a long run wants.
profile=(--dev)
if [ "${FLOTILLA_FUZZ_RELEASE:-0}" = 1 ]; then
    profile=()
fi
cd fuzz
start=$(date +%s)
cargo +nightly fuzz build "${profile[@]}" -s none || exit 1
echo "fuzz targets built in $(($(date +%s) - start))s"
status=0
for target in $(cargo +nightly fuzz list); do
    scratch=$(mktemp -d -t "flotilla-fuzz-$target.XXXXXX")
    echo "==> fuzzing $target for ${seconds}s"
    # libFuzzer reports every new input; its output is kept, and shown whole only on failure.
    output="$scratch.log"
    if cargo +nightly fuzz run "${profile[@]}" -s none "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$output" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$output" | sed 's/^/    /'
    else
        tail -n 80 "$output"
        echo "fuzz target $target failed: see fuzz/artifacts/$target/" >&2
        status=1
    fi
    rm -rf "$scratch" "$output"
done
exit $status

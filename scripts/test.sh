#!/usr/bin/env bash
# Runs every test of Flotilla: the Rust workspace (unit, property, storage conformance, real
# node processes, containers) and the offline checks of the Helm chart and manifests (real Helm
# lint, Kubernetes schema validation). Installs the test tools it needs when they are missing
# (cargo-nextest, debootstrap and docker compose for the container tests, a Python venv), and
# lists at the end every test that could not run on this machine.
set -uo pipefail
cd "$(dirname "$0")/.."

status=0

# Each stage's time and outcome, printed again at the very end (with the tests that failed), so
# that the last lines of a long run say what went wrong.
summary="$(mktemp -t flotilla-test-summary.XXXXXX)"
nextest_log="$(mktemp -t flotilla-nextest.XXXXXX)"
stage_name=""
stage_start=0
stage() {
    stage_end
    stage_name=$1
    stage_start=$(date +%s)
    stage_status=$status
    echo "==> $1"
}
stage_end() {
    if [ -n "$stage_name" ]; then
        local outcome=ok
        [ "$status" = "$stage_status" ] || outcome=FAILED
        printf '    %-55s %5ss  %s\n' "$stage_name" "$(($(date +%s) - stage_start))" "$outcome" >>"$summary"
    fi
    stage_name=""
}

# Installs Debian packages (as root, or through sudo).
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "cannot install $* (not root, no sudo): install it and run again" >&2
            return 1
        fi
        sudo=(sudo)
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "cannot install $* (no apt-get): install it and run again" >&2
        return 1
    fi
    echo "==> installing $*"
    "${sudo[@]}" apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

stage "test tools"
# The container tests make their Debian base image with debootstrap (no registry needed) and
# run a docker compose cluster. Without these they fail (under CI=true) or say NOT RUN.
if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
    apt_install debootstrap || status=1
fi
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    apt_install docker-compose || status=1
fi

# The benchmark's rows beside PostgreSQL are smoke-tested against a real server.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    apt_install --no-install-recommends postgresql || status=1
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "==> installing cargo-nextest"
    cargo install cargo-nextest --locked || exit 1
fi

# The clock-jump fault test runs the nodes' wall clocks through libfaketime.
if ! compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null &&
    [ ! -e /usr/lib/faketime/libfaketime.so.1 ]; then
    apt_install --no-install-recommends faketime || status=1
fi

# `promtool check metrics` and `promtool test rules` check the metrics and the alert rules.
if ! command -v promtool >/dev/null 2>&1; then
    apt_install --no-install-recommends prometheus || status=1
fi

# Tests that cannot run here (no network namespaces, no docker, no Kubernetes cluster) write one
# line each to this file; it is printed at the end so that a green run never hides them.
not_run_log="$(mktemp -t flotilla-not-run.XXXXXX)"
trap 'rm -f "$not_run_log" "$summary" "$nextest_log"' EXIT
export FLOTILLA_NOT_RUN_LOG="$not_run_log"

stage "moto's S3-compatible server for the backup tests"
s3venv=target/s3-venv
if [ ! -x "$s3venv/bin/moto_server" ]; then
    python3 -m venv "$s3venv" || exit 1
    "$s3venv/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]' || exit 1
fi
export FLOTILLA_MOTO_SERVER="$PWD/$s3venv/bin/moto_server"

# The container tests run the node's image; building it (a cargo build of its own, see
# deploy/build-image.sh) is done here, before the tests and their timeouts start.
if docker info >/dev/null 2>&1; then
    stage "container image flotilla:e2e for the container tests"
    FLOTILLA_BASE_PULL="${FLOTILLA_BASE_PULL:-0}" deploy/build-image.sh --profile debug --tag flotilla:e2e ||
        status=1
fi

stage "Rust tests"
cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$nextest_log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

# Each fuzz target for a few seconds (the corpus is replayed on stable by the Rust tests above).
stage "fuzzing"
scripts/fuzz.sh "${FLOTILLA_FUZZ_SECONDS:-10}" || status=1

# The HTTP API fuzzed from its OpenAPI document (installs schemathesis into a venv).
stage "HTTP API: schemathesis"
scripts/schemathesis.sh || status=1

stage "packaging checks (Helm chart, manifests)"
venv=target/packaging-venv
if [ ! -x "$venv/bin/python" ]; then
    python=""
    for candidate in python3.13 python3.12 "$HOME"/.pyenv/versions/3.13*/bin/python "$HOME"/.pyenv/versions/3.12*/bin/python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
            python=$candidate
            break
        fi
    done
    if [ -z "$python" ]; then
        echo "packaging checks need Python >= 3.12 (none found)" >&2
        exit 1
    fi
    "$python" -m venv "$venv" || exit 1
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r operator/tests/packaging/requirements.txt || exit 1
cargo build --quiet -p flotilla-operator || exit 1
FLOTILLA_OPERATOR_BIN="${CARGO_TARGET_DIR:-target}/debug/flotilla-operator" \
    "$venv/bin/python" -m pytest -p no:cacheprovider -q operator/tests/packaging || status=1

stage_end
echo "==> summary (exit $status)"
cat "$summary"
failed=$(grep -E '^ +(FAIL|TIMEOUT|SIGSEGV|SIGABRT|SIGKILL|LEAK-FAIL) ' "$nextest_log" | sed -E 's/^ +([A-Z-]+) .*\) /\1 /' | sort -u)
if [ -n "$failed" ]; then
    echo "==> Rust tests that failed:"
    echo "$failed" | sed 's/^/    /'
fi
if [ -s "$not_run_log" ]; then
    echo "==> tests that did NOT run here (they passed without testing anything):"
    sort -u "$not_run_log" | sed 's/^/    /'
fi

exit $status

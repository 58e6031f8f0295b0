#!/usr/bin/env bash
# Runs every test of Flotilla: the Rust workspace (unit, property, storage conformance, real
# node processes, containers) and the offline checks of the Helm chart and manifests (real Helm
# lint, Kubernetes schema validation). Installs the test tools it needs when they are missing.
set -uo pipefail
cd "$(dirname "$0")/.."

status=0

if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "==> installing cargo-nextest"
    cargo install cargo-nextest --locked || exit 1
fi

# `promtool check metrics` and `promtool test rules` check the metrics and the alert rules.
if ! command -v promtool >/dev/null 2>&1; then
    echo "==> installing promtool (Debian's prometheus package)"
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus || exit 1
    else
        echo "promtool is missing: install Debian's prometheus package (as root)" >&2
        exit 1
    fi
fi

echo "==> Rust tests"
cargo nextest run --workspace --no-fail-fast || status=1

echo "==> packaging checks (Helm chart, manifests)"
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

exit $status

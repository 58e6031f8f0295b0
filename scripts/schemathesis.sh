#!/usr/bin/env bash
# Fuzzes the node's HTTP/JSON API with schemathesis, from the OpenAPI document the node serves:
# starts a one-node `flotilla-node dev` cluster on loopback, runs a bounded number of generated
# requests per operation and fails on any server error (5xx). The watch and the live query are
# left out (their answers are streams that do not end; the process tests cover them). Installs
# schemathesis into a venv
# (scripts/schemathesis-requirements.txt). SCHEMATHESIS_SEED replays a run; every run prints
# its seed.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
venv="$target/schemathesis-venv"
examples="${SCHEMATHESIS_EXAMPLES:-10}"
seed="${SCHEMATHESIS_SEED:-$((RANDOM * 32768 + RANDOM))}"

if [ ! -x "$venv/bin/schemathesis" ]; then
    python=""
    for candidate in python3.13 python3.12 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
            python=$candidate
            break
        fi
    done
    if [ -z "$python" ]; then
        echo "schemathesis needs Python >= 3.10 (none found)" >&2
        exit 1
    fi
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/schemathesis-requirements.txt

cargo build --quiet -p flotilla-node
data="$(mktemp -d -t flotilla-schemathesis.XXXXXX)"
# Node 0 of the dev cluster: client port base, peer base+1, HTTP base+2.
base=$((20000 + (RANDOM % 1000) * 10))
http="127.0.0.1:$((base + 2))"
"$target/debug/flotilla-node" dev --nodes 1 --data-dir "$data" --base-port "$base" \
    >"$data/dev.log" 2>&1 &
dev=$!
cleanup() {
    kill "$dev" 2>/dev/null || true
    wait "$dev" 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT

# Ready once the dev cluster's database answers.
"$venv/bin/python" - "$http" "$dev" <<'PY'
import os, sys, time, urllib.request
addr, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen(f"http://{addr}/v1/databases/default", timeout=2) as r:
            if r.status == 200:
                break
    except Exception as e:
        last = e
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"flotilla-node dev exited before it was ready ({last})")
    if time.monotonic() > deadline:
        sys.exit(f"flotilla-node dev not ready within 60 s: {last}")
    time.sleep(0.2)
PY

echo "==> schemathesis against http://$http/openapi.json (seed $seed, $examples examples per operation)"
status=0
"$venv/bin/schemathesis" run "http://$http/openapi.json" \
    --checks not_a_server_error \
    --exclude-path-regex '/(watch|live)$' \
    --max-examples "$examples" \
    --seed "$seed" \
    --workers 2 \
    --request-timeout 20 \
    --warnings off \
    --no-color || status=$?
if [ "$status" -ne 0 ]; then
    echo "schemathesis found server errors (seed $seed; SCHEMATHESIS_SEED=$seed replays it); node log:" >&2
    tail -n 50 "$data"/node-0/node.log >&2 || true
fi
exit "$status"

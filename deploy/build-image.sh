#!/usr/bin/env bash
# Builds a Flotilla container image: the storage node (deploy/Dockerfile, the default) or the
# Kubernetes operator (deploy/Dockerfile.operator).
#
#   deploy/build-image.sh [--image node|operator] [--profile release|debug] [--tag TAG]
#
# 1. makes sure the base image exists (deploy/base-image.sh: made with debootstrap when
#    missing, or pulled where debootstrap cannot be used);
# 2. builds the image's two binaries with cargo on this host, in target/image/ (see below):
#    `flotilla-node` and `flotilla`, or `flotilla-operator` and `kubectl-flotilla`;
# 3. stages both (debug info stripped) into target/image/context/<profile>/ (the operator's
#    into context/operator-<profile>/);
# 4. runs `docker build -f deploy/Dockerfile` (or deploy/Dockerfile.operator) on that directory.
#
# Work already done is skipped: cargo rebuilds nothing when the sources did not change, and the
# docker build is skipped when TAG already holds an image of the same binaries and Dockerfile
# (recorded in the image label dev.flotilla.build-hash). Safe to run several times at once.
#
# Defaults: --profile release, --tag flotilla:dev. FLOTILLA_IMAGE_TARGET_DIR moves the cargo
# target directory of these builds (default: target/image).
set -euo pipefail

usage() {
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

PROFILE=release
IMAGE=node
TAG=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --image) [[ $# -ge 2 ]] || usage; IMAGE="$2"; shift 2 ;;
        --image=*) IMAGE="${1#*=}"; shift ;;
        --profile) [[ $# -ge 2 ]] || usage; PROFILE="$2"; shift 2 ;;
        --profile=*) PROFILE="${1#*=}"; shift ;;
        --tag) [[ $# -ge 2 ]] || usage; TAG="$2"; shift 2 ;;
        --tag=*) TAG="${1#*=}"; shift ;;
        -h|--help) usage ;;
        *) printf 'unknown argument: %s\n' "$1" >&2; usage ;;
    esac
done
case "$PROFILE" in
    release) CARGO_PROFILE_FLAG=(--release); PROFILE_DIR=release ;;
    debug|dev) CARGO_PROFILE_FLAG=(); PROFILE=debug; PROFILE_DIR=debug ;;
    *) printf 'unknown profile %s (release or debug)\n' "$PROFILE" >&2; exit 2 ;;
esac

case "$IMAGE" in
    node)
        TAG="${TAG:-flotilla:dev}"; DOCKERFILE=Dockerfile
        BINS=(flotilla-node flotilla)
        CARGO_BINS=(-p flotilla-node --bin flotilla-node -p flotilla-cli --bin flotilla) ;;
    operator)
        TAG="${TAG:-flotilla-operator:dev}"; DOCKERFILE=Dockerfile.operator
        BINS=(flotilla-operator kubectl-flotilla)
        CARGO_BINS=(-p flotilla-operator --bin flotilla-operator --bin kubectl-flotilla) ;;
    *) printf 'unknown image %s (node or operator)\n' "$IMAGE" >&2; exit 2 ;;
esac

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$DEPLOY/.." && pwd)"
CARGO="${CARGO:-cargo}"
START=$SECONDS

step() { printf '[build-image %3ss] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { printf '[build-image] error: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the docker daemon cannot be reached"

step "1/4 base image"
"$DEPLOY/base-image.sh"

cd "$REPO"
TARGET_DIR="$("$CARGO" metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[[ -n "$TARGET_DIR" ]] || TARGET_DIR="$REPO/target"
# A target directory of its own: `cargo build -p` resolves dependency features differently
# from workspace and test builds, so sharing theirs would not save the compile, and would
# overwrite the target/<profile>/flotilla-node that tests running meanwhile start.
BUILD_DIR="${FLOTILLA_IMAGE_TARGET_DIR:-$TARGET_DIR/image}"
BIN_DIR="$BUILD_DIR/$PROFILE_DIR"

step "2/4 cargo build ($PROFILE) of ${BINS[*]} in $BUILD_DIR"
# Low priority: tests that run meanwhile keep their timing.
CARGO_TARGET_DIR="$BUILD_DIR" nice -n 10 "$CARGO" build "${CARGO_PROFILE_FLAG[@]}" "${CARGO_BINS[@]}"

CONTEXT="$BUILD_DIR/context/$PROFILE"
[[ "$IMAGE" == node ]] || CONTEXT="$BUILD_DIR/context/$IMAGE-$PROFILE"
mkdir -p "$CONTEXT"
# One staging and build at a time per profile; others wait here and then find it done.
exec 9>"$CONTEXT.lock"
if ! flock -n 9; then
    step "another build of this profile is running; waiting for it"
    flock 9
fi

step "3/4 staging binaries in $CONTEXT"
for bin in "${BINS[@]}"; do
    [[ -x "$BIN_DIR/$bin" ]] || die "$BIN_DIR/$bin was not built"
    tmp="$CONTEXT/.$bin.tmp"
    cp "$BIN_DIR/$bin" "$tmp"
    if command -v strip >/dev/null 2>&1; then
        strip --strip-debug "$tmp"
    fi
    chmod 0755 "$tmp"
    if cmp -s "$tmp" "$CONTEXT/$bin"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$CONTEXT/$bin"
    fi
done
{
    echo '*'
    printf '!%s\n' "${BINS[@]}"
} >"$CONTEXT/.dockerignore"

HASH="$(cat "$DEPLOY/$DOCKERFILE" "${BINS[@]/#/$CONTEXT/}" | sha256sum | cut -c1-32)"
CURRENT="$(docker image inspect -f '{{index .Config.Labels "dev.flotilla.build-hash"}}' \
    "$TAG" 2>/dev/null || true)"
if [[ "$CURRENT" == "$HASH" ]]; then
    step "4/4 $TAG is up to date (build hash $HASH)"
    exit 0
fi

step "4/4 docker build -t $TAG"
# Without the buildx plugin the docker CLI must be told to use the classic builder.
if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi
OLD_ID="$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)"
docker build -f "$DEPLOY/$DOCKERFILE" \
    --label "dev.flotilla.build-hash=$HASH" \
    -t "$TAG" "$CONTEXT" >&2
# The image TAG held before is now untagged: remove it unless something still uses it.
if [[ -n "$OLD_ID" && "$OLD_ID" != "$(docker image inspect -f '{{.Id}}' "$TAG")" ]]; then
    docker rmi "$OLD_ID" >/dev/null 2>&1 || true
fi
step "done: $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | numfmt --to=iec))"

#!/usr/bin/env bash
# Makes sure the base image of deploy/Dockerfile (debian:bookworm-slim) exists locally.
#
# When it is missing, a minimal Debian bookworm root is made with debootstrap
# (--variant=minbase) from a Debian mirror, slimmed the way the official -slim images are, and
# imported under the same tag, so that deploy/Dockerfile builds unchanged here and where the
# public image can be pulled. Without debootstrap (or root) the public image is pulled instead.
# Does nothing when the image is present.
#
# Needs: docker; debootstrap (apt-get install -y debootstrap) and root, or a reachable registry.
#
# Environment:
#   FLOTILLA_BASE_IMAGE   tag to provide (default debian:bookworm-slim)
#   FLOTILLA_BASE_PULL    1 = try `docker pull` first; 0 = never pull; unset = pull only when
#                         debootstrap cannot be used
#   DEBIAN_MIRROR         mirror for debootstrap (default: the one this host's apt sources use
#                         for bookworm; its bookworm-security source goes into the image too)
set -euo pipefail

# debootstrap lives in /usr/sbin, which a non-login PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"
IMAGE="${FLOTILLA_BASE_IMAGE:-debian:bookworm-slim}"
SUITE=bookworm

log() { printf '[base-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The first URI this host's apt sources (deb822 .sources files, then one-line .list files) use
# for binary packages of suite $1; nothing when none does.
apt_uri_for() {
    local suite="$1" f
    {
        for f in /etc/apt/sources.list.d/*.sources; do
            [[ -r "$f" ]] || continue
            awk -v suite="$suite" 'BEGIN { RS = ""; FS = "\n" } {
                uris = ""; suites = ""; types = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
                    if ($i ~ /^Suites:/) { suites = $i; sub(/^Suites:/, "", suites); suites = suites " " }
                    if ($i ~ /^Types:/) { types = $i " " }
                }
                if (types ~ /[ \t]deb[ \t]/ && suites ~ ("[ \t]" suite "[ \t]")) {
                    split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$f"
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [[ -r "$f" ]] || continue
            awk -v suite="$suite" '$1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f"
        done
    } | head -n 1
}

command -v docker >/dev/null 2>&1 || die "docker is not installed"

# Several builds may start at once (tests run in parallel): one makes the image, the others
# wait for it.
LOCK="${TMPDIR:-/tmp}/flotilla-base-image.lock"
exec 9>"$LOCK"
if ! flock -n 9; then
    log "another build is making $IMAGE; waiting for it"
    flock 9
fi

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE is present"
    exit 0
fi

pull() {
    log "pulling $IMAGE"
    timeout 300 docker pull "$IMAGE" >&2
}

can_debootstrap=1
command -v debootstrap >/dev/null 2>&1 || can_debootstrap=0
[[ "$(id -u)" == 0 ]] || can_debootstrap=0

case "${FLOTILLA_BASE_PULL:-auto}" in
    1)
        pull && exit 0
        [[ $can_debootstrap == 1 ]] || die "cannot pull $IMAGE, and debootstrap (as root) is not available"
        log "cannot pull $IMAGE; making it locally"
        ;;
    0)
        [[ $can_debootstrap == 1 ]] \
            || die "debootstrap is not installed or this is not root (apt-get install -y debootstrap)"
        ;;
    *)
        if [[ $can_debootstrap == 0 ]]; then
            log "debootstrap is not available here (needs root and apt-get install -y debootstrap)"
            pull && exit 0
            die "cannot pull $IMAGE and cannot make it: install debootstrap and run as root"
        fi
        ;;
esac

MIRROR="${DEBIAN_MIRROR:-$(apt_uri_for "$SUITE")}"
[[ -n "$MIRROR" ]] || die "no Debian $SUITE mirror in this host's apt sources: set DEBIAN_MIRROR"
SECURITY="$(apt_uri_for "$SUITE-security")"

ROOT="$(mktemp -d "${TMPDIR:-/tmp}/flotilla-rootfs.XXXXXX")"
cleanup() { rm -rf --one-file-system "$ROOT"; }
trap cleanup EXIT

log "debootstrap --variant=minbase $SUITE from $MIRROR (about a minute)"
start=$SECONDS
debootstrap --variant=minbase --arch="$(dpkg --print-architecture)" \
    "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || {
    tail -n 30 "$ROOT.log" >&2
    rm -f "$ROOT.log"
    die "debootstrap failed"
}
rm -f "$ROOT.log"
log "debootstrap done in $((SECONDS - start))s; slimming"

# What the official -slim images leave out, also for packages installed later.
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
cat >"$ROOT/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
{
    echo "deb $MIRROR $SUITE main"
    echo "deb $MIRROR $SUITE-updates main"
    if [[ -n "$SECURITY" ]]; then
        echo "deb $SECURITY $SUITE-security main"
    fi
} >"$ROOT/etc/apt/sources.list"
find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$ROOT"/usr/share/{man,info,groff,lintian,linda}/* \
    "$ROOT"/var/cache/apt/* "$ROOT"/var/lib/apt/lists/* \
    "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/tmp/* "$ROOT"/root/.bash_history
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
    -exec rm -rf {} + 2>/dev/null || true
# The host's resolver and name must not leak into the image; docker provides both.
: >"$ROOT/etc/resolv.conf"
: >"$ROOT/etc/hostname"
rm -f "$ROOT/etc/machine-id" && : >"$ROOT/etc/machine-id"

log "importing as $IMAGE"
tar --numeric-owner --xattrs -C "$ROOT" -c . \
    | docker import \
        --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --message "debootstrap --variant=minbase $SUITE $MIRROR" \
        - "$IMAGE" >/dev/null
log "$IMAGE made locally ($(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec) in $((SECONDS - start))s)"

#!/usr/bin/env bash
# Runs CI as a fresh machine would: a clean Debian root filesystem (debootstrap of this machine's
# release, from the mirror its own apt sources name), a clone of the committed HEAD inside it,
# and `CI=true bash .ci/run` there. Nothing installed by hand on this machine is visible inside;
# only the rustup toolchain (and the cargo-nextest the machine image ships beside it) and the
# cargo registry cache come in, read-only (writes land in a throw-away overlay).
#
# Usage: sudo scripts/fresh-machine.sh [--keep | --clean]
#   --keep   leave the root filesystem under target/fresh-machine/ for inspection
#   --clean  only remove what an earlier run left there (its mounts first), then exit
# Needs: root, debootstrap, git, overlayfs. Takes about as long as CI plus ~3 minutes.
set -euo pipefail
# All of it in one function, read whole before it runs: editing this file while it runs is safe.
main() {

keep=0 clean_only=0
case "${1:-}" in
    --keep) keep=1 ;;
    --clean) clean_only=1 ;;
    "") ;;
    *) echo "fresh-machine: unknown option $1 (--keep or --clean)"; exit 2 ;;
esac

repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work="$repo/target/fresh-machine"
root="$work/root"
log="$work/ci.log"

[ "$(id -u)" -eq 0 ] || { echo "fresh-machine: run as root (debootstrap, chroot, mounts)"; exit 2; }

# Mount points at or under $1, deepest first: the root filesystem bind-mounts the host's /dev
# (read-write), and a run killed before its cleanup leaves that mounted.
mounts_under() {
    awk -v r="$1" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}
# Removes the root filesystem and the overlay: unmounts what is still mounted under them, and
# removes nothing while a mount remains (deleting through a bind mount of /dev deletes the
# host's device nodes); --one-file-system in case one appears meanwhile.
remove_root() {
    local m
    for m in $(mounts_under "$root") $(mounts_under "$work/overlay"); do
        umount -l "$m" || true
    done
    local left
    left=$(mounts_under "$root"; mounts_under "$work/overlay")
    if [ -n "$left" ]; then
        echo "fresh-machine: still mounted, so nothing removed:"
        echo "$left" | sed 's/^/  /'
        return 1
    fi
    rm -rf --one-file-system "$root" "$work/overlay"
}
if [ "$clean_only" -eq 1 ]; then
    remove_root
    echo "fresh-machine: removed $root"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "fresh-machine: needs debootstrap (apt-get install debootstrap)"; exit 2; }

. /etc/os-release
release="${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}"

# The Debian archive lines of this machine's apt sources (one-line and deb822 formats), for the
# release and its -updates/-security suites: "URI SUITE COMPONENTS".
debian_sources() {
    {
        cat /etc/apt/sources.list 2>/dev/null | awk '$1 == "deb" {
            i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            uri = $i; suite = $(i + 1); comps = ""
            for (j = i + 2; j <= NF; j++) comps = comps " " $j
            print uri, suite, comps }'
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            awk 'BEGIN { RS = ""; FS = "\n" } {
                types = uris = suites = comps = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/) types = substr($i, 8)
                    if ($i ~ /^URIs:/) uris = substr($i, 6)
                    if ($i ~ /^Suites:/) suites = substr($i, 8)
                    if ($i ~ /^Components:/) comps = substr($i, 12)
                }
                if (types !~ /(^| )deb( |$)/) next
                n = split(uris, u, " "); m = split(suites, s, " ")
                for (a = 1; a <= n; a++) for (b = 1; b <= m; b++) print u[a], s[b], comps
            }' "$f"
        done
    } | awk -v rel="$release" '$2 == rel || index($2, rel "-") == 1' | sort -u
}

sources=$(debian_sources)
mirror=$(echo "$sources" | awk -v rel="$release" '$2 == rel { print $1; exit }')
[ -n "$mirror" ] || { echo "fresh-machine: no apt source for $release on this machine"; exit 2; }

mounts=()
cleanup() {
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount -l "${mounts[$i]}" 2>/dev/null || true
    done
    if [ "$keep" -eq 0 ]; then remove_root || true; fi
}
trap cleanup EXIT
mount_at() { # mount_at DIRECTORY MOUNT-ARGS...
    mkdir -p "$1"
    local target=$1
    shift
    mount "$@" "$target"
    mounts+=("$target")
}

remove_root || { echo "fresh-machine: FAIL (an earlier run's root filesystem could not be removed)"; exit 1; }
mkdir -p "$work/debs" "$root"
echo "fresh-machine: debootstrap $release (minbase) from $mirror"
start=$(date +%s)
debootstrap --variant=minbase --cache-dir="$work/debs" "$release" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log"
    echo "fresh-machine: FAIL (debootstrap)"
    exit 1
}
echo "$sources" | awk '{ $1 = "deb " $1; print }' >"$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The machine's own trust anchors (a network that inspects TLS has its CA here), as part of the
# machine like its apt sources: the ca-certificates package adds them when .ci/run installs it.
if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
echo "fresh-machine: root filesystem ready in $(($(date +%s) - start)) s; apt sources:"
sed 's/^/  /' "$root/etc/apt/sources.list"

mount_at "$root/proc" -t proc proc
mount_at "$root/sys" -t sysfs sysfs
mount_at "$root/dev" --bind /dev
mount_at "$root/dev/pts" --bind /dev/pts

# The rustup toolchain, read-only, with a cargo home of its own: the rustup proxies only (not
# whatever was `cargo install`ed here), and the registry cache as an overlay on this machine's,
# so downloads and `cargo install` write to a throw-away layer.
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
mount_at "$root/root/.rustup" --bind -o ro "$rustup_home"
mount -o remount,bind,ro "$root/root/.rustup"
mkdir -p "$root/root/.cargo/bin"
cp "$cargo_home/bin/rustup" "$root/root/.cargo/bin/rustup"
for tool in "$cargo_home"/bin/*; do
    name=$(basename "$tool")
    if [ "$name" != rustup ] && cmp -s "$tool" "$cargo_home/bin/rustup"; then
        ln -s rustup "$root/root/.cargo/bin/$name"
    fi
done
echo "fresh-machine: rustup proxies: $(ls "$root/root/.cargo/bin" | tr '\n' ' ')"
mkdir -p "$work/overlay/upper" "$work/overlay/work" "$cargo_home/registry"
mount_at "$root/root/.cargo/registry" -t overlay overlay \
    -o "lowerdir=$cargo_home/registry,upperdir=$work/overlay/upper,workdir=$work/overlay/work"
nextest=$(command -v cargo-nextest || true)
if [ -n "$nextest" ] && [ "${nextest#"$cargo_home"}" = "$nextest" ]; then
    # The machine image ships cargo-nextest beside the toolchain, outside the cargo home.
    touch "$root/usr/local/bin/cargo-nextest"
    mount --bind -o ro "$nextest" "$root/usr/local/bin/cargo-nextest"
    mounts+=("$root/usr/local/bin/cargo-nextest")
    echo "fresh-machine: with the machine image's $nextest (read-only)"
fi

git clone --quiet --no-local "$repo" "$root/project"
echo "fresh-machine: CI=true bash .ci/run in a clone of $(git -C "$repo" rev-parse --short HEAD); log: $log"
start=$(date +%s)
set +e
chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb CI=true \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c 'cd /project && bash .ci/run' >"$log" 2>&1
status=$?
set -e
elapsed=$(($(date +%s) - start))
tail -15 "$log"
if [ "$status" -eq 0 ]; then
    echo "fresh-machine: PASS (.ci/run exited 0 after ${elapsed} s)"
else
    echo "fresh-machine: FAIL (.ci/run exited $status after ${elapsed} s; see $log)"
fi
exit "$status"
}

main "$@"

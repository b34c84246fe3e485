#!/usr/bin/env bash
# Acceptance check of README's two commands on a fresh machine: a clean Debian root made with
# debootstrap (variant minbase: no compiler, no headers, no Python, no database server), the
# committed checkout (HEAD) copied into it, and inside it (chroot with /proc, /sys and /dev):
#   1. scripts/demo.sh, with no other step before it;
#   2. scripts/test.sh --dbs-only: the test command's set-up and database bring-up (it installs
#      PostgreSQL and MariaDB and starts its own, since the expected addresses are pointed at
#      ports nobody uses: the root shares this machine's network, where 5432/3306 may be taken),
#      or with --full-tests the whole scripts/test.sh.
#
# A Rust toolchain is not downloaded (it cannot be here): this machine's rustup toolchains
# (RUSTUP_HOME, default ~/.rustup) are bind-mounted read-only at the same place in the root and
# its rustup proxies copied into the root's ~/.cargo/bin, as `rustup` would leave them; the
# root's cargo registry starts empty and fills from crates.io.
# Services are not started when packages are installed (policy-rc.d answers 101, as in a
# container image), so the database servers the tests use are the ones test.sh starts itself.
# The site's local CA certificates and /etc/pip.conf are copied in, as every machine of the
# site has them (HTTPS to crates.io and PyPI may be verified against them).
#
# Needs root, a Debian or Ubuntu host (debootstrap is installed with apt-get when missing),
# internet access to the distribution's mirror, PyPI and crates.io, and ~6 GB of disk.
# The root is made under target/fresh-machine/ (removed on success unless --keep; kept on
# failure for inspection); logs and timings go to target/fresh-machine/*.log and timings.txt.
#
# Usage: scripts/fresh-machine-check.sh [--keep] [--full-tests]
# Environment: FRESH_SUITE (default: this host's codename), FRESH_MIRROR (default: this host's
# apt source for that suite), FRESH_PG_PORT (56432), FRESH_MYSQL_PORT (56306).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

keep=0
full=0
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        --full-tests) full=1 ;;
        *) echo "usage: scripts/fresh-machine-check.sh [--keep] [--full-tests]" >&2; exit 2 ;;
    esac
done

die() { echo "fresh-machine: $*" >&2; exit 1; }
say() { echo "fresh-machine: $*"; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, mount, chroot)"

work="$repo/target/fresh-machine"
root="$work/root"
mkdir -p "$work"
: >"$work/timings.txt"
timing() { printf '%-34s %5d s\n' "$1" "$2" | tee -a "$work/timings.txt"; }

# --- mounts and their safe removal ------------------------------------------------------------

mounts_under_root() {
    awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo
}

# Processes whose root directory is the chroot (ones this script started there).
stop_root_processes() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] || continue
        kill -TERM "${p#/proc/}" 2>/dev/null || true
    done
    sleep 2
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] || continue
        kill -KILL "${p#/proc/}" 2>/dev/null || true
    done
}

unmount_root() {
    local m
    [ -d "$root" ] || return 0
    stop_root_processes
    # Deepest first.
    while read -r m; do
        [ -n "$m" ] && { umount "$m" 2>/dev/null || umount -l "$m"; }
    done < <(mounts_under_root | sort -r)
}

remove_root() {
    unmount_root
    [ -z "$(mounts_under_root)" ] || die "still mounted under $root; not removing it"
    rm -rf --one-file-system "$root"
}

status=1
finish() {
    unmount_root
    if [ "$status" -eq 0 ] && [ "$keep" -eq 0 ]; then
        remove_root
    elif [ -d "$root" ]; then
        say "the root is kept at $root (remove it with: rm -rf --one-file-system $root)"
    fi
}
trap finish EXIT

# --- the clean root ---------------------------------------------------------------------------

# The host's apt source for a suite: deb822 .sources files first, then one-line .list files.
host_mirror() {
    local suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v s="$suite" 'BEGIN { RS = "" } {
            uri = ""; ok = 0; n = split($0, line, "\n")
            for (i = 1; i <= n; i++) {
                if (line[i] ~ /^URIs:/) { split(line[i], a, " "); uri = a[2] }
                if (line[i] ~ /^Suites:/) { m = split(line[i], b, " "); for (j = 2; j <= m; j++) if (b[j] == s) ok = 1 }
                if (line[i] ~ /^Enabled: *no/) ok = 0
            }
            if (ok && uri != "") { print uri; exit }
        }' "$f"
    done | head -1
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v s="$suite" '$1 == "deb" {
            i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == s) { print $i; exit }
        }' "$f"
    done | head -1
}

# shellcheck disable=SC1091
suite=${FRESH_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
[ -n "$suite" ] || die "cannot tell this host's codename: set FRESH_SUITE"
mirror=${FRESH_MIRROR:-$(host_mirror "$suite" | head -1)}
[ -n "$mirror" ] || die "no apt source for '$suite' in /etc/apt: set FRESH_MIRROR"
pg_port=${FRESH_PG_PORT:-56432}
mysql_port=${FRESH_MYSQL_PORT:-56306}

rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
if [ ! -x "$cargo_bin/rustup" ] || [ ! -d "$rustup_home/toolchains" ]; then
    die "no rustup toolchain in $rustup_home and $cargo_bin (install Rust with rustup first)"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

if [ -e "$root" ]; then
    say "removing the root of an earlier run"
    remove_root
fi

t0=$SECONDS
say "debootstrap --variant=minbase $suite from $mirror (log: $work/debootstrap.log)"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
timing "debootstrap (minbase)" $((SECONDS - t0))

# What a fresh machine of this site has besides the base system: name resolution, the site's
# local CA certificates (HTTPS to the registries may pass through them; ca-certificates adds
# them to the system store when setup-host.sh installs it) and pip's configuration naming that
# store, its apt settings (Acquire:: lines only, e.g. a proxy); no services started by installs.
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/hosts "$root/etc/hosts"
mkdir -p "$root/usr/local/share/ca-certificates"
for f in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$f" ] && cp "$f" "$root/usr/local/share/ca-certificates/"
done
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
for f in /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] || continue
    if grep -q '^Acquire::' "$f"; then
        grep '^Acquire::' "$f" >"$root/etc/apt/apt.conf.d/$(basename "$f")"
    fi
done
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

# The checkout, as committed.
mkdir -p "$root/root/backfilld"
git -C "$repo" archive --format=tar HEAD | tar -x -C "$root/root/backfilld"
say "checkout: $(git -C "$repo" rev-parse --short HEAD) copied to /root/backfilld"

# The Rust toolchain: rustup's toolchains read-only, its proxies as rustup installs them.
mkdir -p "$root$rustup_home" "$root/root/.cargo/bin"
mount --bind "$rustup_home" "$root$rustup_home"
mount -o remount,bind,ro "$root$rustup_home"
cp -a "$cargo_bin/rustup" "$root/root/.cargo/bin/"
for f in "$cargo_bin"/*; do
    if [ -L "$f" ] && [ "$(readlink "$f")" = rustup ]; then
        cp -a "$f" "$root/root/.cargo/bin/"
    fi
done

mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"

inside() {
    chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM=dumb \
        RUSTUP_HOME="$rustup_home" \
        PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        "$@"
}

# --- README's commands ------------------------------------------------------------------------

t0=$SECONDS
say "inside: scripts/demo.sh (log: $work/demo.log)"
if ! inside bash -c 'cd /root/backfilld && scripts/demo.sh' >"$work/demo.log" 2>&1; then
    tail -30 "$work/demo.log" >&2
    die "the demo failed in the fresh root"
fi
timing "scripts/demo.sh (first run)" $((SECONDS - t0))
grep -E '^== final state' "$work/demo.log"

t0=$SECONDS
test_args=(--dbs-only)
[ "$full" -eq 1 ] && test_args=()
say "inside: scripts/test.sh ${test_args[*]} with PostgreSQL on 127.0.0.1:$pg_port and MariaDB on 127.0.0.1:$mysql_port (log: $work/test.log)"
if ! inside env BACKFILLD_TEST_PG_URL="postgresql://postgres@127.0.0.1:$pg_port" \
    BACKFILLD_TEST_MYSQL_URL="mysql://root@127.0.0.1:$mysql_port" \
    bash -c "cd /root/backfilld && scripts/test.sh ${test_args[*]}" >"$work/test.log" 2>&1; then
    tail -30 "$work/test.log" >&2
    die "scripts/test.sh ${test_args[*]} failed in the fresh root"
fi
timing "scripts/test.sh ${test_args[*]}" $((SECONDS - t0))
grep -E '^test-dbs: ' "$work/test.log"

status=0
say "passed; timings in $work/timings.txt"

#!/usr/bin/env bash
# The .rpm installed, upgraded and erased for real by rpm (Debian's), into a scratch root
# (`rpm --root`), with its scriptlets run there: rpm chroots into the root to run them, so the
# root holds a shell and the programs the scriptlets call (systemd-sysusers, systemd-tmpfiles,
# getent) copied from this machine with their libraries. Checked: the files and their modes,
# rpm -V, the user and the spool the scriptlets make, config(noreplace) across an upgrade to a
# newer release, erase (edited config kept as .rpmsave, spool kept).
# Not checked (no Fedora/RHEL root can be built here): dependency resolution (--nodeps: the
# root has no rpm database of libraries), the systemctl calls (no systemd runs in the root),
# and the binary running against Fedora's libraries.
# Usage: packaging/test-rpm-root.sh RELEASE-1.rpm RELEASE-2.rpm   (needs root)
set -euo pipefail

fail() { echo "rpm-root: FAIL: $*" >&2; exit 1; }
check() { local what=$1; shift; if "$@"; then echo "rpm-root: ok: $what"; else fail "$what"; fi; }

[ "$#" -eq 2 ] || fail "usage: packaging/test-rpm-root.sh RELEASE-1.rpm RELEASE-2.rpm"
[ "$(id -u)" -eq 0 ] || fail "needs root (rpm chroots into the scratch root for scriptlets)"
rpm1=$(realpath "$1")
rpm2=$(realpath "$2")

scratch=$(mktemp -d /tmp/backfilld-rpm-root.XXXXXX)
r=$scratch
cleanup() {
    umount "$r/proc" 2>/dev/null || true
    rm -rf --one-file-system "$r"
}
trap cleanup EXIT

# A merged-/usr skeleton with /bin/sh, the scriptlets' programs and their libraries.
mkdir -p "$r/usr/bin" "$r/usr/sbin" "$r/usr/lib" "$r/usr/lib64" "$r/etc" "$r/dev" "$r/run" \
    "$r/tmp" "$r/var/lib/rpm"
ln -s usr/bin "$r/bin"
ln -s usr/sbin "$r/sbin"
ln -s usr/lib "$r/lib"
ln -s usr/lib64 "$r/lib64"
copy_program() {
    local path lib
    path=$(command -v "$1") || fail "$1 not found on this machine"
    path=$(realpath "$path")
    cp --parents "$path" "$r"
    for lib in $(ldd "$path" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }'); do
        cp --parents -L "$lib" "$r" 2>/dev/null || cp --parents -L "$(realpath "$lib")" "$r"
    done
}
for program in sh systemd-sysusers systemd-tmpfiles getent stat chgrp chmod; do
    copy_program "$program"
done
[ -e "$r/usr/bin/sh" ] || ln -s "$(basename "$(realpath "$(command -v sh)")")" "$r/usr/bin/sh"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$r/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
: >"$r/etc/shadow"
: >"$r/etc/gshadow"
chmod 640 "$r/etc/shadow" "$r/etc/gshadow"
mknod -m 666 "$r/dev/null" c 1 3
# systemd-tmpfiles refuses to run without /proc.
mkdir -p "$r/proc"
mount -t proc proc "$r/proc"

rpmr() { rpm --root "$r" --dbpath /var/lib/rpm "$@"; }
mode() { stat -c '%a %u %g' "$r$1"; }
uid_of() { awk -F: -v u="$1" '$1 == u { print $3 }' "$r/etc/passwd"; }

rpmr --initdb
rpmr -i --nodeps "$rpm1"
version=$(rpmr -q --qf '%{VERSION}' backfilld)
check "installed" [ "$(rpmr -q --qf '%{RELEASE}' backfilld)" = 1 ]
# The post-install scriptlet regroups the config to backfilld (checked below): groups aside.
check "rpm -V: files as packaged" rpmr -V --nodeps --nogroup backfilld
check "binary mode" [ "$(mode /usr/bin/backfilld)" = "755 0 0" ]
check "backfillctl mode" [ "$(mode /usr/bin/backfillctl)" = "755 0 0" ]
for f in /usr/lib/systemd/system/backfilld.service /usr/lib/sysusers.d/backfilld.conf \
    /usr/lib/tmpfiles.d/backfilld.conf /usr/share/doc/backfilld/README.md \
    /usr/share/backfilld/airflow/backfilld_plugin.py; do
    check "$f" [ "$(mode "$f")" = "644 0 0" ]
done
check "the packaged binary runs" "$r/usr/bin/backfilld" --version
uid=$(uid_of backfilld)
check "pre-install scriptlet made the user" [ -n "$uid" ]
gid=$(awk -F: '$1 == "backfilld" { print $3 }' "$r/etc/group")
check "and its group" [ -n "$gid" ]
check "config readable by root and the daemon's group only" \
    [ "$(mode /etc/backfilld/backfilld.toml)" = "640 0 $gid" ]
check "post-install scriptlet made the spool" [ "$(mode /var/spool/backfilld)" = "755 $uid $gid" ]
check "incoming is sticky and unlistable" [ "$(mode /var/spool/backfilld/incoming)" = "1733 $uid $gid" ]
for d in active accepted rejected; do
    check "$d is private" [ "$(mode /var/spool/backfilld/$d)" = "700 $uid $gid" ]
done
check "public" [ "$(mode /var/spool/backfilld/public)" = "755 $uid $gid" ]

# A user edit survives the upgrade to a newer release.
echo '# edited by the operator' >>"$r/etc/backfilld/backfilld.toml"
touch "$r/var/spool/backfilld/accepted/keep.toml"
rpmr -U --nodeps "$rpm2"
check "upgraded" [ "$(rpmr -q --qf '%{VERSION}-%{RELEASE}' backfilld)" = "$version-2" ]
check "edited config kept on upgrade" grep -q 'edited by the operator' "$r/etc/backfilld/backfilld.toml"
check "spool kept on upgrade" test -f "$r/var/spool/backfilld/accepted/keep.toml"

# Erase: files gone, the edited config saved as .rpmsave, spool and user kept.
rpmr -e --nodeps backfilld
check "erased" bash -c "! rpm --root '$r' --dbpath /var/lib/rpm -q backfilld >/dev/null"
check "binaries removed" test ! -e "$r/usr/bin/backfilld" -a ! -e "$r/usr/bin/backfillctl"
check "edited config saved as .rpmsave" grep -q 'edited by the operator' "$r/etc/backfilld/backfilld.toml.rpmsave"
check "spool kept on erase" test -f "$r/var/spool/backfilld/accepted/keep.toml"
echo "rpm-root: all checks passed"

#!/usr/bin/env bash
# Build the .deb and .rpm and check them on this machine: the .deb is installed, upgraded with
# a user-edited config, removed and purged; the .rpm's files, scripts and dependencies are read
# with `rpm -qp`, then it is installed, upgraded and erased with its scriptlets in a scratch
# root (packaging/test-rpm-root.sh). Installs a system package: run it only on a throwaway
# machine (CI) or with BACKFILLD_TEST_PACKAGES=1. Needs root, cargo-deb, cargo-generate-rpm,
# dpkg-dev, rpm and systemd (scripts/setup-host.sh packages installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "packages: FAIL: $*" >&2; exit 1; }
check() { local what=$1; shift; if "$@"; then echo "packages: ok: $what"; else fail "$what"; fi; }
mode() { stat -c '%a %U %G' "$1"; }

[ "$(id -u)" -eq 0 ] || fail "needs root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

cargo build --release --bins
cargo deb --no-build --deb-revision 1 -o target/debian/backfilld-1.deb
cargo deb --no-build --deb-revision 2 -o target/debian/backfilld-2.deb
cargo generate-rpm -o target/generate-rpm/backfilld.rpm
cargo generate-rpm --set-metadata 'release = "2"' -o target/generate-rpm/backfilld-2.rpm

dpkg -P backfilld >/dev/null 2>&1 || true
dpkg -i target/debian/backfilld-1.deb
check "binaries installed" test -x /usr/bin/backfilld -a -x /usr/bin/backfillctl
check "binary mode" [ "$(mode /usr/bin/backfilld)" = "755 root root" ]
check "Airflow plugin shipped, not installed into Airflow" \
    [ "$(mode /usr/share/backfilld/airflow/backfilld_plugin.py)" = "644 root root" ]
check "config installed" test -f /etc/backfilld/backfilld.toml
check "config is a conffile" grep -qx /etc/backfilld/backfilld.toml /var/lib/dpkg/info/backfilld.conffiles
check "config readable by the daemon's group only" [ "$(mode /etc/backfilld/backfilld.toml)" = "640 root backfilld" ]
unit=$(dpkg -L backfilld | grep -E 'systemd/system/backfilld.service$')
check "unit installed" test -f "$unit"
check "unit verifies" systemd-analyze verify "$unit"
check "user exists" getent passwd backfilld
check "group exists" getent group backfilld
check "spool root" [ "$(mode /var/spool/backfilld)" = "755 backfilld backfilld" ]
check "incoming is sticky and unlistable" [ "$(mode /var/spool/backfilld/incoming)" = "1733 backfilld backfilld" ]
for d in active accepted rejected; do
    check "$d is private" [ "$(mode /var/spool/backfilld/$d)" = "700 backfilld backfilld" ]
done
check "public" [ "$(mode /var/spool/backfilld/public)" = "755 backfilld backfilld" ]
check "the installed binary runs" /usr/bin/backfilld --version
dpkg -s backfilld | grep -E '^Depends:' | grep -q libpq5 || fail "Depends lacks libpq5"
echo "packages: ok: depends $(dpkg -s backfilld | sed -n 's/^Depends: //p')"

# A user edit survives the upgrade to a newer revision.
echo '# edited by the operator' >> /etc/backfilld/backfilld.toml
touch /var/spool/backfilld/accepted/keep.toml
dpkg -i target/debian/backfilld-2.deb
check "upgraded" [ "$(dpkg-query -W -f '${Version}' backfilld)" = "$version-2" ]
check "edited config kept on upgrade" grep -q 'edited by the operator' /etc/backfilld/backfilld.toml

# Remove keeps config and spool; purge removes both.
dpkg -r backfilld
check "binaries removed" test ! -e /usr/bin/backfilld
check "config kept on remove" grep -q 'edited by the operator' /etc/backfilld/backfilld.toml
check "spool kept on remove" test -f /var/spool/backfilld/accepted/keep.toml
dpkg -P backfilld
check "config removed on purge" test ! -e /etc/backfilld/backfilld.toml
check "spool removed on purge" test ! -e /var/spool/backfilld

# The rpm: files with modes, config(noreplace), scriptlets, dependencies.
rpm=target/generate-rpm/backfilld.rpm
rpm -qp --qf '%{NAME} %{VERSION}\n' "$rpm"
files=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$rpm")
echo "$files"
for f in /usr/bin/backfilld /usr/bin/backfillctl /etc/backfilld/backfilld.toml \
    /usr/lib/systemd/system/backfilld.service /usr/lib/sysusers.d/backfilld.conf \
    /usr/lib/tmpfiles.d/backfilld.conf; do
    check "rpm has $f" grep -q " $f$" <<<"$files"
done
check "rpm binary is executable" grep -q '^-rwxr-xr-x /usr/bin/backfilld$' <<<"$files"
check "rpm config is not world-readable" grep -q '^-rw-r----- /etc/backfilld/backfilld.toml$' <<<"$files"
check "rpm config is noreplace" bash -c "rpm -qp --configfiles '$rpm' | grep -qx /etc/backfilld/backfilld.toml"
scripts=$(rpm -qp --scripts "$rpm")
for s in preinstall postinstall preuninstall postuninstall; do
    check "rpm has a $s scriptlet" grep -q "^$s scriptlet" <<<"$scripts"
done
check "rpm scriptlets regroup the config" grep -q 'chgrp backfilld' <<<"$scripts"
check "rpm scriptlets create the user and the spool" bash -c "grep -q systemd-sysusers <<<\"\$0\" && grep -q systemd-tmpfiles <<<\"\$0\"" "$scripts"
requires=$(rpm -qpR "$rpm")
echo "$requires"
check "rpm requires libpq" grep -q 'libpq.so.5' <<<"$requires"
packaging/test-rpm-root.sh "$rpm" target/generate-rpm/backfilld-2.rpm
echo "packages: all checks passed"

#!/usr/bin/env bash
# The one place that knows what this machine needs: scripts/demo.sh, scripts/test.sh,
# scripts/fuzz.sh and .ci/run all call it. It checks the system packages for the given
# purposes and installs the missing ones with apt-get (Debian, Ubuntu) or dnf (Fedora, RHEL,
# Rocky; Debian's names are mapped); when not root it prints the one command to run and stops.
# It checks the Rust toolchain (a toolchain is never downloaded here: it says how to get one)
# and installs the cargo tools a purpose needs with `cargo install`.
#
# Usage: scripts/setup-host.sh PURPOSE...
#   demo      build the binaries, build the Airflow venvs (headers, pkg-config, python3-venv)
#   test      demo + Chromium/chromedriver (browser test), nginx (reverse-proxy test), the
#             PostgreSQL and MariaDB servers and clients scripts/test.sh runs, OpenLDAP's
#             slapd and clients (LDAP sign-in test) and the headers python-ldap builds with
#   packages  packaging/test-packages.sh: dpkg-dev, rpm, systemd, cargo-deb, cargo-generate-rpm
#   fuzz      scripts/fuzz.sh: a C++ compiler (libFuzzer), cargo-fuzz
#   ci        all of the above, and rustfmt and clippy
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "setup-host: $*" >&2; exit 1; }
[ "$#" -gt 0 ] || die "usage: scripts/setup-host.sh demo|test|packages|fuzz|ci ..."

# What each purpose needs, in Debian's package names.
build_pkgs=(gcc libc6-dev pkg-config cmake ca-certificates libpq-dev libmariadb-dev libmariadb-dev-compat)
python_pkgs=(python3 python3-venv python3-dev sqlite3)
test_pkgs=(chromium chromium-driver nginx postgresql postgresql-client mariadb-server mariadb-client
    slapd ldap-utils libldap-dev libsasl2-dev)
packaging_pkgs=(dpkg-dev rpm systemd)
fuzz_pkgs=(g++)

wanted=()
cargo_tools=()
rust_components=()
for purpose in "$@"; do
    case "$purpose" in
        demo) wanted+=("${build_pkgs[@]}" "${python_pkgs[@]}") ;;
        test) wanted+=("${build_pkgs[@]}" "${python_pkgs[@]}" "${test_pkgs[@]}") ;;
        packages)
            wanted+=("${build_pkgs[@]}" "${packaging_pkgs[@]}")
            cargo_tools+=(cargo-deb cargo-generate-rpm)
            ;;
        fuzz)
            wanted+=("${build_pkgs[@]}" "${fuzz_pkgs[@]}")
            cargo_tools+=(cargo-fuzz)
            ;;
        ci)
            wanted+=("${build_pkgs[@]}" "${python_pkgs[@]}" "${test_pkgs[@]}" "${packaging_pkgs[@]}" "${fuzz_pkgs[@]}")
            cargo_tools+=(cargo-deb cargo-generate-rpm cargo-fuzz)
            rust_components+=(rustfmt clippy)
            ;;
        *) die "unknown purpose '$purpose' (demo, test, packages, fuzz, ci)" ;;
    esac
done

# The distribution's family, from os-release.
os_id=""
os_like=""
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    os_id=$(. /etc/os-release && echo "${ID:-}")
    # shellcheck disable=SC1091
    os_like=$(. /etc/os-release && echo "${ID_LIKE:-}")
fi
if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
    manager=apt
elif command -v dnf >/dev/null 2>&1; then
    manager=dnf
else
    die "neither apt-get nor dnf found: install by hand the equivalents of: ${wanted[*]}"
fi

# Debian's package name -> this distribution's (empty: nothing to install there).
native_name() {
    local pkg=$1
    if [ "$manager" = dnf ]; then
        case "$pkg" in
            libc6-dev) echo glibc-devel ;;
            g++) echo gcc-c++ ;;
            pkg-config) echo pkgconf-pkg-config ;;
            libpq-dev) echo libpq-devel ;;
            libmariadb-dev) echo mariadb-connector-c-devel ;;
            libmariadb-dev-compat) ;;
            python3-venv) ;;
            python3-dev) echo python3-devel ;;
            sqlite3) echo sqlite ;;
            chromium-driver) echo chromedriver ;;
            postgresql) echo postgresql-server ;;
            postgresql-client) echo postgresql ;;
            mariadb-client) echo mariadb ;;
            slapd) echo openldap-servers ;;
            ldap-utils) echo openldap-clients ;;
            libldap-dev) echo openldap-devel ;;
            libsasl2-dev) echo cyrus-sasl-devel ;;
            *) echo "$pkg" ;;
        esac
    elif [ "$os_id" = ubuntu ] || [[ " $os_like " == *" ubuntu "* ]]; then
        case "$pkg" in
            chromium) echo chromium-browser ;;
            chromium-driver) echo chromium-chromedriver ;;
            *) echo "$pkg" ;;
        esac
    else
        echo "$pkg"
    fi
}

is_installed() {
    if [ "$manager" = apt ]; then
        dpkg-query -W -f '${db:Status-Abbrev}\n' "$1" 2>/dev/null | grep -q '^ii'
    else
        rpm -q "$1" >/dev/null 2>&1
    fi
}

missing=()
for pkg in "${wanted[@]}"; do
    name=$(native_name "$pkg")
    [ -n "$name" ] || continue
    [[ " ${missing[*]} " == *" $name "* ]] && continue
    is_installed "$name" || missing+=("$name")
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$manager" = apt ]; then
        install_cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
    else
        install_cmd="dnf install -y ${missing[*]}"
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-host: missing system packages: ${missing[*]}" >&2
        echo "setup-host: run this once as root, then run the same command again:" >&2
        if [ "$manager" = apt ]; then
            echo "  sudo sh -c '$install_cmd'" >&2
        else
            echo "  sudo $install_cmd" >&2
        fi
        exit 1
    fi
    echo "setup-host: installing ${missing[*]}"
    if [ "$manager" = apt ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        # RHEL and Rocky have Chromium and chromedriver in EPEL only.
        dnf install -y -q "${missing[@]}" ||
            die "dnf failed; on RHEL/Rocky enable EPEL first (dnf install epel-release) for chromium"
    fi
fi

# The Rust toolchain: the version Cargo.toml asks for, from rustup (distributions ship older).
needed_rust=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
rust_hint="install Rust $needed_rust or newer with rustup (https://rustup.rs): curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy; then open a new shell (or: . \"\$HOME/.cargo/env\")"
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && die "cargo is in ~/.cargo/bin but not on PATH: run . \"\$HOME/.cargo/env\" (or open a new login shell)"
    die "cargo not found: $rust_hint"
fi
have_rust=$(rustc --version | awk '{print $2}')
lowest=$(printf '%s\n%s\n' "$needed_rust" "${have_rust%%-*}" | sort -V | head -1)
[ "$lowest" = "$needed_rust" ] || die "rustc $have_rust is older than $needed_rust: $rust_hint"
for component in "${rust_components[@]}"; do
    case "$component" in
        rustfmt) probe=fmt ;;
        *) probe=$component ;;
    esac
    cargo "$probe" --version >/dev/null 2>&1 ||
        die "cargo $probe not found: rustup component add $component"
done

# Cargo tools, from crates.io into ~/.cargo/bin (no root needed).
for tool in "${cargo_tools[@]}"; do
    [[ " ${done_tools:-} " == *" $tool "* ]] && continue
    done_tools="${done_tools:-} $tool"
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup-host: cargo install $tool"
        cargo install --locked --quiet "$tool"
    fi
done

# shellcheck shell=bash
# Sourced by scripts/test.sh: the PostgreSQL and MariaDB servers the tests use.
#
# The tests read the servers' addresses from BACKFILLD_TEST_PG_URL and BACKFILLD_TEST_MYSQL_URL
# (tests/it/support.rs; defaults postgresql://postgres@127.0.0.1:5432 and
# mysql://root@127.0.0.1:3306). test_dbs_up finds a server for each:
# - a server at the given URL (or at the default) that accepts the tests' login is used as is;
# - with no URL given and none usable at the default (nothing there, or a distribution's
#   service that refuses password-less logins), a server of our own runs on 127.0.0.1:55432
#   (PostgreSQL) or 127.0.0.1:53306 (MariaDB);
# - with a URL given on 127.0.0.1/localhost and nothing answering there, a server of our own
#   runs on that port.
# Our own servers keep their data under target/test-dbs/ (reused by the next run), log to
# target/test-dbs/<engine>/server.log, and are stopped by test_dbs_down. Both URLs are exported.

test_dbs_dir="$(pwd)/target/test-dbs"
test_dbs_started=()

tdb_say() { echo "test-dbs: $*"; }
tdb_die() { echo "test-dbs: $*" >&2; exit 1; }

# Split URL into tdb_user, tdb_host, tdb_port (default $2).
tdb_parse() {
    local re='^[a-z+]+://([^:@/]+)(:[^@/]*)?@([^:/]+)(:([0-9]+))?/?$'
    [[ "$1" =~ $re ]] || tdb_die "cannot read '$1' (expected scheme://user@host:port)"
    tdb_user=${BASH_REMATCH[1]}
    tdb_host=${BASH_REMATCH[3]}
    tdb_port=${BASH_REMATCH[5]:-$2}
}

tdb_answers() {
    timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

tdb_loopback() {
    [ "$1" = 127.0.0.1 ] || [ "$1" = localhost ]
}

# The account servers of our own run as: ourselves, or when root a system user
# (initdb refuses root).
tdb_run_user() {
    if [ "$(id -u)" -ne 0 ]; then
        id -un
    elif getent passwd "$1" >/dev/null; then
        echo "$1"
    else
        echo nobody
    fi
}

tdb_as() {
    local user=$1; shift
    if [ "$user" = "$(id -un)" ]; then
        "$@"
    else
        runuser -u "$user" -- "$@"
    fi
}

# A directory for an engine's server, owned by the account it runs as. Under target/ when
# that account can reach it, else under /tmp.
tdb_server_dir() {
    local engine=$1 user=$2 dir="$test_dbs_dir/$1"
    mkdir -p "$dir"
    if [ "$user" != "$(id -un)" ]; then
        chown "$user:" "$dir" 2>/dev/null || chown "$user" "$dir"
        if ! runuser -u "$user" -- test -w "$dir"; then
            dir="/tmp/backfilld-test-dbs-$(echo "$test_dbs_dir" | md5sum | cut -c1-8)/$engine"
            mkdir -p "$dir"
            chmod 711 "$(dirname "$dir")"
            chown "$user:" "$dir" 2>/dev/null || chown "$user" "$dir"
        fi
    fi
    echo "$dir"
}

# --- PostgreSQL -------------------------------------------------------------------------------

tdb_pg_usable() {
    PGCONNECT_TIMEOUT=5 psql -w -Atq "$1/postgres" -c 'select 1' >/dev/null 2>&1
}

tdb_pg_bin() {
    local d
    # Debian keeps one directory per major version; Fedora puts the programs on PATH.
    d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        echo "$d"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    else
        tdb_die "PostgreSQL server programs (initdb, pg_ctl) not found: scripts/setup-host.sh test installs them"
    fi
}

tdb_pg_start() {
    local port=$1 bin user dir
    bin=$(tdb_pg_bin)
    user=$(tdb_run_user postgres)
    dir=$(tdb_server_dir postgresql "$user")
    local major
    major=$("$bin/initdb" --version | grep -oE '[0-9]+' | head -1)
    if [ -f "$dir/data/PG_VERSION" ] && [ "$(cat "$dir/data/PG_VERSION")" != "$major" ]; then
        rm -rf "$dir/data"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        tdb_say "PostgreSQL: initdb in $dir/data"
        tdb_as "$user" "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync \
            >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; tdb_die "initdb failed"; }
    fi
    tdb_say "PostgreSQL: starting our own on 127.0.0.1:$port (log: $dir/server.log)"
    tdb_as "$user" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off" \
        start >/dev/null || { tail -20 "$dir/server.log" >&2; tdb_die "PostgreSQL did not start"; }
    test_dbs_started+=("pg:$bin:$user:$dir")
}

tdb_pg_stop() {
    local bin=$1 user=$2 dir=$3
    tdb_say "PostgreSQL: stopping our own"
    tdb_as "$user" "$bin/pg_ctl" -D "$dir/data" -w -m fast stop >/dev/null 2>&1 || true
}

# --- MariaDB ----------------------------------------------------------------------------------

tdb_mysql_client() {
    if command -v mariadb >/dev/null 2>&1; then echo mariadb; else echo mysql; fi
}

# $1 = URL; the rest: mariadb client arguments.
tdb_mysql() {
    local url=$1; shift
    tdb_parse "$url" 3306
    local pass=${url#*://}
    pass=${pass%%@*}
    case "$pass" in *:*) pass=${pass#*:} ;; *) pass="" ;; esac
    MYSQL_PWD="$pass" "$(tdb_mysql_client)" --no-defaults --protocol=TCP -h "$tdb_host" \
        -P "$tdb_port" -u "$tdb_user" --connect-timeout=5 "$@"
}

tdb_mysql_usable() {
    tdb_mysql "$1" -e 'select 1' >/dev/null 2>&1
}

tdb_find() {
    local name
    for name in "$@"; do
        for d in /usr/sbin /usr/libexec /usr/bin /usr/local/sbin /usr/local/bin; do
            [ -x "$d/$name" ] && { echo "$d/$name"; return; }
        done
    done
    tdb_die "none of $* found: scripts/setup-host.sh test installs the MariaDB server"
}

tdb_mysql_start() {
    local port=$1 user dir daemon install
    daemon=$(tdb_find mariadbd mysqld)
    install=$(tdb_find mariadb-install-db mysql_install_db)
    user=$(tdb_run_user mysql)
    dir=$(tdb_server_dir mariadb "$user")
    local as_user=()
    [ "$(id -u)" -eq 0 ] && as_user=(--user="$user")
    if [ ! -d "$dir/data/mysql" ]; then
        tdb_say "MariaDB: mariadb-install-db in $dir/data"
        "$install" --no-defaults --datadir="$dir/data" "${as_user[@]}" \
            --auth-root-authentication-method=normal --skip-name-resolve \
            >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; tdb_die "mariadb-install-db failed"; }
    fi
    tdb_say "MariaDB: starting our own on 127.0.0.1:$port (log: $dir/server.log)"
    rm -f "$dir/server.log"
    "$daemon" --no-defaults --datadir="$dir/data" "${as_user[@]}" --port="$port" \
        --bind-address=127.0.0.1 --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" \
        --log-error="$dir/server.log" --skip-name-resolve --skip-log-bin \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        --innodb-flush-log-at-trx-commit=2 --max-connections=151 </dev/null >/dev/null 2>&1 &
    local pid=$!
    test_dbs_started+=("mysql:$pid:$dir")
    local url="mysql://root@127.0.0.1:$port"
    for _ in $(seq 1 120); do
        tdb_mysql_usable "$url" && break
        kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/server.log" >&2; tdb_die "MariaDB exited"; }
        sleep 0.5
    done
    tdb_mysql_usable "$url" || { tail -20 "$dir/server.log" >&2; tdb_die "MariaDB did not answer"; }
    tdb_mysql "$url" -e 'CREATE DATABASE IF NOT EXISTS test'
}

tdb_mysql_stop() {
    local pid=$1 dir=$2
    tdb_say "MariaDB: stopping our own"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# --- both -------------------------------------------------------------------------------------

# $1 = engine (pg|mysql), $2 = name of the URL variable, $3 = default URL, $4 = default port
# of the scheme, $5 = the port of our own server when no URL was given.
tdb_up_one() {
    local engine=$1 var=$2 default=$3 scheme_port=$4 own_port=$5
    local url=${!var:-} given=1 label
    [ "$engine" = pg ] && label=PostgreSQL || label=MariaDB
    if [ -z "$url" ]; then
        url=$default
        given=0
    fi
    url=${url%/}
    tdb_parse "$url" "$scheme_port"
    if "tdb_${engine}_usable" "$url"; then
        tdb_say "$label: using the server at $tdb_host:$tdb_port"
    else
        local port=$tdb_port
        if [ "$given" -eq 0 ]; then
            tdb_answers "$tdb_host" "$tdb_port" &&
                tdb_say "$label: the server at $tdb_host:$tdb_port refuses the tests' login ($url); using one of our own"
            port=$own_port
            url="${url%%://*}://$tdb_user@127.0.0.1:$port"
        elif ! tdb_loopback "$tdb_host"; then
            tdb_die "$label at $url (from $var) is not usable"
        fi
        if tdb_answers 127.0.0.1 "$port"; then
            "tdb_${engine}_usable" "$url" ||
                tdb_die "$label: 127.0.0.1:$port answers but refuses $url; stop it or set $var"
            tdb_say "$label: using the server at 127.0.0.1:$port"
        else
            "tdb_${engine}_start" "$port"
        fi
    fi
    export "$var=$url"
}

# Find or start both servers; export their URLs.
test_dbs_up() {
    tdb_up_one pg BACKFILLD_TEST_PG_URL "postgresql://postgres@127.0.0.1:5432" 5432 55432
    tdb_up_one mysql BACKFILLD_TEST_MYSQL_URL "mysql://root@127.0.0.1:3306" 3306 53306
}

# Stop the servers test_dbs_up started (none when it found running ones).
test_dbs_down() {
    local entry kind a b c
    for entry in "${test_dbs_started[@]}"; do
        IFS=: read -r kind a b c <<<"$entry"
        case "$kind" in
            pg) tdb_pg_stop "$a" "$b" "$c" ;;
            mysql) tdb_mysql_stop "$a" "$b" ;;
        esac
    done
    test_dbs_started=()
}

# What the tests do first on each server: create and drop a database.
test_dbs_check() {
    local db
    db="bfd_dbcheck_$$"
    psql -w -Atq "$BACKFILLD_TEST_PG_URL/postgres" -c "CREATE DATABASE $db" -c "DROP DATABASE $db"
    tdb_say "PostgreSQL at $BACKFILLD_TEST_PG_URL: create/drop database ok"
    tdb_mysql "$BACKFILLD_TEST_MYSQL_URL" -e \
        "CREATE DATABASE $db CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; DROP DATABASE $db"
    tdb_say "MariaDB at $BACKFILLD_TEST_MYSQL_URL: create/drop database ok"
}

#!/usr/bin/env bash
# The external servers eventops' tests talk to: MariaDB, PostgreSQL and sshd on loopback, and
# the Docker parts (test images, loopback registries, TCP and namespace access to the daemon).
#
#   scripts/services.sh           install (if absent) and start them; ensure the test accounts
#   scripts/services.sh --env     the same, then print `export NAME=value` lines on stdout:
#                                   eval "$(scripts/services.sh --env)"
#   . scripts/services.sh         the same, and export the variables into the calling shell
#                                 (arguments are ignored when sourced)
#   scripts/services.sh --status  say what is running, start nothing
#   scripts/services.sh --stop    stop the daemons this script started (by their pid files)
#   scripts/services.sh --reset   stop them, wipe their data, start afresh
#
# Why throwaway data dirs instead of Debian's own clusters: nothing is started by systemd
# here and processes do not outlive a session, so every run may find the servers stopped
# (with stale pid/socket files). Owning the data dirs, configs and logs under one state
# dir makes (re)starting deterministic and lets durability be traded for speed. The data
# is disposable: a data dir that fails to start is wiped and initialised again, once.
#
# Accounts: eventops/eventops, allowed to create and drop databases (tests make their own
# eo_test_* databases and drop them). sshd: the local user eotest, with a password
# generated once (EVENTOPS_TEST_SSH_PASSWORD) or the throwaway key EVENTOPS_TEST_SSH_KEY.
# Servers listen on 127.0.0.1 only.
#
# Docker: the daemon itself is not started here (the machine starts it); when it does not
# answer, this says so loudly, exports no EVENTOPS_TEST_DOCKER_* variables (the Docker tests
# then skip), and fails only with EVENTOPS_TEST_REQUIRE_ALL=1. When it answers: the images
# eventops-test/busybox:1 and eventops-test/nosh:1 (built locally, no network), registries on
# 127.0.0.1:5000 (open) and :5001 (htpasswd login) holding eventops-test/busybox:1 but with
# no local tag of theirs (so tests pull for real), a socat from 127.0.0.1:23750 to the socket,
# one inside the eo-behind namespace on ITS 127.0.0.1:2375, and the sshd user in the socket's
# group (SSH-hop tests forward TCP or the unix socket through the test sshd). Also the image
# eventops-test/curl:1 (the busybox one plus the host's curl and its libraries).
#
# S3: no server is left running; tests start their own s3s-fs (a real S3 server over a folder,
# checking SigV4 and presigned URLs) at EVENTOPS_TEST_S3_HOST, the host side of eo-behind
# (10.231.0.1), the one address the host, the namespace and containers all reach. This
# builds the binary once per machine (`cargo install s3s-fs` into the CI cache, minutes) and
# checks it with a throwaway instance; without cargo, or when a check fails, it says so
# loudly and exports no EVENTOPS_TEST_S3* variables (the S3 tests then skip).
#
# Environment knobs (all optional):
#   EVENTOPS_SERVICES_DIR          state dir (default /tmp/eventops-services)
#   EVENTOPS_SERVICES_TIMEOUT      seconds to wait for each daemon (default 90)
#   EVENTOPS_SERVICES_MYSQL_PORT   default 3306
#   EVENTOPS_SERVICES_PG_PORT      default 5432
#   EVENTOPS_SERVICES_SSH_PORT     default 2222
#   EVENTOPS_SERVICES_SSH_USER     the throwaway sshd login user (default eotest)
#   EVENTOPS_SERVICES_DOCKER_SOCKET  the daemon's socket (default /var/run/docker.sock)
#   EVENTOPS_SERVICES_DOCKER_TCP_PORT  default 23750
#   EVENTOPS_SERVICES_REGISTRY_PORT  default 5000 (the login-protected one: this + 1)
#   EVENTOPS_CI_CACHE              as in .ci/run (default /var/cache/eventops-ci): s3s-fs is
#                                  installed to its tools/bin
#
# Everything this script says goes to stderr; with --env stdout carries only the exports.

eo_svc_vars() {
    EO_STATE=${EVENTOPS_SERVICES_DIR:-/tmp/eventops-services}
    EO_TIMEOUT=${EVENTOPS_SERVICES_TIMEOUT:-90}
    EO_MY_PORT=${EVENTOPS_SERVICES_MYSQL_PORT:-3306}
    EO_PG_PORT=${EVENTOPS_SERVICES_PG_PORT:-5432}
    EO_SSH_PORT=${EVENTOPS_SERVICES_SSH_PORT:-2222}
    EO_USER=eventops
    EO_PASS=eventops
    EO_MY_DIR=$EO_STATE/mariadb
    EO_PG_DIR=$EO_STATE/postgres
    EO_SSH_DIR=$EO_STATE/sshd
    EO_SSH_USER=${EVENTOPS_SERVICES_SSH_USER:-eotest}
    EO_BEHIND_NS=eo-behind
    EO_BEHIND_SSH_PORT=2223
    EO_BEHIND_HOST_ADDR=10.231.0.1
    EO_BEHIND_NS_ADDR=10.231.0.2
    EO_DOCKER_SOCK=${EVENTOPS_SERVICES_DOCKER_SOCKET:-/var/run/docker.sock}
    EO_DOCKER_DIR=$EO_STATE/docker
    EO_DOCKER_TCP_PORT=${EVENTOPS_SERVICES_DOCKER_TCP_PORT:-23750}
    EO_DOCKER_BEHIND_PORT=2375
    EO_REG_PORT=${EVENTOPS_SERVICES_REGISTRY_PORT:-5000}
    EO_REG_AUTH_PORT=$((EO_REG_PORT + 1))
    EO_REG_USER=eotest
    EO_IMG_BUSYBOX=eventops-test/busybox:1
    EO_IMG_NOSH=eventops-test/nosh:1
    EO_IMG_NOBODY=eventops-test/nobody:1
    EO_IMG_CURL=eventops-test/curl:1
    # The CI cache (as in .ci/run): tools built once per machine live under it.
    EO_CI_CACHE=${EVENTOPS_CI_CACHE:-/var/cache/eventops-ci}
    EO_S3S_VERSION=0.14.1
    EO_S3S_FS=$EO_CI_CACHE/tools/bin/s3s-fs
    # schemathesis (PyPI) in a virtualenv of its own, for the OpenAPI conformance test
    EO_ST_VERSION=4.32.5
    EO_ST_VENV=$EO_CI_CACHE/tools/schemathesis
    EO_S3_DIR=$EO_STATE/s3
}

eo_log() { printf '[services %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
eo_die() {
    eo_log "ERROR: $*"
    exit 1
}

# Print the tail of a daemon's log, for a failure message.
eo_show_log() {
    local log=$1
    if [[ -s $log ]]; then
        eo_log "---- last lines of $log ----"
        tail -n 60 "$log" >&2 || true
        eo_log "---- end of $log ----"
    else
        eo_log "(no log at $log)"
    fi
}

# True when $1 is the pid of a live process whose name starts with $2.
eo_pid_is() {
    local pid=$1 name=$2 comm
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name"* ]]
}

# The pid in a pid file's first line, or nothing (never fails: callers assign it under set -e).
eo_pidfile_pid() {
    if [[ -r $1 ]]; then head -n1 "$1" 2>/dev/null | tr -dc '0-9' || true; fi
}

# eo_wait_ready WHAT ALIVE_CHECK PROBE... : poll PROBE until it succeeds; fail as soon as
# ALIVE_CHECK (a command, or "" for none) says the daemon died, or after EO_TIMEOUT seconds.
eo_wait_ready() {
    local what=$1 alive=$2
    shift 2
    local deadline=$((SECONDS + EO_TIMEOUT))
    until "$@"; do
        if [[ -n $alive ]] && ! $alive; then
            eo_log "$what: the daemon exited during start-up"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            eo_log "$what: not ready after ${EO_TIMEOUT}s"
            return 1
        fi
        sleep 0.2
    done
}

# A TCP port on 127.0.0.1 accepts connections (no client needed).
eo_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------

eo_install_packages() {
    # socat .. apache2-utils: the Docker parts (the images' busybox, registries, htpasswd);
    # openssl: certificates for a TLS front of the Kubernetes test double; chromium and its
    # driver: the web console's browser tests; prometheus: promtool checks /metrics;
    # python3-venv: schemathesis (PyPI) fuzzes the OpenAPI document; haproxy: the load balancer
    # in front of the servers-in-containers tests (started by the tests, not here)
    local want=(mariadb-server mariadb-client postgresql postgresql-client openssh-server openssh-client curl iproute2
        socat docker-registry busybox-static dash apache2-utils wget openssl
        chromium chromium-driver prometheus python3 python3-venv haproxy)
    local missing=() p
    for p in "${want[@]}"; do
        [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $EUID -eq 0 ]] || eo_die "need root to install: ${missing[*]}"
    eo_log "installing from Debian: ${missing[*]}"
    # Keep the packages' maintainer scripts from starting their own daemons on 3306/5432:
    # this script starts its own. Docker images usually ship such a policy-rc.d already.
    local policy=/usr/sbin/policy-rc.d added=0 rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    {
        apt-get -q -o DPkg::Lock::Timeout=600 update &&
            apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends "${missing[@]}"
    } </dev/null >&2 || rc=$?
    if ((added)); then
        rm -f "$policy"
        trap - EXIT
    fi
    ((rc == 0)) || eo_die "apt-get failed (exit $rc)"
}

# ---------------------------------------------------------------------------------------
# MariaDB
# ---------------------------------------------------------------------------------------

eo_my_sock() { echo "$EO_MY_DIR/run/mysqld.sock"; }
eo_my_pidfile() { echo "$EO_MY_DIR/run/mariadbd.pid"; }
eo_my_log() { echo "$EO_MY_DIR/mariadb.log"; }
eo_my_alive() { eo_pid_is "$(eo_pidfile_pid "$(eo_my_pidfile)")" mariadbd || eo_pid_is "$(eo_pidfile_pid "$(eo_my_pidfile)")" mysqld; }
# A MariaDB/MySQL server answers on the TCP port. mariadb-admin ping exits 0 even on
# "access denied", but not on "host not allowed" (1130: no account for 127.0.0.1 yet,
# as on a fresh data dir with --skip-name-resolve), so an answer naming either counts.
eo_my_ping() {
    local out
    out=$(mariadb-admin --no-defaults --protocol=tcp -h 127.0.0.1 -P "$EO_MY_PORT" \
        --connect-timeout=2 -u eo-probe ping 2>&1) && return 0
    [[ $out == *" 1130 "* || $out == *" 1045 "* || $out == *"Access denied"* || $out == *"is not allowed to connect"* ]]
}

eo_my_init() {
    local data=$EO_MY_DIR/data
    eo_log "mariadb: initialising a data dir in $data"
    rm -rf "$data"
    install -d -o mysql -g mysql -m 750 "$data"
    mariadb-install-db --no-defaults --user=mysql --datadir="$data" \
        --auth-root-authentication-method=socket --skip-test-db \
        </dev/null >>"$(eo_my_log)" 2>&1 9>&- || {
        eo_show_log "$(eo_my_log)"
        eo_die "mariadb: mariadb-install-db failed"
    }
}

# Launch mariadbd detached (own session, no inherited fds) and wait until it answers.
eo_my_launch() {
    local mariadbd run=$EO_MY_DIR/run log
    log=$(eo_my_log)
    mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    install -d -o mysql -g mysql -m 755 "$run"
    rm -f "$(eo_my_sock)" "$(eo_my_sock).lock" "$(eo_my_pidfile)"
    touch "$log" && chown mysql:mysql "$log"
    eo_log "mariadb: starting on 127.0.0.1:$EO_MY_PORT"
    # Test server: throwaway data, so speed beats durability (no flush per commit, no
    # doublewrite). --no-defaults: /etc/mysql's config is the system server's, not ours.
    setsid "$mariadbd" --no-defaults --user=mysql \
        --datadir="$EO_MY_DIR/data" --socket="$(eo_my_sock)" --pid-file="$(eo_my_pidfile)" \
        --port="$EO_MY_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --log-error="$log" \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --sync-binlog=0 \
        --innodb-buffer-pool-size=128M --max-connections=300 \
        </dev/null >>"$log" 2>&1 9>&- &
    EO_MY_LAUNCHED_PID=$!
    # mariadbd writes its pid file a little after start; until then trust $!.
    eo_wait_ready mariadb eo_my_launched_alive eo_my_ping
}
eo_my_launched_alive() { eo_pid_is "${EO_MY_LAUNCHED_PID:-}" mariadbd; }

eo_my_start() {
    install -d -m 755 "$EO_STATE" "$EO_MY_DIR"
    if eo_my_alive; then
        eo_wait_ready mariadb eo_my_alive eo_my_ping || {
            eo_show_log "$(eo_my_log)"
            eo_die "mariadb: running (pid $(eo_pidfile_pid "$(eo_my_pidfile)")) but not answering"
        }
        return 0
    fi
    if eo_my_ping; then
        eo_log "mariadb: something not started by this script already answers on 127.0.0.1:$EO_MY_PORT; using it"
        return 0
    fi
    eo_port_open "$EO_MY_PORT" && eo_die "mariadb: port $EO_MY_PORT is taken by something that is not MariaDB"
    local fresh=0
    if [[ ! -d $EO_MY_DIR/data/mysql ]]; then
        eo_my_init
        fresh=1
    fi
    eo_my_launch && return 0
    eo_show_log "$(eo_my_log)"
    eo_my_stop_quiet
    ((fresh)) && eo_die "mariadb: a freshly initialised server did not start"
    eo_log "mariadb: the old data dir did not start; wiping it and trying once more"
    eo_my_init
    eo_my_launch || {
        eo_show_log "$(eo_my_log)"
        eo_die "mariadb: did not start"
    }
}

eo_my_login_ok() {
    local grants
    grants=$(MYSQL_PWD=$EO_PASS mariadb --no-defaults --protocol=tcp -h 127.0.0.1 -P "$EO_MY_PORT" \
        --connect-timeout=5 -u "$EO_USER" --batch --skip-column-names -e 'SHOW GRANTS' 2>/dev/null) || return 1
    [[ $grants == *"ALL PRIVILEGES ON *.*"*"WITH GRANT OPTION"* ]]
}

eo_my_ensure_user() {
    eo_my_login_ok && return 0
    local sock sql
    sql="CREATE USER IF NOT EXISTS '$EO_USER'@'%' IDENTIFIED BY '$EO_PASS';
ALTER USER '$EO_USER'@'%' IDENTIFIED BY '$EO_PASS';
GRANT ALL PRIVILEGES ON *.* TO '$EO_USER'@'%' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS '$EO_USER'@'localhost' IDENTIFIED BY '$EO_PASS';
ALTER USER '$EO_USER'@'localhost' IDENTIFIED BY '$EO_PASS';
GRANT ALL PRIVILEGES ON *.* TO '$EO_USER'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;"
    for sock in "$(eo_my_sock)" /run/mysqld/mysqld.sock; do
        [[ -S $sock ]] || continue
        # root@localhost authenticates by unix socket: being root here is the credential.
        local anon
        anon=$(mariadb --no-defaults --protocol=socket -S "$sock" -u root --batch --skip-column-names \
            -e "SELECT CONCAT('DROP USER IF EXISTS ''''@''', Host, ''';') FROM mysql.user WHERE User=''" 2>/dev/null) || continue
        if mariadb --no-defaults --protocol=socket -S "$sock" -u root -e "$anon $sql" >&2; then
            eo_log "mariadb: account $EO_USER ensured (via $sock)"
            break
        fi
    done
    eo_my_login_ok || eo_die "mariadb: $EO_USER cannot log in over TCP with its password, or lacks ALL ON *.* WITH GRANT OPTION"
}

eo_my_stop_quiet() {
    local pid
    pid=$(eo_pidfile_pid "$(eo_my_pidfile)")
    [[ -n $pid ]] || pid=${EO_MY_LAUNCHED_PID:-}
    eo_stop_pid mariadb "$pid" mariadbd TERM
}

# ---------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------

eo_pg_bindir() {
    local d
    d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    [[ -n $d && -x $d/initdb && -x $d/pg_ctl ]] || eo_die "postgres: no server binaries under /usr/lib/postgresql"
    echo "$d"
}
eo_pg_log() { echo "$EO_PG_DIR/postgres.log"; }
eo_pg_alive() { eo_pid_is "$(eo_pidfile_pid "$EO_PG_DIR/data/postmaster.pid")" postgres; }
eo_pg_ping() { "$EO_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$EO_PG_PORT" -t 2 >/dev/null 2>&1; }

eo_pg_init() {
    local data=$EO_PG_DIR/data log
    log=$(eo_pg_log)
    eo_log "postgres: initialising a data dir in $data ($("$EO_PG_BIN/postgres" --version))"
    rm -rf "$data"
    install -d -o postgres -g postgres -m 700 "$data"
    touch "$log" && chown postgres:postgres "$log"
    # Password (scram) auth over TCP; peer auth on the socket for the postgres superuser.
    runuser -u postgres -- "$EO_PG_BIN/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 --no-sync \
        --auth-local=peer --auth-host=scram-sha-256 </dev/null >>"$log" 2>&1 9>&- || {
        eo_show_log "$log"
        eo_die "postgres: initdb failed"
    }
    cat >>"$data/postgresql.conf" <<'EOF'

# eventops test server (scripts/services.sh): throwaway data, so speed beats durability.
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
}

eo_pg_launch() {
    local run=$EO_PG_DIR/run log
    log=$(eo_pg_log)
    install -d -o postgres -g postgres -m 755 "$run"
    touch "$log" && chown postgres:postgres "$log"
    eo_log "postgres: starting on 127.0.0.1:$EO_PG_PORT"
    # pg_ctl -w waits for the server to accept connections (deadline: -t); setsid and the
    # redirections keep the postmaster out of our session and off our stdout/stderr/locks.
    setsid -w runuser -u postgres -- "$EO_PG_BIN/pg_ctl" -D "$EO_PG_DIR/data" -l "$log" \
        -w -t "$EO_TIMEOUT" \
        -o "-c listen_addresses=127.0.0.1 -p $EO_PG_PORT -c unix_socket_directories=$run" \
        start </dev/null >>"$EO_PG_DIR/pg_ctl.out" 2>&1 9>&- || {
        eo_log "postgres: pg_ctl start failed: $(tail -n 3 "$EO_PG_DIR/pg_ctl.out" | tr '\n' ' ')"
        return 1
    }
    eo_wait_ready postgres eo_pg_alive eo_pg_ping
}

eo_pg_start() {
    EO_PG_BIN=$(eo_pg_bindir)
    install -d -m 755 "$EO_STATE" "$EO_PG_DIR"
    local data=$EO_PG_DIR/data
    if eo_pg_alive; then
        eo_wait_ready postgres eo_pg_alive eo_pg_ping || {
            eo_show_log "$(eo_pg_log)"
            eo_die "postgres: running (pid $(eo_pidfile_pid "$data/postmaster.pid")) but not answering"
        }
        return 0
    fi
    if eo_pg_ping; then
        eo_log "postgres: something not started by this script already answers on 127.0.0.1:$EO_PG_PORT; using it"
        return 0
    fi
    eo_port_open "$EO_PG_PORT" && eo_die "postgres: port $EO_PG_PORT is taken by something that is not PostgreSQL"
    # A pid file left by a killed server; its pid may now belong to another process,
    # which would make the postmaster refuse to start.
    rm -f "$data/postmaster.pid"
    local fresh=0 want_ver
    want_ver=$(basename "$(dirname "$EO_PG_BIN")")
    if [[ ! -s $data/PG_VERSION || $(cat "$data/PG_VERSION") != "$want_ver" ]]; then
        eo_pg_init
        fresh=1
    fi
    eo_pg_launch && return 0
    eo_show_log "$(eo_pg_log)"
    eo_pg_stop_quiet
    ((fresh)) && eo_die "postgres: a freshly initialised server did not start"
    eo_log "postgres: the old data dir did not start; wiping it and trying once more"
    eo_pg_init
    eo_pg_launch || {
        eo_show_log "$(eo_pg_log)"
        eo_die "postgres: did not start"
    }
}

eo_pg_login_ok() {
    local out
    out=$(PGPASSWORD=$EO_PASS PGCONNECT_TIMEOUT=5 "$EO_PG_BIN/psql" -X -A -t -q \
        -h 127.0.0.1 -p "$EO_PG_PORT" -U "$EO_USER" -d postgres \
        -c "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user" 2>/dev/null) || return 1
    [[ $out == t ]]
}

# Superuser SQL over a unix socket with peer auth, against our server or else Debian's.
eo_pg_super() {
    local dir
    for dir in "$EO_PG_DIR/run" /var/run/postgresql; do
        [[ -S $dir/.s.PGSQL.$EO_PG_PORT ]] || continue
        runuser -u postgres -- "$EO_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 \
            -h "$dir" -p "$EO_PG_PORT" -U postgres -d postgres "$@" 9>&- && return 0
    done
    return 1
}

eo_pg_ensure_user() {
    eo_pg_login_ok && return 0
    eo_pg_super -A -t >&2 <<EOF || eo_die "postgres: could not create role $EO_USER (no superuser socket?)"
DO \$\$BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$EO_USER') THEN
    CREATE ROLE $EO_USER;
  END IF;
END\$\$;
SET password_encryption = 'scram-sha-256';
ALTER ROLE $EO_USER WITH LOGIN CREATEDB PASSWORD '$EO_PASS';
-- A URL without a database means the database named like the user: let that work too.
SELECT 'CREATE DATABASE $EO_USER OWNER $EO_USER'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$EO_USER')\gexec
EOF
    eo_log "postgres: role $EO_USER ensured"
    eo_pg_login_ok && return 0
    # A server not initialised by us may not allow password auth over TCP: allow it for
    # our role, first in pg_hba.conf, and reload.
    local hba
    hba=$(eo_pg_super -A -t -c 'SHOW hba_file') || eo_die "postgres: cannot read hba_file"
    local line="host all $EO_USER 127.0.0.1/32 scram-sha-256"
    if ! grep -qxF "$line" "$hba"; then
        eo_log "postgres: adding '$line' at the top of $hba"
        { printf '%s\n' "$line"; cat "$hba"; } >"$hba.eventops.tmp" && cat "$hba.eventops.tmp" >"$hba" && rm -f "$hba.eventops.tmp"
        eo_pg_super -A -t -c 'SELECT pg_reload_conf()' >/dev/null
    fi
    eo_pg_login_ok || eo_die "postgres: $EO_USER cannot log in over TCP to 127.0.0.1:$EO_PG_PORT with its password"
}

eo_pg_stop_quiet() {
    eo_stop_pid postgres "$(eo_pidfile_pid "$EO_PG_DIR/data/postmaster.pid")" postgres INT
}

# ---------------------------------------------------------------------------------------
# Stopping (only what this script started: pids from its own pid files)
# ---------------------------------------------------------------------------------------

eo_stop_pid() {
    local what=$1 pid=$2 name=$3 sig=$4
    eo_pid_is "$pid" "$name" || return 0
    eo_log "$what: stopping pid $pid (SIG$sig)"
    kill "-$sig" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + EO_TIMEOUT))
    while eo_pid_is "$pid" "$name"; do
        if ((SECONDS >= deadline)); then
            eo_log "$what: pid $pid still alive after ${EO_TIMEOUT}s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
}

eo_stop_all() {
    eo_my_stop_quiet
    eo_pg_stop_quiet
    eo_sshd_stop
    eo_behind_stop
    eo_docker_stop
    eo_s3_probe_stop
}

# ---------------------------------------------------------------------------------------
# Later work: more servers for the tests.
# ---------------------------------------------------------------------------------------

# sshd on a loopback port with throwaway keys, for the SSH actuator tests: Debian's
# openssh-server with its own config, host key and pid file under $EO_SSH_DIR, and a
# throwaway local user ($EO_SSH_USER) that logs in with a password or with a key. Nobody
# else may log in (AllowUsers), and it listens on 127.0.0.1 only.

# The throwaway user: created if absent, its password (generated once, kept in
# $EO_SSH_DIR/password) set when needed, the client key in its authorized_keys.
eo_sshd_user() {
    local dir=$EO_SSH_DIR user=$EO_SSH_USER home group created=0
    if ! id -u "$user" >/dev/null 2>&1; then
        eo_log "sshd: creating the throwaway user $user"
        useradd --create-home --shell /bin/bash --comment "eventops SSH tests" "$user" >&2 ||
            eo_die "sshd: useradd $user failed"
        created=1
    fi
    home=$(getent passwd "$user" | cut -d: -f6)
    group=$(id -gn "$user")
    [[ -n $home && $home != / ]] || eo_die "sshd: user $user has no home directory"
    [[ -d $home ]] || install -d -o "$user" -g "$group" -m 755 "$home"
    if [[ ! -s $dir/password ]]; then
        local pw
        pw=$(head -c 512 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
        (umask 077 && printf '%s' "${pw:0:24}" >"$dir/password")
    fi
    # chpasswd only when the password is new or the account has none (passwd -S: P = usable).
    if ((created)) || [[ ! $dir/password.applied -nt $dir/password ]] ||
        [[ $(passwd -S "$user" 2>/dev/null | cut -d' ' -f2) != P ]]; then
        printf '%s:%s\n' "$user" "$(cat "$dir/password")" | chpasswd >&2 ||
            eo_die "sshd: cannot set the password of $user"
        touch "$dir/password.applied"
    fi
    local ssh_dir=$home/.ssh key
    key=$(cat "$dir/client_ed25519.pub")
    install -d -o "$user" -g "$group" -m 700 "$ssh_dir"
    if ! grep -qxF "$key" "$ssh_dir/authorized_keys" 2>/dev/null; then
        printf '%s\n' "$key" >>"$ssh_dir/authorized_keys"
    fi
    chown "$user:$group" "$ssh_dir/authorized_keys"
    chmod 600 "$ssh_dir/authorized_keys"
}

# The config on stdout; $1 is the sshd binary (to probe for options of newer versions).
eo_sshd_config() {
    local dir=$EO_SSH_DIR sshd=$1
    cat <<EOF
# eventops test sshd (scripts/services.sh): loopback only, one throwaway user.
ListenAddress 127.0.0.1
Port $EO_SSH_PORT
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AllowUsers $EO_SSH_USER
PermitRootLogin no
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
# The Docker tests reach the daemon through this sshd: direct-tcpip channels (to the daemon's
# TCP socat) and direct-streamlocal ones (to its unix socket). Both are OpenSSH's defaults;
# said here so that a changed default cannot break them.
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
# Tests open many connections at once and fail logins on purpose.
MaxStartups 200
MaxAuthTries 10
LoginGraceTime 30
Subsystem sftp internal-sftp
EOF
    # OpenSSH >= 9.8 slows down sources that fail logins: not wanted for the tests.
    if "$sshd" -T -f /dev/null -h "$dir/host_ed25519" -o PerSourcePenalties=no >/dev/null 2>&1; then
        echo "PerSourcePenalties no"
    fi
    cat <<EOF
Match User $EO_SSH_USER
    PasswordAuthentication yes
EOF
}

# Right after the launch the pid may still be setsid's, about to exec sshd.
eo_sshd_alive() {
    local pid
    pid=$(eo_pidfile_pid "$EO_SSH_DIR/sshd.main.pid")
    eo_pid_is "$pid" sshd || eo_pid_is "$pid" setsid
}
eo_sshd_banner() {
    local banner
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    banner=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"; head -c 7 <&3' _ "$EO_SSH_PORT" 2>/dev/null) || return 1
    [[ $banner == SSH-2.0 ]]
}

eo_sshd_start() {
    local dir=$EO_SSH_DIR sshd=/usr/sbin/sshd
    [[ -x $sshd ]] || eo_die "sshd: $sshd missing (openssh-server)"
    install -d -m 700 "$dir"
    [[ -s $dir/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C eventops-test-host -f "$dir/host_ed25519" </dev/null >&2
    [[ -s $dir/client_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C eventops-test-client -f "$dir/client_ed25519" </dev/null >&2
    eo_sshd_user
    install -d -m 755 /run/sshd # privilege-separation dir, normally made by systemd
    eo_sshd_config "$sshd" >"$dir/sshd_config.new"
    if eo_sshd_alive && ! cmp -s "$dir/sshd_config.new" "$dir/sshd_config"; then
        eo_log "sshd: config changed; restarting"
        eo_sshd_stop
    fi
    mv -f "$dir/sshd_config.new" "$dir/sshd_config"
    if ! eo_sshd_alive; then
        "$sshd" -t -f "$dir/sshd_config" 2>>"$dir/sshd.log" || {
            eo_show_log "$dir/sshd.log"
            eo_die "sshd: bad config"
        }
        eo_port_open "$EO_SSH_PORT" && eo_die "sshd: port $EO_SSH_PORT is already taken"
        eo_log "sshd: starting on 127.0.0.1:$EO_SSH_PORT"
        setsid "$sshd" -D -e -f "$dir/sshd_config" </dev/null >>"$dir/sshd.log" 2>&1 9>&- &
        echo "$!" >"$dir/sshd.main.pid"
    fi
    eo_wait_ready sshd eo_sshd_alive eo_sshd_banner || {
        eo_show_log "$dir/sshd.log"
        eo_die "sshd: did not start"
    }
}

eo_sshd_stop() {
    eo_stop_pid sshd "$(eo_pidfile_pid "$EO_SSH_DIR/sshd.main.pid")" sshd TERM
}

# A host the server cannot reach, for the tunnel tests (SPEC §9): the network namespace
# $EO_BEHIND_NS with a second sshd (same user and keys) on ITS loopback, 127.0.0.1:2223. From
# the namespace, the host side of a veth pair is $EO_BEHIND_HOST_ADDR: an eventops-client
# started inside (`ip netns exec eo-behind eventops-client --connect ws://10.231.0.1:PORT/...`)
# reaches a server listening there, and the server reaches the sshd only through that client.
eo_behind_alive() { eo_pid_is "$(eo_pidfile_pid "$EO_SSH_DIR/behind.main.pid")" sshd; }
eo_behind_banner() {
    local banner
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    banner=$(timeout 2 ip netns exec "$EO_BEHIND_NS" bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"; head -c 7 <&3' _ "$EO_BEHIND_SSH_PORT" 2>/dev/null) || return 1
    [[ $banner == SSH-2.0 ]]
}
eo_behind_start() {
    local ns=$EO_BEHIND_NS dir=$EO_SSH_DIR
    if ! ip netns list 2>/dev/null | grep -qw "$ns"; then
        ip netns add "$ns" >&2 || eo_die "behind: cannot create the network namespace $ns (needs root / CAP_SYS_ADMIN)"
    fi
    ip netns exec "$ns" ip link set lo up
    if ! ip link show eo-veth0 >/dev/null 2>&1; then
        ip link add eo-veth0 type veth peer name eo-veth1 netns "$ns" >&2 || eo_die "behind: cannot create the veth pair"
    fi
    ip addr replace "$EO_BEHIND_HOST_ADDR/30" dev eo-veth0
    ip link set eo-veth0 up
    ip netns exec "$ns" ip addr replace "$EO_BEHIND_NS_ADDR/30" dev eo-veth1
    ip netns exec "$ns" ip link set eo-veth1 up
    sed -e "s/^Port .*/Port $EO_BEHIND_SSH_PORT/" -e "s|^PidFile .*|PidFile $dir/behind.pid|" \
        "$dir/sshd_config" >"$dir/behind_config.new"
    if eo_behind_alive && ! cmp -s "$dir/behind_config.new" "$dir/behind_config"; then
        eo_log "behind: config changed; restarting its sshd"
        eo_behind_stop
    fi
    mv -f "$dir/behind_config.new" "$dir/behind_config"
    if ! eo_behind_alive; then
        eo_log "behind: starting sshd in network namespace $ns on its 127.0.0.1:$EO_BEHIND_SSH_PORT"
        setsid ip netns exec "$ns" /usr/sbin/sshd -D -e -f "$dir/behind_config" </dev/null >>"$dir/behind.log" 2>&1 9>&- &
        echo "$!" >"$dir/behind.main.pid"
    fi
    eo_wait_ready behind-sshd eo_behind_alive eo_behind_banner || {
        eo_show_log "$dir/behind.log"
        eo_die "behind: sshd did not start"
    }
}
eo_behind_stop() {
    eo_stop_pid behind-sshd "$(eo_pidfile_pid "$EO_SSH_DIR/behind.main.pid")" sshd TERM
}

# ---------------------------------------------------------------------------------------
# Docker: test images, loopback registries, TCP and namespace access to the daemon
# ---------------------------------------------------------------------------------------

# The Docker daemon is the machine's (started before the session; no image can be pulled
# from outside). Everything here sits beside it: images built from Debian's busybox-static,
# Debian's docker-registry on loopback, socat relays. Markers in $EO_DOCKER_DIR (docker.ok,
# behind.ok, registry-auth.ok) tell eo_svc_print_env which parts came up.

eo_docker_ping() {
    [[ $(curl -s --noproxy '*' --max-time 5 --unix-socket "$EO_DOCKER_SOCK" http://docker/_ping 2>/dev/null) == OK ]]
}

# Docker cannot be used here: say so where nobody can miss it; fail only when every backend is
# required (the Docker tests then fail for want of their variables anyway).
eo_docker_unusable() {
    eo_log "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    eo_log "!!! DOCKER IS NOT USABLE: $*"
    eo_log "!!! no EVENTOPS_TEST_DOCKER_* variables: the Docker tests and benchmarks skip"
    eo_log "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    if [[ ${EVENTOPS_TEST_REQUIRE_ALL:-0} == 1 ]]; then
        eo_die "docker: not usable and EVENTOPS_TEST_REQUIRE_ALL=1"
    fi
}

eo_docker_has_image() { docker image inspect "$1" >/dev/null 2>&1; }
eo_docker_image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

eo_busybox_bin() {
    local bb
    bb=$(dpkg -L busybox-static 2>/dev/null | grep -m1 '/bin/busybox$' || true)
    [[ -n $bb && -x $bb ]] || eo_die "docker: no static busybox (package busybox-static)"
    echo "$bb"
}

# eo_docker_import IMAGE ROOTFS CHANGE...: the folder as a one-layer image, owned by root.
eo_docker_import() {
    local image=$1 rootfs=$2 args=() c
    shift 2
    for c in "$@"; do args+=(--change "$c"); done
    tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -cf - . |
        docker import "${args[@]}" --message "built by scripts/services.sh" - "$image" >/dev/null ||
        eo_die "docker: docker import $image failed"
}

# eo_busybox_rootfs DIR: the root of eventops-test/busybox:1 in the (empty) folder DIR.
eo_busybox_rootfs() {
    local tmp=$1 bb applet
    bb=$(eo_busybox_bin)
    install -d -m 755 "$tmp/bin" "$tmp/etc"
    install -d -m 700 "$tmp/root"
    install -d -m 1777 "$tmp/tmp"
    install -m 755 "$bb" "$tmp/bin/busybox"
    while read -r applet; do
        case $applet in '' | bin/busybox | linuxrc) continue ;; esac
        install -d -m 755 "$tmp/$(dirname "$applet")"
        ln -sfn /bin/busybox "$tmp/$applet"
    done < <("$bb" --list-full)
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$tmp/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/etc/group"
}

# eo_curl_rootfs DIR: the host's /usr/bin/curl and every library `ldd` lists for it (the
# dynamic loader included), each at the path ldd names, dereferenced, into DIR.
eo_curl_rootfs() {
    local tmp=$1 curl=/usr/bin/curl lib libs
    [[ -x $curl ]] || eo_die "docker: no $curl (package curl)"
    libs=$(ldd "$curl") || eo_die "docker: ldd $curl failed"
    [[ $libs != *"not found"* ]] || eo_die "docker: ldd $curl: a library is missing: $libs"
    install -d -m 755 "$tmp/usr/bin"
    install -m 755 "$curl" "$tmp/usr/bin/curl"
    # lines are `name => /path (0x...)`, `/lib64/ld-linux-x86-64.so.2 (0x...)` or the vdso's
    while read -r lib; do
        install -d -m 755 "$tmp$(dirname "$lib")"
        cp -L "$lib" "$tmp$lib" || eo_die "docker: cannot copy $lib"
    done < <(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$libs" | sort -u)
}

# eventops-test/busybox:1: a static busybox with a link for every applet (sh, wget, sleep,
# cat, awk, sed, head, ...), /tmp, /root and a passwd with root. eventops-test/nosh:1: the
# same binary with no links, so no /bin/sh (tasks on it must fail with a clear message).
# eventops-test/curl:1: the busybox image's files plus the host's curl with its libraries
# (a task can talk S3 with `curl --aws-sigv4` or fetch a presigned URL).
# Built only when missing: `docker import` of a folder takes well under a second.
eo_docker_images() {
    local bb tmp
    if ! eo_docker_has_image "$EO_IMG_BUSYBOX"; then
        eo_log "docker: building $EO_IMG_BUSYBOX from $(eo_busybox_bin)"
        tmp=$(mktemp -d "$EO_DOCKER_DIR/rootfs.XXXXXX")
        eo_busybox_rootfs "$tmp"
        eo_docker_import "$EO_IMG_BUSYBOX" "$tmp" \
            'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'CMD ["/bin/sh"]'
        rm -rf "$tmp"
        local out
        # shellcheck disable=SC2016 # $a is the container shell's
        out=$(docker run --rm --network none "$EO_IMG_BUSYBOX" \
            sh -c 'for a in wget sleep cat awk sed head; do command -v $a >/dev/null || echo "missing $a"; done; echo ok' 2>&1) || true
        [[ $out == ok ]] || eo_die "docker: $EO_IMG_BUSYBOX does not work: $out"
    fi
    # eventops-test/nobody:1: the busybox image with `USER nobody` (a task must run as it).
    if ! eo_docker_has_image "$EO_IMG_NOBODY"; then
        eo_log "docker: building $EO_IMG_NOBODY (USER nobody)"
        printf 'FROM %s\nUSER nobody\n' "$EO_IMG_BUSYBOX" |
            DOCKER_BUILDKIT=0 docker build -q -t "$EO_IMG_NOBODY" - >/dev/null 2>&1 ||
            eo_die "docker: docker build $EO_IMG_NOBODY failed"
        [[ $(docker run --rm --network none "$EO_IMG_NOBODY" id -u 2>&1) == 65534 ]] ||
            eo_die "docker: $EO_IMG_NOBODY does not run as nobody"
    fi
    if ! eo_docker_has_image "$EO_IMG_NOSH"; then
        bb=$(eo_busybox_bin)
        eo_log "docker: building $EO_IMG_NOSH (no /bin/sh)"
        tmp=$(mktemp -d "$EO_DOCKER_DIR/rootfs.XXXXXX")
        install -d -m 755 "$tmp/bin"
        install -d -m 1777 "$tmp/tmp"
        install -m 755 "$bb" "$tmp/bin/busybox"
        eo_docker_import "$EO_IMG_NOSH" "$tmp" 'CMD ["/bin/busybox","true"]'
        rm -rf "$tmp"
        docker run --rm --network none "$EO_IMG_NOSH" >/dev/null 2>&1 || eo_die "docker: $EO_IMG_NOSH does not run /bin/busybox true"
        if docker run --rm --network none "$EO_IMG_NOSH" /bin/sh -c true >/dev/null 2>&1; then
            eo_die "docker: $EO_IMG_NOSH has a /bin/sh"
        fi
    fi
    if ! eo_docker_has_image "$EO_IMG_CURL"; then
        eo_log "docker: building $EO_IMG_CURL (busybox + the host's $(curl --version | head -n1 | cut -d' ' -f1-2))"
        tmp=$(mktemp -d "$EO_DOCKER_DIR/rootfs.XXXXXX")
        eo_busybox_rootfs "$tmp"
        eo_curl_rootfs "$tmp"
        eo_docker_import "$EO_IMG_CURL" "$tmp" \
            'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'CMD ["/bin/sh"]'
        rm -rf "$tmp"
        local out
        out=$(docker run --rm --network none "$EO_IMG_CURL" sh -c 'curl --version && echo ok' 2>&1) || true
        if [[ $out != curl\ * || $out != *$'\n'ok ]]; then
            docker image rm "$EO_IMG_CURL" >/dev/null 2>&1 || true
            eo_die "docker: $EO_IMG_CURL does not run curl: $out"
        fi
    fi
}

# ---- registries: Debian's docker-registry (registry:2), filesystem storage in the state dir

# eo_registry_vars open|auth: REG_DIR, REG_PORT for one of the two.
eo_registry_vars() {
    if [[ $1 == auth ]]; then
        REG_DIR=$EO_DOCKER_DIR/registry-auth REG_PORT=$EO_REG_AUTH_PORT
    else
        REG_DIR=$EO_DOCKER_DIR/registry REG_PORT=$EO_REG_PORT
    fi
}

# The pid may be setsid's for a moment, about to exec the registry.
eo_registry_alive() {
    local pid
    pid=$(eo_pidfile_pid "$REG_DIR/registry.pid")
    eo_pid_is "$pid" docker-registry || eo_pid_is "$pid" setsid
}
# /v2/ answers 200 (open) or 401 (login required): both are a live registry.
eo_registry_ping() {
    local code
    code=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$REG_PORT/v2/" 2>/dev/null) || return 1
    [[ $code == 200 || $code == 401 ]]
}

eo_registry_config() {
    cat <<EOC
# eventops test registry (scripts/services.sh): loopback only, throwaway storage.
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
EOC
    if [[ $1 == auth ]]; then
        # Basic auth over plain HTTP: the daemon treats 127.0.0.0/8 registries as insecure
        # (HTTP allowed) and still sends the credentials. registry wants bcrypt entries.
        cat <<EOC
auth:
  htpasswd:
    realm: eventops-test
    path: $REG_DIR/htpasswd
EOC
    fi
}

# The login's password (generated once, kept in $REG_DIR/password) and its bcrypt htpasswd.
eo_registry_credentials() {
    if [[ ! -s $REG_DIR/password ]]; then
        local pw
        pw=$(head -c 512 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
        (umask 077 && printf '%s' "${pw:0:24}" >"$REG_DIR/password")
    fi
    if [[ ! -s $REG_DIR/htpasswd || $REG_DIR/password -nt $REG_DIR/htpasswd ]]; then
        htpasswd -Bbn "$EO_REG_USER" "$(cat "$REG_DIR/password")" >"$REG_DIR/htpasswd.new" ||
            eo_die "registry: htpasswd failed"
        mv -f "$REG_DIR/htpasswd.new" "$REG_DIR/htpasswd"
    fi
}

# eo_registry_start open|auth
eo_registry_start() {
    local kind=$1
    eo_registry_vars "$kind"
    install -d -m 700 "$REG_DIR" "$REG_DIR/data"
    [[ $kind == auth ]] && eo_registry_credentials
    eo_registry_config "$kind" >"$REG_DIR/config.yml.new"
    if eo_registry_alive && ! cmp -s "$REG_DIR/config.yml.new" "$REG_DIR/config.yml"; then
        eo_log "registry $kind: config changed; restarting"
        eo_registry_stop "$kind"
    fi
    mv -f "$REG_DIR/config.yml.new" "$REG_DIR/config.yml"
    if ! eo_registry_alive; then
        eo_port_open "$REG_PORT" && eo_die "registry: port $REG_PORT is already taken"
        eo_log "registry $kind: starting on 127.0.0.1:$REG_PORT"
        setsid docker-registry serve "$REG_DIR/config.yml" </dev/null >>"$REG_DIR/registry.log" 2>&1 9>&- &
        echo "$!" >"$REG_DIR/registry.pid"
    fi
    eo_wait_ready "registry $kind" eo_registry_alive eo_registry_ping || {
        eo_show_log "$REG_DIR/registry.log"
        eo_die "registry $kind: did not start"
    }
}

eo_registry_stop() {
    eo_registry_vars "$1"
    eo_stop_pid "registry $1" "$(eo_pidfile_pid "$REG_DIR/registry.pid")" docker-registry TERM
}

# The registry holds $EO_IMG_BUSYBOX (the manifest answers 200).
eo_registry_has_image() {
    local repo=${EO_IMG_BUSYBOX%:*} tag=${EO_IMG_BUSYBOX##*:} auth=()
    [[ $1 == auth ]] && auth=(-u "$EO_REG_USER:$(cat "$REG_DIR/password")")
    [[ $(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 5 "${auth[@]}" \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://127.0.0.1:$REG_PORT/v2/$repo/manifests/$tag" 2>/dev/null) == 200 ]]
}

# eo_registry_push open|auth: push $EO_IMG_BUSYBOX when the registry lacks it or holds an
# older build ($REG_DIR/pushed: the image id pushed), then drop the local tag
# 127.0.0.1:PORT/... so that a test pulling it really pulls. The login goes to a throwaway
# DOCKER_CONFIG: root's own docker config is left alone.
eo_registry_push() {
    local kind=$1 id ref
    eo_registry_vars "$kind"
    ref=127.0.0.1:$REG_PORT/$EO_IMG_BUSYBOX
    id=$(eo_docker_image_id "$EO_IMG_BUSYBOX")
    if [[ $(cat "$REG_DIR/pushed" 2>/dev/null) != "$id" ]] || ! eo_registry_has_image "$kind"; then
        eo_log "registry $kind: pushing $EO_IMG_BUSYBOX as $ref"
        local cfg rc=0
        cfg=$(mktemp -d "$EO_DOCKER_DIR/client.XXXXXX")
        docker tag "$EO_IMG_BUSYBOX" "$ref" >&2 || rc=$?
        if ((rc == 0)) && [[ $kind == auth ]]; then
            DOCKER_CONFIG=$cfg docker login -u "$EO_REG_USER" --password-stdin "127.0.0.1:$REG_PORT" \
                <"$REG_DIR/password" >/dev/null 2>"$cfg/login.err" || {
                rc=$?
                eo_log "registry $kind: docker login failed: $(cat "$cfg/login.err")"
            }
        fi
        if ((rc == 0)); then
            DOCKER_CONFIG=$cfg docker push "$ref" >"$cfg/push.log" 2>&1 || {
                rc=$?
                eo_log "registry $kind: docker push failed: $(tail -n 5 "$cfg/push.log")"
            }
        fi
        docker rmi "$ref" >/dev/null 2>&1 || true
        rm -rf "$cfg"
        ((rc == 0)) || return 1
        printf '%s\n' "$id" >"$REG_DIR/pushed"
    fi
    # left by an earlier push or by a test's pull
    if eo_docker_has_image "$ref"; then docker rmi "$ref" >/dev/null 2>&1 || true; fi
}

# ---- socat relays to the daemon's socket: on the host's loopback, and inside eo-behind

# eo_relay_vars tcp|behind: RELAY_PID (pid file), RELAY_WHAT
eo_relay_vars() {
    RELAY_PID=$EO_DOCKER_DIR/socat-$1.pid RELAY_WHAT="docker $1 relay"
}
eo_relay_alive() {
    local pid
    pid=$(eo_pidfile_pid "$RELAY_PID")
    eo_pid_is "$pid" socat || eo_pid_is "$pid" setsid || eo_pid_is "$pid" ip
}
eo_docker_tcp_ping() {
    [[ $(curl -s --noproxy '*' --max-time 2 "http://127.0.0.1:$EO_DOCKER_TCP_PORT/_ping" 2>/dev/null) == OK ]]
}
eo_docker_behind_ping() {
    [[ $(ip netns exec "$EO_BEHIND_NS" curl -s --noproxy '*' --max-time 2 "http://127.0.0.1:$EO_DOCKER_BEHIND_PORT/_ping" 2>/dev/null) == OK ]]
}

# eo_relay_start tcp|behind: `socat TCP-LISTEN:PORT,bind=127.0.0.1,fork UNIX-CONNECT:SOCK`,
# for `behind` run in the namespace (`ip netns exec` execs socat: the pid stays the same).
eo_relay_start() {
    local kind=$1 listen cmd=() probe
    eo_relay_vars "$kind"
    if [[ $kind == tcp ]]; then
        listen=TCP-LISTEN:$EO_DOCKER_TCP_PORT,bind=127.0.0.1,reuseaddr,fork
        probe=eo_docker_tcp_ping
    else
        listen=TCP-LISTEN:$EO_DOCKER_BEHIND_PORT,bind=127.0.0.1,reuseaddr,fork
        cmd=(ip netns exec "$EO_BEHIND_NS")
        probe=eo_docker_behind_ping
    fi
    if eo_relay_alive && ! "$probe"; then
        # e.g. a relay left in a namespace that was deleted and made again
        eo_log "$RELAY_WHAT: running but not answering; restarting it"
        eo_relay_stop "$kind"
    fi
    if ! eo_relay_alive; then
        if [[ $kind == tcp ]] && eo_port_open "$EO_DOCKER_TCP_PORT"; then
            eo_die "docker: port $EO_DOCKER_TCP_PORT is already taken"
        fi
        eo_log "$RELAY_WHAT: starting ${cmd[*]:+${cmd[*]} }socat $listen -> $EO_DOCKER_SOCK"
        setsid "${cmd[@]}" socat "$listen" "UNIX-CONNECT:$EO_DOCKER_SOCK" \
            </dev/null >>"$EO_DOCKER_DIR/socat-$kind.log" 2>&1 9>&- &
        echo "$!" >"$RELAY_PID"
    fi
    eo_wait_ready "$RELAY_WHAT" eo_relay_alive "$probe" || {
        eo_show_log "$EO_DOCKER_DIR/socat-$kind.log"
        eo_die "$RELAY_WHAT: does not answer /_ping"
    }
}

eo_relay_stop() {
    eo_relay_vars "$1"
    eo_stop_pid "$RELAY_WHAT" "$(eo_pidfile_pid "$RELAY_PID")" socat TERM
}

# The sshd user may use the daemon's socket (direct-streamlocal channels open it as that
# user): it joins the socket's group. sshd looks the groups up at each login.
eo_docker_ssh_access() {
    local group
    group=$(stat -c %G "$EO_DOCKER_SOCK" 2>/dev/null) || return 0
    if [[ $group == root || $group == UNKNOWN ]]; then
        eo_log "docker: $EO_DOCKER_SOCK belongs to group $group; not adding $EO_SSH_USER to it (SSH-hop tests to the socket may fail)"
        return 0
    fi
    if ! id -nG "$EO_SSH_USER" 2>/dev/null | tr ' ' '\n' | grep -qxF "$group"; then
        eo_log "docker: adding $EO_SSH_USER to group $group (owner of $EO_DOCKER_SOCK)"
        usermod -aG "$group" "$EO_SSH_USER" >&2 || eo_die "docker: usermod -aG $group $EO_SSH_USER failed"
    fi
}

eo_docker_start() {
    install -d -m 700 "$EO_DOCKER_DIR"
    rm -f "$EO_DOCKER_DIR"/*.ok
    if ! command -v docker >/dev/null 2>&1; then
        eo_docker_unusable "no docker command on PATH"
        return 0
    fi
    if ! eo_docker_ping; then
        eo_docker_unusable "the daemon does not answer on $EO_DOCKER_SOCK ($(ls -l "$EO_DOCKER_SOCK" 2>&1))"
        return 0
    fi
    local out
    if ! out=$(docker version --format '{{.Server.APIVersion}}' 2>&1); then
        eo_docker_unusable "docker version: $out"
        return 0
    fi
    eo_docker_images
    eo_registry_start open
    eo_registry_push open || eo_die "registry open: could not push $EO_IMG_BUSYBOX"
    eo_relay_start tcp
    eo_docker_ssh_access
    touch "$EO_DOCKER_DIR/docker.ok"
    # the namespace relay must not be reachable from the host: that is what it is for
    if eo_port_open "$EO_DOCKER_BEHIND_PORT"; then
        eo_log "docker: 127.0.0.1:$EO_DOCKER_BEHIND_PORT answers on the HOST: the 'behind' Docker tests would prove nothing; not exporting EVENTOPS_TEST_DOCKER_BEHIND"
        [[ ${EVENTOPS_TEST_REQUIRE_ALL:-0} == 1 ]] && eo_die "docker: host port $EO_DOCKER_BEHIND_PORT taken and EVENTOPS_TEST_REQUIRE_ALL=1"
    else
        eo_relay_start behind
        touch "$EO_DOCKER_DIR/behind.ok"
    fi
    eo_registry_start auth
    eo_registry_push auth || eo_die "registry auth: could not push $EO_IMG_BUSYBOX with a login"
    touch "$EO_DOCKER_DIR/registry-auth.ok"
}

eo_docker_stop() {
    eo_relay_stop tcp
    eo_relay_stop behind
    eo_registry_stop open
    eo_registry_stop auth
    rm -f "$EO_DOCKER_DIR"/*.ok
}

eo_docker_status() {
    if eo_docker_ping; then eo_log "docker: the daemon answers on $EO_DOCKER_SOCK"; else eo_log "docker: the daemon does NOT answer on $EO_DOCKER_SOCK"; fi
    local k
    for k in open auth; do
        eo_registry_vars "$k"
        if eo_registry_alive; then eo_log "registry $k: running on 127.0.0.1:$REG_PORT"; else eo_log "registry $k: not running"; fi
    done
    for k in tcp behind; do
        eo_relay_vars "$k"
        if eo_relay_alive; then eo_log "$RELAY_WHAT: running"; else eo_log "$RELAY_WHAT: not running"; fi
    done
}

# ---------------------------------------------------------------------------------------
# S3: the s3s-fs binary (a real S3 server over a folder) for the file-storage tests
# ---------------------------------------------------------------------------------------

# No long-lived S3 server is started here: each test starts its own s3s-fs (see
# web/src/testing/s3.rs) on a free port with its own keys and folder, and may stop it to stage
# an outage. This part makes sure the binary exists (crates.io's s3s-fs, built once per
# machine into the CI cache: $EO_S3S_FS) and checks with a throwaway instance what the tests
# rely on: it verifies SigV4 signatures (a signed request passes; a wrong secret or no
# signature gets 403), it maps bucket/key to the file ROOT/bucket/key, and ONE address
# reaches it from the host, from inside eo-behind and from a container on Docker's default
# bridge: the host side of the veth pair, $EO_BEHIND_HOST_ADDR (presigned URLs sign the host,
# so every party must use the same one). $EO_S3_DIR/s3.ok tells eo_svc_print_env to export
# EVENTOPS_TEST_S3S_FS and EVENTOPS_TEST_S3_HOST.

# S3 cannot be used: say so loudly; fail only when every backend is required.
eo_s3_unusable() {
    eo_log "!!! S3 IS NOT USABLE: $*"
    eo_log "!!! no EVENTOPS_TEST_S3S_FS / EVENTOPS_TEST_S3_HOST variables: the S3 tests skip"
    if [[ ${EVENTOPS_TEST_REQUIRE_ALL:-0} == 1 ]]; then
        eo_die "s3: not usable and EVENTOPS_TEST_REQUIRE_ALL=1"
    fi
}

# The binary: `cargo install s3s-fs` into $EO_CI_CACHE/tools when it is missing (or another
# version), with a target dir of its own in the cache, deleted afterwards (hundreds of MB).
eo_s3s_install() {
    local ver cargo rc=0
    if [[ -x $EO_S3S_FS ]]; then
        ver=$("$EO_S3S_FS" --version 2>/dev/null || true)
        [[ $ver == "s3s-fs $EO_S3S_VERSION" ]] && return 0
        eo_log "s3: $EO_S3S_FS says '$ver', not s3s-fs $EO_S3S_VERSION; installing again"
    fi
    # rustup's cargo may not be on PATH in a non-login shell (as in .ci/run)
    cargo=$(command -v cargo || true)
    if [[ -z $cargo && -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
        cargo=${CARGO_HOME:-$HOME/.cargo}/bin/cargo
    fi
    if [[ -z $cargo ]]; then
        eo_log "s3: no cargo here, so no s3s-fs (it is built with cargo install)"
        return 1
    fi
    local target=$EO_CI_CACHE/s3s-build log=$EO_S3_DIR/install.log
    eo_log "s3: building s3s-fs $EO_S3S_VERSION into $EO_CI_CACHE/tools (cargo install, once per machine: minutes; log $log)"
    install -d -m 755 "$EO_CI_CACHE" "$EO_CI_CACHE/tools"
    PATH=$(dirname "$cargo"):$PATH CARGO_TARGET_DIR=$target \
        "$cargo" install "s3s-fs@$EO_S3S_VERSION" --features binary --locked --force --root "$EO_CI_CACHE/tools" \
        </dev/null >"$log" 2>&1 9>&- || rc=$?
    rm -rf "$target"
    if ((rc != 0)) || [[ ! -x $EO_S3S_FS ]]; then
        eo_show_log "$log"
        eo_log "s3: cargo install s3s-fs@$EO_S3S_VERSION failed (exit $rc)"
        return 1
    fi
}

# Right after the launch the pid may still be this shell's fork, about to exec s3s-fs.
eo_s3_probe_alive() {
    local pid
    pid=$(eo_pidfile_pid "$EO_S3_DIR/probe.pid")
    eo_pid_is "$pid" s3s-fs || eo_pid_is "$pid" "$(cat "/proc/$$/comm" 2>/dev/null || echo bash)"
}
# The probe's port, from its log line `server is running at http://ADDR:PORT` (it binds port 0).
eo_s3_probe_port() {
    local line
    line=$(grep -oE 'server is running at http://[0-9.]+:[0-9]+' "$EO_S3_DIR/probe.log" 2>/dev/null | head -n1 || true)
    EO_S3_PROBE_PORT=${line##*:}
    [[ -n $line && $EO_S3_PROBE_PORT =~ ^[0-9]+$ ]]
}
eo_s3_probe_stop() {
    eo_stop_pid "s3 probe" "$(eo_pidfile_pid "$EO_S3_DIR/probe.pid")" s3s-fs TERM
    rm -f "$EO_S3_DIR/probe.pid"
}

# eo_s3_probe_checks: the checks against the running probe; prints the first failure.
eo_s3_probe_checks() {
    local url="http://$EO_BEHIND_HOST_ADDR:$EO_S3_PROBE_PORT" code
    # curl 7.88 signs no payload hash and s3s wants the header (400 without it): say unsigned
    local h='x-amz-content-sha256: UNSIGNED-PAYLOAD'
    local sig=(--aws-sigv4 aws:amz:us-east-1:s3 --user "eoprobe:eoprobe-secret" -H "$h")
    local bad=(--aws-sigv4 aws:amz:us-east-1:s3 --user "eoprobe:not-the-secret" -H "$h")
    local c=(-s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 10)
    code=$(curl "${c[@]}" "${sig[@]}" -X PUT "$url/eo-probe" 2>&1 || true)
    [[ $code == 200 ]] || { echo "a signed CreateBucket from the host got HTTP $code"; return 1; }
    code=$(curl "${c[@]}" "${sig[@]}" -X PUT --data-binary probe-body "$url/eo-probe/dir/hello.txt" 2>&1 || true)
    [[ $code == 200 ]] || { echo "a signed PutObject from the host got HTTP $code"; return 1; }
    [[ $(cat "$EO_S3_DIR/probe-data/eo-probe/dir/hello.txt" 2>/dev/null) == probe-body ]] ||
        { echo "the object eo-probe/dir/hello.txt is not the file ROOT/eo-probe/dir/hello.txt"; return 1; }
    code=$(curl "${c[@]}" "${bad[@]}" "$url/eo-probe/dir/hello.txt" 2>&1 || true)
    [[ $code == 403 ]] || { echo "a GetObject signed with a wrong secret got HTTP $code, not 403"; return 1; }
    code=$(curl "${c[@]}" "$url/eo-probe/dir/hello.txt" 2>&1 || true)
    [[ $code == 403 ]] || { echo "an unsigned GetObject got HTTP $code, not 403"; return 1; }
    code=$(ip netns exec "$EO_BEHIND_NS" curl "${c[@]}" "${sig[@]}" "$url/eo-probe/dir/hello.txt" 2>&1 || true)
    [[ $code == 200 ]] || { echo "a signed GetObject from inside $EO_BEHIND_NS got HTTP $code"; return 1; }
    if [[ -e $EO_DOCKER_DIR/docker.ok ]]; then
        code=$(docker run --rm "$EO_IMG_CURL" curl "${c[@]}" "${sig[@]}" "$url/eo-probe/dir/hello.txt" 2>&1 || true)
        [[ $code == 200 ]] || { echo "a signed GetObject from a container ($EO_IMG_CURL, default bridge) got: $code"; return 1; }
    else
        eo_log "s3: Docker is not usable: not checking that containers reach $url"
    fi
}

# ---- schemathesis: `pip install` into a virtualenv under the CI cache, once per machine
eo_schemathesis_install() {
    local st=$EO_ST_VENV/bin/st
    if [[ -x $st ]] && [[ $("$st" --version 2>/dev/null) == "st, version $EO_ST_VERSION" ]]; then
        return 0
    fi
    eo_log "schemathesis: installing $EO_ST_VERSION into $EO_ST_VENV (pip, once per machine)"
    install -d -m 755 "$EO_CI_CACHE/tools"
    rm -rf "$EO_ST_VENV"
    if ! python3 -m venv "$EO_ST_VENV" >/dev/null 2>&1 \
        || ! "$EO_ST_VENV/bin/pip" install -q "schemathesis==$EO_ST_VERSION" >"$EO_CI_CACHE/tools/schemathesis-install.log" 2>&1; then
        eo_log "!!! schemathesis could not be installed (log $EO_CI_CACHE/tools/schemathesis-install.log): the OpenAPI fuzz test skips"
        rm -rf "$EO_ST_VENV"
    fi
}

eo_s3_start() {
    install -d -m 700 "$EO_S3_DIR"
    rm -f "$EO_S3_DIR/s3.ok"
    eo_s3_probe_stop # one left by a run that was killed
    if ! eo_s3s_install; then
        eo_s3_unusable "no s3s-fs binary at $EO_S3S_FS"
        return 0
    fi
    if ! ip -4 -o addr show 2>/dev/null | grep -qF " $EO_BEHIND_HOST_ADDR/"; then
        eo_s3_unusable "$EO_BEHIND_HOST_ADDR (the host side of $EO_BEHIND_NS) is not an address of this host"
        return 0
    fi
    # A throwaway instance on the address the tests use, port 0 (the kernel picks one).
    rm -rf "$EO_S3_DIR/probe-data"
    install -d -m 700 "$EO_S3_DIR/probe-data"
    : >"$EO_S3_DIR/probe.log"
    RUST_LOG=s3s_fs=info "$EO_S3S_FS" --host "$EO_BEHIND_HOST_ADDR" --port 0 \
        --access-key eoprobe --secret-key eoprobe-secret "$EO_S3_DIR/probe-data" \
        </dev/null >>"$EO_S3_DIR/probe.log" 2>&1 9>&- &
    echo "$!" >"$EO_S3_DIR/probe.pid"
    local why=""
    if ! eo_wait_ready "s3 probe" eo_s3_probe_alive eo_s3_probe_port; then
        eo_show_log "$EO_S3_DIR/probe.log"
        why="s3s-fs did not start on $EO_BEHIND_HOST_ADDR"
    elif ! why=$(eo_s3_probe_checks); then
        eo_show_log "$EO_S3_DIR/probe.log"
    else
        why=""
    fi
    eo_s3_probe_stop
    rm -rf "$EO_S3_DIR/probe-data"
    if [[ -n $why ]]; then
        eo_s3_unusable "$why"
        return 0
    fi
    local where="the host and $EO_BEHIND_NS"
    [[ -e $EO_DOCKER_DIR/docker.ok ]] && where="the host, $EO_BEHIND_NS and containers"
    eo_log "s3: s3s-fs $EO_S3S_VERSION checks SigV4 and answers on $EO_BEHIND_HOST_ADDR from $where"
    touch "$EO_S3_DIR/s3.ok"
}

eo_s3_status() {
    if [[ -x $EO_S3S_FS ]]; then eo_log "s3: $("$EO_S3S_FS" --version 2>&1) at $EO_S3S_FS (tests start their own)"; else eo_log "s3: no s3s-fs at $EO_S3S_FS"; fi
}

# The hook later work fills in; called after the databases are up.
eo_extra_services() {
    eo_sshd_start
    eo_behind_start
    eo_docker_start
    eo_s3_start
    eo_schemathesis_install
}

# ---------------------------------------------------------------------------------------

eo_svc_print_env() {
    printf 'export EVENTOPS_TEST_MYSQL_URL=%q\n' "mysql://$EO_USER:$EO_PASS@127.0.0.1:$EO_MY_PORT"
    printf 'export EVENTOPS_TEST_POSTGRES_URL=%q\n' "postgres://$EO_USER:$EO_PASS@127.0.0.1:$EO_PG_PORT"
    printf 'export EVENTOPS_TEST_SSH_HOST=%q\n' 127.0.0.1
    printf 'export EVENTOPS_TEST_SSH_PORT=%q\n' "$EO_SSH_PORT"
    printf 'export EVENTOPS_TEST_SSH_USER=%q\n' "$EO_SSH_USER"
    printf 'export EVENTOPS_TEST_SSH_PASSWORD=%q\n' "$(cat "$EO_SSH_DIR/password" 2>/dev/null)"
    printf 'export EVENTOPS_TEST_SSH_KEY=%q\n' "$EO_SSH_DIR/client_ed25519"
    printf 'export EVENTOPS_TEST_SSH_HOST_KEY=%q\n' "$EO_SSH_DIR/host_ed25519.pub"
    printf 'export EVENTOPS_TEST_BEHIND_NETNS=%q\n' "$EO_BEHIND_NS"
    printf 'export EVENTOPS_TEST_BEHIND_SERVER_ADDR=%q\n' "$EO_BEHIND_HOST_ADDR"
    printf 'export EVENTOPS_TEST_BEHIND_SSH_PORT=%q\n' "$EO_BEHIND_SSH_PORT"
    # The Docker parts only when they came up (the tests skip without them).
    if [[ -e $EO_DOCKER_DIR/docker.ok ]]; then
        printf 'export EVENTOPS_TEST_DOCKER_SOCKET=%q\n' "$EO_DOCKER_SOCK"
        printf 'export EVENTOPS_TEST_DOCKER_TCP=%q\n' "127.0.0.1:$EO_DOCKER_TCP_PORT"
        printf 'export EVENTOPS_TEST_DOCKER_IMAGE=%q\n' "$EO_IMG_BUSYBOX"
        printf 'export EVENTOPS_TEST_DOCKER_NOSH_IMAGE=%q\n' "$EO_IMG_NOSH"
        printf 'export EVENTOPS_TEST_DOCKER_NOBODY_IMAGE=%q\n' "$EO_IMG_NOBODY"
        printf 'export EVENTOPS_TEST_DOCKER_CURL_IMAGE=%q\n' "$EO_IMG_CURL"
        printf 'export EVENTOPS_TEST_REGISTRY=%q\n' "127.0.0.1:$EO_REG_PORT"
    fi
    if [[ -e $EO_DOCKER_DIR/behind.ok ]]; then
        printf 'export EVENTOPS_TEST_DOCKER_BEHIND=%q\n' "127.0.0.1:$EO_DOCKER_BEHIND_PORT"
    fi
    if [[ -e $EO_DOCKER_DIR/registry-auth.ok ]]; then
        printf 'export EVENTOPS_TEST_REGISTRY_AUTH=%q\n' "127.0.0.1:$EO_REG_AUTH_PORT"
        printf 'export EVENTOPS_TEST_REGISTRY_USER=%q\n' "$EO_REG_USER"
        printf 'export EVENTOPS_TEST_REGISTRY_PASSWORD=%q\n' "$(cat "$EO_DOCKER_DIR/registry-auth/password" 2>/dev/null)"
    fi
    # Tools the tests run: schemathesis (OpenAPI fuzzing), promtool (metrics format).
    if [[ -x $EO_ST_VENV/bin/st ]]; then
        printf 'export EVENTOPS_TEST_SCHEMATHESIS=%q\n' "$EO_ST_VENV/bin/st"
    fi
    if command -v promtool >/dev/null 2>&1; then
        printf 'export EVENTOPS_TEST_PROMTOOL=%q\n' "$(command -v promtool)"
    fi
    if command -v haproxy >/dev/null 2>&1; then
        printf 'export EVENTOPS_TEST_HAPROXY=%q\n' "$(command -v haproxy)"
    fi
    # S3: the binary each test starts, and the one address every party reaches it at.
    if [[ -e $EO_S3_DIR/s3.ok ]]; then
        printf 'export EVENTOPS_TEST_S3S_FS=%q\n' "$EO_S3S_FS"
        printf 'export EVENTOPS_TEST_S3_HOST=%q\n' "$EO_BEHIND_HOST_ADDR"
    fi
}

eo_svc_status() {
    if eo_my_alive; then eo_log "mariadb: running, pid $(eo_pidfile_pid "$(eo_my_pidfile)")"; else eo_log "mariadb: not running (from $EO_MY_DIR)"; fi
    if eo_pid_is "$(eo_pidfile_pid "$EO_PG_DIR/data/postmaster.pid")" postgres; then
        eo_log "postgres: running, pid $(eo_pidfile_pid "$EO_PG_DIR/data/postmaster.pid")"
    else eo_log "postgres: not running (from $EO_PG_DIR)"; fi
    if eo_pid_is "$(eo_pidfile_pid "$EO_SSH_DIR/sshd.main.pid")" sshd; then eo_log "sshd: running on 127.0.0.1:$EO_SSH_PORT"; fi
    eo_docker_status
    eo_s3_status
    local port
    for port in "$EO_MY_PORT" "$EO_PG_PORT"; do
        if eo_port_open "$port"; then eo_log "127.0.0.1:$port accepts connections"; else eo_log "127.0.0.1:$port closed"; fi
    done
}

# eo_svc_main ACTION: up | stop | reset | status. All output goes to stderr.
eo_svc_main() {
    local action=$1 t0=$SECONDS
    eo_svc_vars
    PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin # mariadbd, runuser, sshd
    install -d -m 755 "$EO_STATE"
    # One run at a time (a second caller waits): two runs racing to start the same
    # daemons would fight over ports and data dirs. The lock fd (9) is closed in every
    # daemon started below, or the daemon would hold the lock forever.
    exec 9>"$EO_STATE/lock"
    flock -w 900 9 || eo_die "another services.sh run holds $EO_STATE/lock"
    case $action in
    status)
        eo_svc_status
        return 0
        ;;
    stop)
        eo_stop_all
        return 0
        ;;
    reset)
        eo_stop_all
        eo_log "wiping $EO_MY_DIR/data, $EO_PG_DIR/data and the registries' storage"
        rm -rf "$EO_MY_DIR/data" "$EO_PG_DIR/data" "$EO_DOCKER_DIR"/registry*/data "$EO_DOCKER_DIR"/registry*/pushed
        ;;
    esac
    eo_install_packages
    EO_PG_BIN=$(eo_pg_bindir)
    eo_my_start
    eo_pg_start
    eo_my_ensure_user
    eo_pg_ensure_user
    eo_extra_services
    local docker="Docker: NOT USABLE (its tests skip)"
    [[ -e $EO_DOCKER_DIR/docker.ok ]] && docker="Docker: images, registries 127.0.0.1:$EO_REG_PORT/$EO_REG_AUTH_PORT, tcp 127.0.0.1:$EO_DOCKER_TCP_PORT"
    local s3="S3: NOT USABLE (its tests skip)"
    [[ -e $EO_S3_DIR/s3.ok ]] && s3="S3: s3s-fs for the tests at $EO_BEHIND_HOST_ADDR"
    eo_log "ready in $((SECONDS - t0))s: MariaDB 127.0.0.1:$EO_MY_PORT, PostgreSQL 127.0.0.1:$EO_PG_PORT (user $EO_USER), sshd 127.0.0.1:$EO_SSH_PORT (user $EO_SSH_USER), $docker, $s3"
    exec 9>&-
}

if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
    # Sourced: do the work in a subshell (its set -e and exits stay there), then export.
    (
        set -euo pipefail
        eo_svc_main up
    ) >&2
    eo_svc_rc=$?
    if ((eo_svc_rc == 0)); then
        eo_svc_vars
        eval "$(eo_svc_print_env)"
        eo_svc_print_env >&2
    else
        echo "scripts/services.sh: failed (exit $eo_svc_rc)" >&2
    fi
    return "$eo_svc_rc"
else
    set -euo pipefail
    eo_action=up eo_print_env=0
    for eo_arg in "$@"; do
        case $eo_arg in
        --env) eo_print_env=1 ;;
        --status) eo_action=status ;;
        --stop) eo_action=stop ;;
        --reset) eo_action=reset ;;
        --sshd) ;; # sshd is always started now; accepted for old callers
        -h | --help)
            sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' >&2
            exit 0
            ;;
        *)
            echo "scripts/services.sh: unknown argument '$eo_arg' (see --help)" >&2
            exit 2
            ;;
        esac
    done
    eo_svc_main "$eo_action" >&2
    if [[ $eo_action == up || $eo_action == reset ]]; then
        if ((eo_print_env)); then
            eo_svc_print_env
        else
            eo_svc_print_env | sed 's/^/[services] /' >&2
        fi
    fi
fi

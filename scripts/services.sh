#!/usr/bin/env bash
# The external servers eventops' tests talk to: MariaDB, PostgreSQL and sshd on loopback.
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
# Environment knobs (all optional):
#   EVENTOPS_SERVICES_DIR          state dir (default /tmp/eventops-services)
#   EVENTOPS_SERVICES_TIMEOUT      seconds to wait for each daemon (default 90)
#   EVENTOPS_SERVICES_MYSQL_PORT   default 3306
#   EVENTOPS_SERVICES_PG_PORT      default 5432
#   EVENTOPS_SERVICES_SSH_PORT     default 2222
#   EVENTOPS_SERVICES_SSH_USER     the throwaway sshd login user (default eotest)
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
    local want=(mariadb-server mariadb-client postgresql postgresql-client openssh-server openssh-client curl iproute2)
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
        "$dir/sshd_config" >"$dir/behind_config"
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

# A local S3-compatible server for the MinIO (file storage) tests.
# TODO(later work): start one here on a loopback port with a throwaway bucket dir and
# export EVENTOPS_TEST_S3_URL / _ACCESS_KEY / _SECRET_KEY. MinIO itself is not a Debian
# package; candidates reachable here are `s3s-fs` (crates.io, `cargo install`) or moto's
# server mode (PyPI `moto[server]`). Wait for readiness with a deadline, like above.
eo_s3_start() { :; }

# The hook later work fills in; called after the databases are up.
eo_extra_services() {
    eo_sshd_start
    eo_behind_start
    eo_s3_start
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
}

eo_svc_status() {
    if eo_my_alive; then eo_log "mariadb: running, pid $(eo_pidfile_pid "$(eo_my_pidfile)")"; else eo_log "mariadb: not running (from $EO_MY_DIR)"; fi
    if eo_pid_is "$(eo_pidfile_pid "$EO_PG_DIR/data/postmaster.pid")" postgres; then
        eo_log "postgres: running, pid $(eo_pidfile_pid "$EO_PG_DIR/data/postmaster.pid")"
    else eo_log "postgres: not running (from $EO_PG_DIR)"; fi
    if eo_pid_is "$(eo_pidfile_pid "$EO_SSH_DIR/sshd.main.pid")" sshd; then eo_log "sshd: running on 127.0.0.1:$EO_SSH_PORT"; fi
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
        eo_log "wiping $EO_MY_DIR/data and $EO_PG_DIR/data"
        rm -rf "$EO_MY_DIR/data" "$EO_PG_DIR/data"
        ;;
    esac
    eo_install_packages
    EO_PG_BIN=$(eo_pg_bindir)
    eo_my_start
    eo_pg_start
    eo_my_ensure_user
    eo_pg_ensure_user
    eo_extra_services
    eo_log "ready in $((SECONDS - t0))s: MariaDB 127.0.0.1:$EO_MY_PORT, PostgreSQL 127.0.0.1:$EO_PG_PORT (user $EO_USER), sshd 127.0.0.1:$EO_SSH_PORT (user $EO_SSH_USER)"
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

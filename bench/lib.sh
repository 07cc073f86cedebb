# Helpers shared by the daemon benchmarks (bench/pull.sh, bench/tasks.sh);
# sourced, not run. They expect `start_timeout` (seconds) and `containerd`
# (the binary) to be set by the script, and report failures in `err`.

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }
need() { command -v "$1" >/dev/null || die "$1 not found (run: make deps)"; }

# TERM, then KILL after GRACE seconds; reaps. Returns 1 if it needed KILL.
stop_pid() { # PID GRACE
    local pid=$1 grace=$2 i
    kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    for ((i = 0; i < grace * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 1
}

# Live processes whose command line mentions TEXT (a unique temp path).
pids_mentioning() { # TEXT
    local p
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = $$ ] && continue
        if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF "$1"; then echo "${p#/proc/}"; fi
    done
}

mounts_under() { # DIR
    { findmnt -rn -o TARGET | grep -E "^$1(/|\$)" || true; } | sort -r
}

# Functions that can fail set err to what went wrong and return 1.
err=

# Waits until CHECK succeeds, for at most start_timeout seconds, while PID lives.
wait_ready() { # NAME PID LOG CHECK...
    local name=$1 pid=$2 log=$3
    shift 3
    local deadline=$((SECONDS + start_timeout))
    while ! "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            err="$name exited at start; its log ends: $(tail -n 5 "$log" | tr '\n' ' ')"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            err="$name did not answer within ${start_timeout}s; its log ends: $(tail -n 5 "$log" | tr '\n' ' ')"
            return 1
        fi
        sleep 0.05
    done
}

# Whether a unix socket accepts connections.
socket_accepts() { # PATH
    [ -S "$1" ] && python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(1)
s.connect(sys.argv[1])' "$1"
}

# A field of /proc/PID/status, in KiB.
status_kib() { # PID FIELD
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# containerd on its own root (DIR) and state (STATE), serving SOCKET.
write_containerd_config() { # DIR SOCKET STATE
    cat >"$1/containerd.toml" <<TOML
version = 2
root = "$1/root"
state = "$3"
temp = "$1/tmp"
# Only the image and task APIs are used: no CRI (it wants CNI and a sandbox image).
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$2"

[ttrpc]
  address = "$2.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$1/opt"
TOML
    mkdir -p "$1/root" "$3" "$1/tmp"
}

start_containerd() { # DIR SOCKET STATE -> sets started_pid
    write_containerd_config "$1" "$2" "$3"
    env -u CONTAINERD_ADDRESS -u CONTAINERD_NAMESPACE "$containerd" --config "$1/containerd.toml" \
        </dev/null >"$1/containerd.log" 2>&1 &
    started_pid=$!
    daemon_pids=("$started_pid" "${daemon_pids[@]}")
    wait_ready containerd "$started_pid" "$1/containerd.log" "$ctr" --address "$2" version
}

# Makes the private bridge NAME with the address CIDR, up, for a private
# dockerd's --bridge. A dockerd given --bridge=none deletes any interface
# named docker0 it can see, which breaks the host's Docker; given a bridge
# of its own it leaves docker0 alone. Sets bridge_made=NAME once the device
# exists (the caller deletes it at exit), and err on failure.
make_bridge() { # NAME CIDR
    local name=$1 cidr=$2 addr=${2%/*}
    if ip link show "$name" >/dev/null 2>&1; then
        err="a network interface named $name exists already (set BRIDGE to another name)"
        return 1
    fi
    if [ -n "$(ip -4 route show to match "$addr" | grep -v '^default' || true)" ]; then
        err="$addr is routed on this host already: $(ip -4 route show to match "$addr" | tr '\n' ' ')"
        return 1
    fi
    ip link add name "$name" type bridge || { err="ip link add $name type bridge failed"; return 1; }
    bridge_made=$name
    if ! ip addr add "$cidr" dev "$name" || ! ip link set "$name" up; then
        err="could not give $name the address $cidr and bring it up"
        return 1
    fi
}

# utime+stime of the given processes, in clock ticks (bench/pull.sh has its
# own, with the children's time).
cpu_ticks() { # PID...
    local pid total=0 stat f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -r -a f <<<"${stat##*) }"
        # after "pid (comm) ": state=f[0] ... utime=f[11] stime=f[12]
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# Microseconds since the epoch, without a fork.
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# A command with a deadline; its output to LOG. On failure sets err.
run_logged() { # LOG TIMEOUT CMD...
    local log=$1 limit=$2 status
    shift 2
    timeout "$limit" "$@" </dev/null >"$log" 2>&1 && return 0
    status=$?
    if [ "$status" = 124 ]; then
        err="\`${*:1:6} ...\` did not finish within ${limit}s: $(tail -c 300 "$log" | tr '\n' ' ')"
    else
        err="\`${*:1:6} ...\` failed (exit status $status): $(tail -c 300 "$log" | tr '\n' ' ')"
    fi
    return 1
}

# Every hierarchy's mount point (v1 controllers, and the v2 tree).
cgroup_mounts() { findmnt -rn -t cgroup,cgroup2 -o TARGET; }

# Becomes CMD... in a new network namespace with loopback up (called with
# `&`, so the background subshell is what becomes the daemon, and $! is its
# pid).
in_new_netns() {
    exec unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh "$@"
}

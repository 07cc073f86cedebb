#!/bin/sh
# The checks of runtime_cgroup_v2_vm.rs, run as pid 1 of a virtual machine
# booted with cgroup_no_v1=all (a pure cgroup v2 kernel). Each container is
# a real berth-runtime container from a bundle under /bundles, made on the
# host by the test. Results go to the serial console, one line each:
#   BERTH-CHECK <name> ok|fail <detail>
#   BERTH-JSON <name> <json>        (checked by the test on the host)
#   BERTH-DONE
# after which the machine powers off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# Kernel messages (the OOM killer's) must not break up the result lines.
echo 1 >/proc/sys/kernel/printk

LOG=/run/berth.log
CG=/sys/fs/cgroup/berth-vm
rt() { berth-runtime --root /run/berth --log "$LOG" --log-format json "$@"; }

line() { echo "BERTH-CHECK $1 $2 $(printf '%s' "$3" | tr '\n' ' ' | head -c 600)"; }
pass() { line "$1" ok "$2"; }
fail() { line "$1" fail "$2"; }
# eq NAME GOT WANT
eq() { if [ "$2" = "$3" ]; then pass "$1" "$2"; else fail "$1" "got '$2', want '$3'"; fi; }
# waitfor TENTHS CMD...: runs CMD every 0.1 s until it succeeds, at most TENTHS times
waitfor() {
    n=$1
    shift
    until "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        [ "$n" -gt 0 ] || return 1
        sleep 0.1
    done
}
# start NAME: create and start /bundles/NAME as container NAME, its stdout
# in /tmp/NAME.out, and wait for it to print "ready".
start() {
    if ! rt create --bundle "/bundles/$1" "$1" >"/tmp/$1.out" 2>"/tmp/$1.err" </dev/null; then
        fail "$1.create" "$(cat "/tmp/$1.err"; tail -n 3 "$LOG")"
        return 1
    fi
    if ! rt start "$1" 2>"/tmp/$1.err"; then
        fail "$1.start" "$(cat "/tmp/$1.err")"
        return 1
    fi
    if ! waitfor 100 grep -qx ready "/tmp/$1.out"; then
        fail "$1.ready" "$(cat "/tmp/$1.out" "/tmp/$1.err")"
        return 1
    fi
}
state_field() { rt state "$1" 2>&1 | tr -d '\n ' | sed -n "s/.*\"$2\":\"\{0,1\}\([a-z0-9]*\).*/\1/p"; }
is_status() { [ "$(state_field "$1" status)" = "$2" ]; }
# gone NAME CONTAINER: delete it and check its cgroup directory is removed
gone() {
    if err=$(rt delete "$2" 2>&1); then
        if [ -d "$CG/$2" ]; then fail "$1" "$CG/$2 still exists"; else pass "$1" "$CG/$2 removed"; fi
    else
        fail "$1" "delete: $err"
    fi
}

# --- the kernel offers cgroup v2 only -------------------------------------
# statfs magic of cgroup2 (busybox's stat has no name for it)
eq detect.cgroup2fs "$(stat -f -c %t /sys/fs/cgroup)" 63677270
if grep -q ' - cgroup ' /proc/self/mountinfo; then
    fail detect.no-v1 "$(grep ' - cgroup ' /proc/self/mountinfo)"
else
    pass detect.no-v1 "no cgroup v1 hierarchy mounted"
fi

# --- 1. limits, seen from the host and from inside; 9. controllers --------
if start lim; then
    eq limits.memory.max "$(cat $CG/lim/memory.max)" 67108864
    eq limits.pids.max "$(cat $CG/lim/pids.max)" 50
    eq limits.cpu.max "$(cat $CG/lim/cpu.max)" "50000 100000"
    eq limits.cpu.weight "$(cat $CG/lim/cpu.weight)" 39
    eq limits.inside.memory.max "$(sed -n 1p /tmp/lim.out)" 67108864
    eq limits.inside.proc-self-cgroup "$(sed -n 2p /tmp/lim.out)" "0::/"
    eq limits.init-host-cgroup "$(cat "/proc/$(state_field lim pid)/cgroup")" "0::/berth-vm/lim"
    controllers=" $(cat $CG/lim/cgroup.controllers) "
    for c in cpu memory pids io; do
        case "$controllers" in
            *" $c "*) pass "controllers.$c" "$controllers" ;;
            *) fail "controllers.$c" "$controllers" ;;
        esac
    done

    # --- 7. exec lands in the container's cgroup ---------------------------
    eq exec.proc-self-cgroup "$(rt exec lim cat /proc/self/cgroup 2>&1)" "0::/"
    # (The detached process keeps its stdio: not a pipe the shell waits on.)
    if rt exec --detach --pid-file /tmp/exec.pid lim sleep 1000 >/tmp/exec.out 2>&1 </dev/null; then
        eq exec.host-cgroup "$(cat "/proc/$(cat /tmp/exec.pid)/cgroup")" "0::/berth-vm/lim"
    else
        fail exec.host-cgroup "exec --detach: $(cat /tmp/exec.out)"
    fi

    # --- 4. update ---------------------------------------------------------
    echo '{"memory": {"limit": 33554432}}' >/tmp/update.json
    if err=$(rt update --resources /tmp/update.json lim 2>&1); then
        eq update.memory.max "$(cat $CG/lim/memory.max)" 33554432
    else
        fail update.memory.max "$err"
    fi
    if err=$(rt update --pids-limit 20 lim 2>&1); then
        eq update.pids.max "$(cat $CG/lim/pids.max)" 20
    else
        fail update.pids.max "$err"
    fi
    # A period alone keeps the quota, and a quota alone the period.
    if err=$(rt update --cpu-period 200000 lim 2>&1); then
        eq update.cpu-period-alone "$(cat $CG/lim/cpu.max)" "50000 200000"
    else
        fail update.cpu-period-alone "$err"
    fi
    if err=$(rt update --cpu-quota 20000 lim 2>&1); then
        eq update.cpu-quota-alone "$(cat $CG/lim/cpu.max)" "20000 200000"
    else
        fail update.cpu-quota-alone "$err"
    fi

    # --- ps lists the container's processes ---------------------------------
    pid=$(state_field lim pid)
    case " $(rt ps --format json lim 2>&1 | tr '[],' '   ') " in
        *" $pid "*) pass ps.pids "init $pid listed" ;;
        *) fail ps.pids "$(rt ps --format json lim 2>&1), init $pid" ;;
    esac

    # --- 5. events --stats -------------------------------------------------
    echo "BERTH-JSON events-stats $(rt events --stats lim 2>&1 | head -n 1)"

    # --- 6. kill --all reaches the exec'd process too; delete --------------
    if err=$(rt kill --all lim KILL 2>&1); then
        if waitfor 100 is_status lim stopped; then
            pass kill-all.stopped "init stopped"
        else
            fail kill-all.stopped "status $(state_field lim status)"
        fi
        if waitfor 100 test ! -s $CG/lim/cgroup.procs; then
            pass kill-all.cgroup-empty "no process left"
        else
            fail kill-all.cgroup-empty "left: $(cat $CG/lim/cgroup.procs)"
        fi
    else
        fail kill-all.stopped "$err"
    fi
    gone delete.cgroup-removed lim
fi

# --- 2. memory + swap ------------------------------------------------------
if start swap; then
    if [ -e $CG/swap/memory.swap.max ]; then
        eq swap.memory.swap.max "$(cat $CG/swap/memory.swap.max)" 67108864
    else
        pass swap.memory.swap.max "n/a: the guest kernel has no swap accounting"
    fi
    # OCI's swap is memory+swap: alone, it is measured from memory.max.
    if err=$(rt update --memory-swap 100663296 swap 2>&1); then
        eq update.swap-alone "$(cat $CG/swap/memory.swap.max)" 33554432
    else
        fail update.swap-alone "$err"
    fi
    if err=$(rt update --memory 33554432 --memory-swap 67108864 swap 2>&1); then
        eq update.memory-and-swap "$(cat $CG/swap/memory.max) $(cat $CG/swap/memory.swap.max)" \
            "33554432 33554432"
    else
        fail update.memory-and-swap "$err"
    fi
    # memory+swap below memory is refused, and nothing is changed.
    if err=$(rt update --memory 50331648 --memory-swap 16777216 swap 2>&1); then
        fail update.swap-below-memory-refused "update succeeded"
    else
        eq update.swap-below-memory-refused "$(cat $CG/swap/memory.max)" 33554432
    fi
    rt kill swap KILL
    waitfor 100 is_status swap stopped
    gone swap.cgroup-removed swap
fi

# --- 3. pause and resume ---------------------------------------------------
if start cnt; then
    counter=/proc/$(state_field cnt pid)/root/tmp/counter
    waitfor 100 test -s "$counter"
    if err=$(rt pause cnt 2>&1); then
        eq pause.status "$(state_field cnt status)" paused
        eq pause.cgroup.freeze "$(cat $CG/cnt/cgroup.freeze)" 1
        eq pause.cgroup.events "$(grep '^frozen ' $CG/cnt/cgroup.events)" "frozen 1"
        c1=$(cat "$counter")
        sleep 0.5
        eq pause.counter-stopped "$(cat "$counter")" "$c1"
        if err=$(rt exec cnt true 2>&1); then
            fail pause.exec-refused "exec in a paused container succeeded"
        else
            pass pause.exec-refused "$err"
        fi
    else
        fail pause.status "pause: $err"
    fi
    if err=$(rt resume cnt 2>&1); then
        eq resume.status "$(state_field cnt status)" running
        eq resume.cgroup.freeze "$(cat $CG/cnt/cgroup.freeze)" 0
        c2=$(cat "$counter")
        moved() { [ "$(cat "$counter")" != "$c2" ]; }
        if waitfor 50 moved; then
            pass resume.counter-advances "$c2 -> $(cat "$counter")"
        else
            fail resume.counter-advances "still $c2"
        fi
    else
        fail resume.status "resume: $err"
    fi
    # docker rm -f of a paused container
    rt pause cnt
    if err=$(rt delete --force cnt 2>&1) && [ ! -d $CG/cnt ]; then
        pass pause.delete-force-paused "$CG/cnt removed"
    else
        fail pause.delete-force-paused "$err"
    fi
fi

# --- 8. OOM kill ------------------------------------------------------------
if start oom; then
    eq oom.hog-killed "$(grep '^hog=' /tmp/oom.out)" "hog=137"
    kills=$(sed -n 's/^oom_kill //p' $CG/oom/memory.events)
    if [ "${kills:-0}" -ge 1 ]; then
        pass oom.memory.events "oom_kill $kills"
    else
        fail oom.memory.events "$(cat $CG/oom/memory.events)"
    fi
    echo "BERTH-JSON oom-stats $(rt events --stats oom 2>&1 | head -n 1)"
    rt delete --force oom
    if [ -d $CG/oom ]; then fail oom.cgroup-removed "$CG/oom still exists"; else pass oom.cgroup-removed ""; fi
fi

# Device rules through the eBPF filter. Both containers may mknod and hold
# CAP_SYSLOG; "devok" also allows c 1:11 (/dev/kmsg), "dev" does not. So
# only the filter can tell their reads apart.
for c in dev devok; do
    if start $c; then
        eq devices.$c "$(grep -E 'mknod|kmsg' /tmp/$c.out | tr '\n' ' ')" \
            "$([ $c = dev ] && echo 'mknod-ok kmsg-denied ' || echo 'mknod-ok kmsg-read ')"
        eq devices.$c.null "$(grep -c null-ok /tmp/$c.out)" 1
        rt delete --force $c
    fi
done

if [ -n "$(rt list -q 2>&1)" ]; then
    fail cleanup.no-containers "$(rt list 2>&1)"
else
    pass cleanup.no-containers ""
fi
if grep -q '"level":"error"' "$LOG"; then
    # Errors the checks provoked on purpose (exec in a paused container).
    grep '"level":"error"' "$LOG" | sed 's/^/BERTH-LOG /'
fi
echo BERTH-DONE
poweroff -f

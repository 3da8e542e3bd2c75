#!/usr/bin/env bash
# test_install.sh - installation and the Debian package, from the build tree:
# `cmake --install` into a temporary prefix and a DESTDIR (every file in
# its place, the unit rewritten to the prefix, an edited config kept),
# the unit's directives and `systemd-analyze verify`, `cpack -G DEB` (file
# list, conffiles, dependencies, maintainer scripts), then, as root with
# SGBD_TEST_INSTALL=1 only, `dpkg -i` on this machine: installed files,
# the user and state directory, the installed unit verified, the installed
# binary run (also as a daemon, as user sgbd, with the shipped config),
# an upgrade that keeps an edited conffile, `dpkg -r` and `dpkg -P`.
# Without SGBD_TEST_INSTALL=1 (or not root) the dpkg part is skipped and
# the test exits 77 once everything else passed: developers' machines are
# not modified.
# ctest: labels=integration timeout=600
set -u
bin=${SGBD_BIN:?}
src=${SGBD_SOURCE:?}
build=$(cd "$(dirname "$bin")" && pwd)
tmp=$(mktemp -d)
pass=0 fail=0 skipped=0
installed_here=0 had_user=0 had_state=0

ok()  { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
# check NAME CMD...: the command succeeds.
check() { local n=$1; shift; if "$@"; then ok "$n"; else bad "$n"; fi; }

cleanup() {
    if [ "$installed_here" = 1 ] && dpkg -s sgbd >/dev/null 2>&1; then
        dpkg -P sgbd >/dev/null 2>&1
    fi
    if [ "$installed_here" = 1 ]; then
        [ "$had_state" = 1 ] || rm -rf /var/lib/sgbd
        if [ "$had_user" = 0 ] && getent passwd sgbd >/dev/null; then
            userdel sgbd 2>/dev/null
            getent group sgbd >/dev/null && groupdel sgbd 2>/dev/null
        fi
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

[ -f "$build/CPackConfig.cmake" ] ||
    { echo "no CPackConfig.cmake in $build"; exit 1; }
version=$("$bin" --version | awk '{print $2}')

# unit_value FILE KEY: the values of KEY= in FILE, one a line.
unit_value() { sed -n "s/^$2=//p" "$1"; }

# Files every installation has, relative to its root, with their modes.
expected_files() {
    local usr=$1 etc=$2 unitdir=$3
    cat <<EOF
755 $usr/bin/sgbd
644 $unitdir/sgbd.service
644 $usr/lib/sysusers.d/sgbd.conf
644 $usr/lib/tmpfiles.d/sgbd.conf
644 $etc/sgbd/sgbd.conf
644 $usr/share/doc/sgbd/README.md
644 $usr/share/doc/sgbd/examples/sgbd.conf
644 $usr/share/sgbd/openapi.yaml
EOF
    for f in "$src"/docs/*.md "$src"/docs/*.svg "$src"/docs/*.png \
             "$src"/docs/img/*.svg "$src"/docs/img/*.png; do
        [ -f "$f" ] && echo "644 $usr/share/doc/sgbd/${f#"$src"/docs/}"
    done
}

# files_in_place ROOT USR ETC UNITDIR: each expected file, with its mode.
files_in_place() {
    local root=$1 missing=0 mode path
    while read -r mode path; do
        if [ ! -f "$root$path" ]; then
            echo "  missing $root$path"; missing=1
        elif [ "$(stat -c %a "$root$path")" != "$mode" ]; then
            echo "  mode $(stat -c %a "$root$path") of $root$path, not $mode"
            missing=1
        fi
    done < <(expected_files "$2" "$3" "$4")
    return $missing
}

# verify_unit FILE: systemd-analyze verify, quiet when clean.
verify_unit() {
    local out
    out=$(systemd-analyze verify "$1" 2>&1)
    local rc=$?
    [ -z "$out" ] || echo "$out" | sed 's/^/  /'
    [ $rc -eq 0 ] && [ -z "$out" ]
}

# ---- 1. the unit file itself --------------------------------------------

unit=$src/systemd/sgbd.service
directives_ok() {
    local want bad_n=0
    for want in "Type=notify" "NotifyAccess=main" "Restart=on-failure" \
                "User=sgbd" "StateDirectory=sgbd" "ProtectSystem=strict" \
                "NoNewPrivileges=yes" "PrivateTmp=yes" \
                "ExecReload=/bin/kill -HUP \$MAINPID" \
                "ExecStart=/usr/bin/sgbd serve -c /etc/sgbd/sgbd.conf" \
                "WantedBy=multi-user.target"; do
        grep -qxF -- "$want" "$unit" || { echo "  no '$want'"; bad_n=1; }
    done
    unit_value "$unit" WatchdogSec | grep -qE '^[0-9]+s$' ||
        { echo "  no WatchdogSec=Ns"; bad_n=1; }
    [ "$(unit_value "$unit" LimitNOFILE)" -ge 4096 ] 2>/dev/null ||
        { echo "  LimitNOFILE below 4096"; bad_n=1; }
    return $bad_n
}
check unit_directives directives_ok

# The system calls a SystemCallFilter= list names, groups expanded.
expand_syscalls() {
    local name
    for name in "$@"; do
        case $name in
        @*) systemd-analyze syscall-filter --no-pager "$name" |
                sed -n 's/^ \{4\}\([@a-z0-9_-]*\).*/\1/p' |
                while read -r sub; do expand_syscalls "$sub"; done ;;
        *) echo "$name" ;;
        esac
    done
}

io_uring_allowed() {
    local allow deny s
    allow=$(for l in $(unit_value "$unit" SystemCallFilter | grep -v '^~'); do
                expand_syscalls "$l"; done | sort -u)
    deny=$(for l in $(unit_value "$unit" SystemCallFilter | sed -n 's/^~//p')
           do expand_syscalls "$l"; done | sort -u)
    for s in io_uring_setup io_uring_enter io_uring_register pread64 \
             mmap msync fdatasync; do
        if ! grep -qx "$s" <<<"$allow" || grep -qx "$s" <<<"$deny"; then
            echo "  SystemCallFilter refuses $s"
            return 1
        fi
    done
}
if command -v systemd-analyze >/dev/null; then
    check unit_syscall_filter_keeps_io_uring io_uring_allowed
else
    bad "systemd-analyze not found (install systemd)"
fi

# ---- 2. cmake --install ---------------------------------------------------

# The Debian layout: prefix /usr into a DESTDIR.
if DESTDIR=$tmp/root cmake --install "$build" --prefix /usr \
        >"$tmp/install.log" 2>&1; then
    check install_destdir_usr_files files_in_place "$tmp/root" /usr /etc \
        /lib/systemd/system
else
    bad "install_destdir_usr ($(tail -3 "$tmp/install.log"))"
fi
check install_usr_unit_paths grep -qxF \
    "ExecStart=/usr/bin/sgbd serve -c /etc/sgbd/sgbd.conf" \
    "$tmp/root/lib/systemd/system/sgbd.service"
check install_config_is_reference cmp -s "$src/configs/sgbd.conf" \
    "$tmp/root/etc/sgbd/sgbd.conf"
check install_binary_runs grep -qx "sgbd $version" \
    <("$tmp/root/usr/bin/sgbd" --version)
check install_config_loads "$tmp/root/usr/bin/sgbd" config --check \
    "$tmp/root/etc/sgbd/sgbd.conf"

# Another prefix: everything under it, and the unit points there.
pfx=$tmp/local
if cmake --install "$build" --prefix "$pfx" >"$tmp/install2.log" 2>&1; then
    check install_prefix_files files_in_place "" "$pfx" "$pfx/etc" \
        "$pfx/lib/systemd/system"
else
    bad "install_prefix ($(tail -3 "$tmp/install2.log"))"
fi
check install_prefix_unit_paths grep -qxF \
    "ExecStart=$pfx/bin/sgbd serve -c $pfx/etc/sgbd/sgbd.conf" \
    "$pfx/lib/systemd/system/sgbd.service"
check install_prefix_unit_verifies verify_unit \
    "$pfx/lib/systemd/system/sgbd.service"

# A second install keeps an edited configuration.
echo "# edited by the operator" >>"$pfx/etc/sgbd/sgbd.conf"
cmake --install "$build" --prefix "$pfx" >"$tmp/install3.log" 2>&1
check install_keeps_edited_config grep -qx "# edited by the operator" \
    "$pfx/etc/sgbd/sgbd.conf"

# ---- 3. cpack -G DEB ------------------------------------------------------

deb=""
if (cd "$tmp" && cpack -G DEB --config "$build/CPackConfig.cmake" \
        -B "$tmp/pkg") >"$tmp/cpack.log" 2>&1; then
    deb=$(ls "$tmp"/pkg/sgbd_*.deb 2>/dev/null | head -1)
fi
if [ -z "$deb" ]; then
    bad "cpack_builds_deb ($(tail -5 "$tmp/cpack.log"))"
    echo "$pass passed, $fail failed"
    exit 1
fi
ok cpack_builds_deb

deb_files_ok() {
    local want have
    want=$(expected_files /usr /etc /lib/systemd/system | awk '{print $2}' |
           sort)
    have=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {sub(/^\./, "", $6);
           print $6}' | sort)
    [ "$want" = "$have" ] || { diff <(echo "$want") <(echo "$have") |
                               sed 's/^/  /'; return 1; }
}
check deb_file_list deb_files_ok
check deb_conffiles grep -qx /etc/sgbd/sgbd.conf \
    <(dpkg-deb -I "$deb" conffiles 2>/dev/null)
check deb_version grep -qx "$version" <(dpkg-deb -f "$deb" Version)

deb_depends_ok() {
    local deps lib rc=0
    deps=$(dpkg-deb -f "$deb" Depends)
    for lib in libmicrohttpd12 libjansson4 liburing2 libopenblas0 liblmdb0 \
               libsystemd0 libinih1 procps; do
        grep -q "$lib" <<<"$deps" || { echo "  Depends lacks $lib"; rc=1; }
    done
    return $rc
}
check deb_depends deb_depends_ok

scripts_ok() {
    local s rc=0
    mkdir -p "$tmp/ctl"
    dpkg-deb -e "$deb" "$tmp/ctl"
    for s in postinst prerm postrm; do
        [ -x "$tmp/ctl/$s" ] || { echo "  $s missing or not executable"
                                  rc=1; continue; }
        sh -n "$tmp/ctl/$s" || rc=1
    done
    return $rc
}
check deb_maintainer_scripts scripts_ok

deb_unit_verifies() {
    mkdir -p "$tmp/x"
    dpkg-deb -x "$deb" "$tmp/x"
    sed "s#^ExecStart=/usr/bin/sgbd #ExecStart=$tmp/x/usr/bin/sgbd #" \
        "$tmp/x/lib/systemd/system/sgbd.service" >"$tmp/sgbd.service"
    verify_unit "$tmp/sgbd.service"
}
check deb_unit_verifies deb_unit_verifies

# ---- 4. dpkg -i on this machine (CI) --------------------------------------

# daemon_as_sgbd: the installed binary, as the unit runs it (user sgbd,
# the installed config and store path), answers /healthz and exits 0 on
# SIGTERM. The port is any free one.
daemon_as_sgbd() {
    local pid port=""
    setpriv --reuid=sgbd --regid=sgbd --init-groups -- \
        /usr/bin/sgbd serve -c /etc/sgbd/sgbd.conf \
        --listen 127.0.0.1:0 2>"$tmp/daemon.err" &
    pid=$!
    for _ in $(seq 100); do
        port=$(sed -n 's/.*ev=http_listening .*port=\([0-9]*\).*/\1/p' \
               "$tmp/daemon.err")
        [ -n "$port" ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/healthz" >/dev/null
    local rc=$?
    kill -TERM $pid 2>/dev/null
    wait $pid
    local exit_rc=$?
    [ $rc -eq 0 ] && [ $exit_rc -eq 0 ] &&
        [ "$(stat -c %U /var/lib/sgbd/db/data.mdb 2>/dev/null)" = sgbd ] ||
        { sed 's/^/  /' "$tmp/daemon.err"; return 1; }
}

installed_files_ok() {
    files_in_place "" /usr /etc /lib/systemd/system &&
        [ -z "$(dpkg -V sgbd 2>&1)" ]
}

state_ok() {
    getent passwd sgbd >/dev/null &&
        [ "$(stat -c '%U:%G %a' /var/lib/sgbd)" = "sgbd:sgbd 750" ]
}

enabled_ok() {
    command -v deb-systemd-helper >/dev/null || return 0
    [ -L /etc/systemd/system/multi-user.target.wants/sgbd.service ]
}

if [ "$(id -u)" -ne 0 ] || [ "${SGBD_TEST_INSTALL:-0}" != 1 ]; then
    echo "skip dpkg_install (needs root and SGBD_TEST_INSTALL=1; it" \
         "installs the package on this machine)"
    skipped=1
elif dpkg -s sgbd >/dev/null 2>&1 || [ -e /usr/bin/sgbd ]; then
    bad "dpkg_install: sgbd is installed on this machine already; not" \
        "replacing it"
else
    getent passwd sgbd >/dev/null && had_user=1
    [ -e /var/lib/sgbd ] && had_state=1
    installed_here=1
    if dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1; then
        ok dpkg_install
    else
        bad "dpkg_install ($(tail -5 "$tmp/dpkg.log"))"
    fi
    check dpkg_installed_files installed_files_ok
    check dpkg_conffile_registered grep -q /etc/sgbd/sgbd.conf \
        <(dpkg-query -W -f='${Conffiles}' sgbd)
    check dpkg_user_and_state_dir state_ok
    check dpkg_unit_enabled enabled_ok
    check dpkg_unit_verifies verify_unit /lib/systemd/system/sgbd.service
    check dpkg_binary_version grep -qx "sgbd $version" \
        <(/usr/bin/sgbd --version)
    check dpkg_binary_config grep -q "^\[server\]" <(/usr/bin/sgbd config)
    check dpkg_config_loads /usr/bin/sgbd config --check /etc/sgbd/sgbd.conf
    check dpkg_daemon_runs_as_sgbd daemon_as_sgbd

    # An upgrade (the same package again) keeps the edited conffile.
    echo "# edited by the operator" >>/etc/sgbd/sgbd.conf
    if dpkg -i --force-confold "$deb" >"$tmp/dpkg2.log" 2>&1; then
        check dpkg_upgrade_keeps_conffile grep -qx \
            "# edited by the operator" /etc/sgbd/sgbd.conf
    else
        bad "dpkg_upgrade ($(tail -5 "$tmp/dpkg2.log"))"
    fi

    if dpkg -r sgbd >"$tmp/dpkg3.log" 2>&1 && [ ! -e /usr/bin/sgbd ] &&
       [ ! -e /lib/systemd/system/sgbd.service ] &&
       [ -f /etc/sgbd/sgbd.conf ]; then
        ok dpkg_remove_keeps_conffile
    else
        bad "dpkg_remove ($(tail -5 "$tmp/dpkg3.log"))"
    fi
    if dpkg -P sgbd >"$tmp/dpkg4.log" 2>&1 && [ ! -e /etc/sgbd/sgbd.conf ] &&
       [ ! -L /etc/systemd/system/multi-user.target.wants/sgbd.service ] &&
       [ ! -L /etc/systemd/system/sgbd.service ] && [ -d /var/lib/sgbd ]
    then
        ok dpkg_purge_keeps_store
    else
        bad "dpkg_purge ($(tail -5 "$tmp/dpkg4.log"))"
    fi
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ] || exit 1
[ $skipped -eq 0 ] || exit 77
exit 0

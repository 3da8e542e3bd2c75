#!/usr/bin/env bash
# test_docs_commands.sh - every shell command the documentation shows runs
# as shown: the ```sh blocks of README.md and docs/*.md, in order, one bash
# session per file, in a fresh temporary folder. Fails when a command
# exits non-zero or a curl call gets an HTTP error or no answer.
#
# The conventions (documented in docs/operations.md, "Commands in these
# documents"):
#   ```sh            run; every command must succeed, every curl call must
#                    get a 2xx or 3xx answer
#   ```sh no-test    shown, not run (installs packages, needs root or a
#                    running systemd, or does not end)
#   ```sh http-errors  run, but curl calls may get 4xx/5xx answers (error
#                    examples); exit statuses still count
# Other fences (```console, ```text, ```python, ...) are not run.
#
# What the test provides, so that commands read as a new user types them:
#   * the working folder holds build/sgbd (the binary under test), and
#     copies of configs/, proto/, clients/, systemd/ and docs/; `sgbd` is on
#     PATH;
#   * /tmp/... paths become paths in the test's own folder, and port 8080
#     (127.0.0.1:8080, localhost:8080) a free port, so runs do not collide;
#   * curl waits up to 10 s for its port to open (a daemon started with
#     `&` in the line before), as a person would;
#   * a failed command is reported and the session goes on, so one run
#     lists every failure (a later block that needs its result fails too);
#   * `make TARGET` is checked with `make -n` in the source tree (the real
#     targets build the project, and `make test` would run this test
#     again); `make demo` then runs `sgbd demo` on the free port and every
#     curl call it prints;
#   * background jobs (`sgbd serve ... &`) are stopped when the file ends.
# SGBD_DOCS_FILES (space-separated paths relative to the source) replaces
# the file list.
# ctest: labels=integration timeout=900
set -u
bin=${SGBD_BIN:?}
src=${SGBD_SOURCE:?}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# extract FILE: the runnable ```sh blocks of FILE as a script body; each
# block between `__block FILE:LINE FLAGS` and `__end`.
extract() {
    awk -v file="$1" '
        inb == 0 && /^```/ {
            info = substr($0, 4)
            n = split(info, w, /[ \t]+/)
            if (w[1] != "sh") { inb = 2; next }
            inb = 1; run = 1; flags = ""
            for (i = 2; i <= n; i++)
                if (w[i] == "no-test") run = 0
                else if (w[i] != "") flags = flags " " w[i]
            if (run) printf "__block %s:%d \"%s\"\n", file, NR, flags
            next
        }
        inb != 0 && /^```[ \t]*$/ {
            if (inb == 1 && run) print "__end"
            inb = 0; next
        }
        inb == 1 && run { print }
    ' "$src/$1"
}

# rewrite WORK PORT: /tmp/ paths and port 8080 moved into this run.
rewrite() {
    sed -E -e "s#(^|[^A-Za-z0-9_./-])/tmp/#\\1$1/tmp/#g" \
           -e "s#(127\\.0\\.0\\.1|localhost):8080#127.0.0.1:$2#g"
}

# The helpers every file's session starts with (single-quoted: expanded
# when the session runs).
preamble() {
    cat <<'EOF'
__loc=start
__http_errors=0
__fails=$SGBD_DOCS_WORK/.curl_failures
__fails_at_start=0
: >"$__fails"
# (a failing curl or make wrapper has said why already)
trap '__rc=$?; case $BASH_COMMAND in "return "*) ;; *) echo "FAIL $__loc: \`$BASH_COMMAND\` exited $__rc" >>"$__fails" ;; esac' ERR
__stop_jobs() {
    local p
    for p in $(jobs -p); do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap '__stop_jobs' EXIT
__block() {
    __loc=$1
    __fails_at_start=$(wc -l <"$__fails")
    case " $2 " in *" http-errors "*) __http_errors=1 ;; *) __http_errors=0 ;; esac
    echo "$1" >"$SGBD_DOCS_WORK/.current"
    echo "### $1"
}
__end() {
    if [ "$(wc -l <"$__fails")" -eq "$__fails_at_start" ]; then
        echo "ok   $__loc" >>"$SGBD_DOCS_WORK/.passed"
    fi
}
# __wait_port ARGS...: wait up to 10 s for the port of the first http://
# URL in ARGS to accept connections, as a person would wait for a daemon
# started in the line before.
__wait_port() {
    local a hostport host port
    for a in "$@"; do
        case $a in http://*) hostport=${a#http://}; hostport=${hostport%%/*}
                             break ;; esac
    done
    [ -n "${hostport:-}" ] || return 0
    host=${hostport%:*}; port=${hostport##*:}
    [ "$port" != "$hostport" ] || port=80
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
        sleep 0.1
    done
}
curl() {
    local hdr=$SGBD_DOCS_WORK/.curl_headers rc=0 code
    : >"$hdr"
    __wait_port "$@"
    command curl --max-time 60 -D "$hdr" "$@" || rc=$?
    code=$(awk '/^HTTP\//{c = $2} END {print c}' "$hdr")
    # 23: the reader of a pipe (| head) stopped early; the answer came.
    if [ $rc -eq 23 ] && [ "${code:-0}" -lt 400 ] && [ -n "$code" ]; then
        rc=0
    fi
    if [ $rc -ne 0 ]; then
        echo "FAIL $__loc: curl $* exited $rc (HTTP ${code:-none})" >>"$__fails"
        return $rc
    fi
    if [ "$__http_errors" = 0 ] && [ "${code:-0}" -ge 400 ]; then
        echo "FAIL $__loc: curl $* answered HTTP $code" >>"$__fails"
        return 22
    fi
}
__demo() {
    local out=$SGBD_DOCS_WORK/.demo.out err=$SGBD_DOCS_WORK/.demo.err line
    sgbd demo --dir "$SGBD_DOCS_WORK/sgbd-demo" \
        --listen "127.0.0.1:$SGBD_DOCS_PORT" >"$out" 2>"$err" &
    local pid=$!
    for _ in $(seq 600); do
        grep -q 'ev=serve_ready' "$err" && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q 'ev=serve_ready' "$err"; then
        echo "FAIL $__loc: sgbd demo did not start: $(tail -3 "$err")" >>"$__fails"
        return 1
    fi
    grep -c '^  curl ' "$out" >/dev/null ||
        { echo "FAIL $__loc: sgbd demo printed no curl call" >>"$__fails"; return 1; }
    while IFS= read -r line; do
        echo "+ $line"
        eval "$line" || true
    done < <(sed -n 's/^  \(curl .*\)$/\1/p' "$out")
    kill -TERM $pid
    wait $pid || { echo "FAIL $__loc: sgbd demo exited $? on SIGTERM" >>"$__fails"; return 1; }
}
make() {
    command make -n -C "$SGBD_SOURCE" "$@" >/dev/null || {
        echo "FAIL $__loc: make -n $* in the source tree failed" >>"$__fails"
        return 1
    }
    case " $* " in *" demo "*) __demo ;; esac
}
EOF
}

# run_file FILE: one session for the runnable blocks of FILE.
run_file() {
    local rel=$1 work port script log
    work=$tmp/$(echo "$rel" | tr '/.' '__')
    mkdir -p "$work/tmp" "$work/build" "$work/bin"
    ln -s "$bin" "$work/build/sgbd"
    ln -s "$bin" "$work/bin/sgbd"
    for d in configs proto clients systemd docs; do
        [ -d "$src/$d" ] && cp -r "$src/$d" "$work/$d"
    done
    port=$(free_port)
    script=$work/.script.sh
    log=$work/.log
    { preamble; extract "$rel" | rewrite "$work" "$port"; } >"$script"
    if ! grep -q '^__block ' "$script"; then
        echo "--   $rel: no runnable sh blocks"
        return
    fi
    (cd "$work" && SGBD_DOCS_WORK=$work SGBD_DOCS_PORT=$port \
        SGBD_SOURCE=$src PATH="$work/bin:$PATH" \
        timeout 600 bash "$script") >"$log" 2>&1
    local rc=$?
    if [ -f "$work/.passed" ]; then
        cat "$work/.passed"
        pass=$((pass + $(wc -l <"$work/.passed")))
    fi
    if [ $rc -ne 0 ] || [ -s "$work/.curl_failures" ]; then
        fail=$((fail + 1))
        if [ $rc -eq 124 ]; then
            echo "FAIL $(cat "$work/.current"): timed out (600 s)"
        fi
        sed 's/^/     /' "$work/.curl_failures" 2>/dev/null
        echo "     last output of $rel:"
        tail -n 25 "$log" | sed 's/^/     | /'
    fi
}

if [ -n "${SGBD_DOCS_FILES:-}" ]; then
    read -r -a files <<<"$SGBD_DOCS_FILES"
else
    files=(README.md)
    for f in "$src"/docs/*.md; do
        [ -f "$f" ] && files+=("docs/$(basename "$f")")
    done
fi
for f in "${files[@]}"; do
    run_file "$f"
done
echo "$pass blocks passed, $fail files failed"
[ $fail -eq 0 ]

#!/bin/bash
# test_store_cli.sh - sgbd import / check / backup / checkpoints, through
# the real binary: exit codes, one-line errors, idempotent re-import.
# ctest: labels=integration timeout=120
set -u

BIN=${SGBD_BIN:-./sgbd}
TMP=$(mktemp -d /tmp/sgbd-test-store-cli-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0

# expect CODE DESCRIPTION -- COMMAND...: run it, keep stdout/stderr.
expect() {
    local want=$1 what=$2
    shift 3
    "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL $what: exit $got, expected $want" >&2
        sed 's/^/    /' "$TMP/err" >&2
        fails=$((fails + 1))
    else
        echo "ok   $what" >&2
    fi
}

# has FILE TEXT DESCRIPTION: FILE contains TEXT.
has() {
    if ! grep -qF -- "$2" "$TMP/$1"; then
        echo "FAIL $3: '$2' not in $1:" >&2
        sed 's/^/    /' "$TMP/$1" >&2
        fails=$((fails + 1))
    fi
}

expect 0 "import --help" -- "$BIN" import --help
has out "--force-pread" "import help names its options"
expect 2 "import without --data is a usage error" -- \
    "$BIN" import --db "$TMP/db"
has err "--data DIR is required" "usage error says what is missing"
expect 2 "an unknown option is a usage error" -- \
    "$BIN" check --db "$TMP/db" --frobnicate
expect 1 "import of a missing folder fails" -- \
    "$BIN" import --data "$TMP/nowhere" --db "$TMP/db" --quiet
[ "$(wc -l <"$TMP/err")" -eq 1 ] || { echo "FAIL: error is not one line" >&2;
                                      fails=$((fails + 1)); }
expect 1 "check of a missing store fails" -- "$BIN" check --db "$TMP/none"
[ ! -e "$TMP/none" ] || { echo "FAIL: check created a store" >&2;
                          fails=$((fails + 1)); }

expect 0 "synth a small catalogue" -- \
    "$BIN" synth --out "$TMP/syn" --users 60 --items 40
expect 0 "import it" -- "$BIN" import --data "$TMP/syn" --db "$TMP/db" --quiet
has out "60 users, 40 items" "import summary counts"
has out "channels image:128,text:64" "channels named after their files"
expect 0 "import it again, as JSON" -- \
    "$BIN" import --data "$TMP/syn" --db "$TMP/db" --quiet --json
has out '"new_interactions": 0' "re-import appends nothing"
has out '"users": 60' "re-import keeps the users"
expect 0 "import with pread" -- \
    "$BIN" import --data "$TMP/syn" --db "$TMP/db2" --quiet --force-pread
has out "via pread" "--force-pread reads with pread"

expect 0 "check a healthy store" -- "$BIN" check --db "$TMP/db"
has out "ok: 40 items, 60 users" "check summary"
expect 0 "backup" -- "$BIN" backup --db "$TMP/db" --out "$TMP/backup.mdb"
expect 1 "backup never overwrites" -- \
    "$BIN" backup --db "$TMP/db" --out "$TMP/backup.mdb"
has err "exists" "overwrite refusal says why"
expect 0 "check the backup file" -- "$BIN" check --db "$TMP/backup.mdb"
has out "ok: 40 items, 60 users" "backup has everything"

expect 0 "list checkpoints of a store without any" -- \
    "$BIN" checkpoints --db "$TMP/db" --json
has out "[]" "empty list"
expect 1 "rollback to a missing version" -- \
    "$BIN" checkpoints rollback --db "$TMP/db" 5
has err "checkpoint 5 not found" "rollback error names the version"
expect 2 "rollback needs a version" -- \
    "$BIN" checkpoints rollback --db "$TMP/db"

if [ -f "${SGBD_DATA:-../shared/data}/scientific/scientific.inter" ]; then
    expect 0 "import scientific" -- "$BIN" import --quiet \
        --data "${SGBD_DATA:-../shared/data}/scientific" --db "$TMP/sci"
    has out "2928 users, 1585 items, 19568 interactions" "scientific counts"
    has out "image:512,text:512" "scientific channels"
fi

[ "$fails" -eq 0 ] || { echo "$fails failed" >&2; exit 1; }
echo "all passed" >&2

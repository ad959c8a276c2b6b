# Shared helpers for the end-to-end tests in tests/cli/. Source it:
#   . "$(dirname "$0")/lib.sh"
# Environment (set by ct_cli_test in tests/CMakeLists.txt):
#   CELTRACE  path of the celtrace binary     CT_TMP   scratch folder
#   CT_SRC    source tree                     CT_BUILD build tree
# Each test makes its own folder $T_DIR under $CT_TMP, removed when all
# checks pass and kept (and named) when one fails.
set -u -o pipefail

: "${CELTRACE:?set CELTRACE to the celtrace binary}"
CT_TMP=${CT_TMP:-/tmp}
mkdir -p "$CT_TMP"
T_NAME=${T_NAME:-$(basename "$0" .sh)}
T_DIR=$(mktemp -d "$CT_TMP/cli_$T_NAME.XXXXXX")
T_PASS=0
T_FAIL=0
T_START=$SECONDS
# Never prompt: a test that forgets the passphrase fails instead of hanging
# on /dev/tty.
export CELTRACE_PASSPHRASE=${CELTRACE_PASSPHRASE:-test passphrase}
unset CELTRACE_HOME
# ASan: leaks are errors; stop at the first report so the exit code shows it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

t_cleanup() {
    if [ "$T_FAIL" -eq 0 ]; then
        rm -rf "$T_DIR"
    else
        echo "kept $T_DIR for inspection" >&2
    fi
}
trap t_cleanup EXIT

ok() {
    T_PASS=$((T_PASS + 1))
}

bad() {
    T_FAIL=$((T_FAIL + 1))
    echo "FAIL: $*" >&2
}

# check DESCRIPTION COMMAND...: passes when COMMAND succeeds.
check() {
    local desc=$1
    shift
    if "$@" >"$T_DIR/check.out" 2>&1; then
        ok
    else
        bad "$desc"
        head -c 600 "$T_DIR/check.out" >&2
    fi
}

# run COMMAND...: run with stdin from /dev/null; sets RC, and the files
# $T_DIR/out and $T_DIR/err.
run() {
    "$@" </dev/null >"$T_DIR/out" 2>"$T_DIR/err"
    RC=$?
}

# ct ARGS...: run celtrace (see run).
ct() {
    run "$CELTRACE" "$@"
}

out() { cat "$T_DIR/out"; }
err() { cat "$T_DIR/err"; }

# expect_ok DESCRIPTION: the last run exited 0 with nothing on stderr.
expect_ok() {
    if [ "$RC" -eq 0 ] && [ ! -s "$T_DIR/err" ]; then
        ok
    else
        bad "$1: exit $RC, stderr: $(head -c 300 "$T_DIR/err")"
    fi
}

# expect_error_output DESCRIPTION: the last run failed as the contract says:
# exit 2, empty stdout, stderr exactly one line starting "celtrace: ".
expect_error_output() {
    local desc=$1 lines
    lines=$(wc -l <"$T_DIR/err")
    if [ "$RC" -ne 2 ]; then
        bad "$desc: exit $RC, wanted 2 (stderr: $(head -c 300 "$T_DIR/err"))"
    elif [ -s "$T_DIR/out" ]; then
        bad "$desc: stdout not empty: $(head -c 300 "$T_DIR/out")"
    elif [ "$lines" -ne 1 ] || ! head -n 1 "$T_DIR/err" | grep -q '^celtrace: .'; then
        bad "$desc: stderr is not one 'celtrace: ' line: $(head -c 300 "$T_DIR/err")"
    else
        ok
    fi
}

# home_state DIR: the file list with modes and sizes, then a hash of every
# file; "absent" if DIR does not exist. Equal states mean nothing changed,
# not even a stray -wal, -shm or temporary file.
home_state() {
    if [ ! -e "$1" ]; then
        echo absent
        return
    fi
    (
        cd "$1" || exit 1
        find . -printf '%y %m %s %p\n' | LC_ALL=C sort
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
    )
}

# expect_error DESCRIPTION HOME COMMAND...: run COMMAND and check the error
# contract (expect_error_output) and that HOME is byte for byte as before.
expect_error() {
    local desc=$1 home=$2 before after
    shift 2
    before=$(home_state "$home")
    run "$@"
    expect_error_output "$desc"
    after=$(home_state "$home")
    if [ "$before" = "$after" ]; then
        ok
    else
        bad "$desc: $home changed"
        diff <(echo "$before") <(echo "$after") | head -20 >&2
    fi
}

# mode_of PATH: octal permission bits.
mode_of() {
    stat -c %a "$1"
}

# finish: print the summary line and exit non-zero on any failure.
finish() {
    echo "$T_NAME: $((SECONDS - T_START)) s"
    echo "$T_PASS passed, $T_FAIL failed"
    [ "$T_FAIL" -eq 0 ]
    exit $?
}

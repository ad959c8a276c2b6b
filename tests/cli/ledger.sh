#!/usr/bin/env bash
# End to end: the provenance ledger through the real celtrace command.
# Concurrent embeds give unique serials and one linear chain; kill -9 in
# the middle of embeds leaves a ledger that verifies and no output file
# without its record; tampering with the database makes `ledger verify`
# exit 1 naming the record; an export checks with the public key alone.
#
# The concurrency run is 8 processes x CT_LEDGER_FILES files each (default
# 20, so the suite stays fast; CT_LEDGER_FILES=50 gives the issue's 400).
. "$(dirname "$0")/lib.sh"

: "${CT_SAMPLES:?set CT_SAMPLES to the samples folder}"
IM_CONVERT=/usr/bin/convert # the real ImageMagick 6; a 'convert' on PATH may be a stand-in
for tool in "$IM_CONVERT" jq sqlite3 sha256sum; do
    if ! command -v "$tool" >/dev/null; then
        bad "missing tool $tool (run scripts/install-deps.sh)"
        finish
    fi
done
PROCS=8
FILES=${CT_LEDGER_FILES:-20}

H=$T_DIR/home
W=$T_DIR/work
mkdir -p "$W"
CEL=$CT_SAMPLES/images/cel_headmo_rgba_640x480.png
# A small textured image keeps 8 x FILES embeds quick; at 0.12 MP it still
# passes embed's blind self-check with margin (z 13-16 against 8.2), so a
# successful embed prints nothing on stderr.
"$IM_CONVERT" -size 400x300 plasma:fractal -blur 0x1 "$W/small.png"

ct --home "$H" init --studio "Ledger CLI Studio"
expect_ok "init"
ct --home "$H" vendor add "Aster Ink"
expect_ok "vendor add Aster Ink"
ct --home "$H" vendor add "Birch Frames"
expect_ok "vendor add Birch Frames"

# ---- help and usage -------------------------------------------------------------
ct ledger --help
expect_ok "ledger --help"
check "ledger --help starts with Usage" grep -q "^Usage: celtrace ledger list" "$T_DIR/out"
check "ledger --help has examples" grep -q "^Examples:" "$T_DIR/out"
ct --help
check "main help lists ledger" grep -q "ledger list" "$T_DIR/out"
expect_error "ledger without a command" "$H" "$CELTRACE" --home "$H" ledger
expect_error "ledger frobnicate" "$H" "$CELTRACE" --home "$H" ledger frobnicate
expect_error "ledger show without id" "$H" "$CELTRACE" --home "$H" ledger show
expect_error "ledger show abc" "$H" "$CELTRACE" --home "$H" ledger show abc
expect_error "ledger show 0" "$H" "$CELTRACE" --home "$H" ledger show 0
expect_error "ledger show 99 (none)" "$H" "$CELTRACE" --home "$H" ledger show 99
expect_error "ledger list --since garbage" "$H" "$CELTRACE" --home "$H" ledger list --since soon
expect_error "ledger check without --pubkey" "$H" "$CELTRACE" --home "$H" ledger check x.jsonl
expect_error "ledger verify --vendor" "$H" "$CELTRACE" --home "$H" ledger verify --vendor x
expect_error "ledger list --vendor unknown" "$H" "$CELTRACE" --home "$H" ledger list --vendor Nobody

# ---- an empty ledger, then embeds with --asset -----------------------------------------
ct --home "$H" ledger verify
expect_ok "verify an empty ledger"
ct --home "$H" ledger list --json
expect_ok "list an empty ledger"
check "empty list prints nothing" test ! -s "$T_DIR/out"

ct --home "$H" embed --vendor "Aster Ink" "$CEL" -o "$W/cel_aster.png" --asset "ep12/sc04 cel" --json
expect_ok "embed with --asset"
check "embed --json has record_id 1" test "$(jq -r .record_id "$T_DIR/out")" = 1
SERIAL1=$(jq -r .serial "$T_DIR/out")
ct --home "$H" ledger show 1 --json
expect_ok "ledger show 1 --json"
check "record 1: asset recorded" test "$(jq -r .asset "$T_DIR/out")" = "ep12/sc04 cel"
check "record 1: vendor" test "$(jq -r .vendor "$T_DIR/out")" = "Aster Ink"
check "record 1: serial" test "$(jq -r .serial "$T_DIR/out")" = "$SERIAL1"
check "record 1: output hash" test "$(jq -r .output_sha256 "$T_DIR/out")" = \
    "$(sha256sum <"$W/cel_aster.png" | cut -d' ' -f1)"
check "record 1: input hash" test "$(jq -r .input_sha256 "$T_DIR/out")" = \
    "$(sha256sum <"$CEL" | cut -d' ' -f1)"
check "record 1: operator user@host" grep -q '"operator":"[^"]*@[^"]*"' "$T_DIR/out"
check "record 1: signature valid" test "$(jq -r .signature_valid "$T_DIR/out")" = true
ct --home "$H" ledger show 1
expect_ok "ledger show 1"
check "show: text names the asset" grep -q "^asset: *ep12/sc04 cel" "$T_DIR/out"

# The verdict carries its signed record.
ct --home "$H" verify --json "$W/cel_aster.png"
expect_ok "verify a marked cel"
check "verdict identified" test "$(jq -r .status "$T_DIR/out")" = identified
check "verdict record id" test "$(jq -r .record.id "$T_DIR/out")" = 1
check "verdict record asset" test "$(jq -r .record.asset "$T_DIR/out")" = "ep12/sc04 cel"
check "verdict record signature" test "$(jq -r .record.signature_valid "$T_DIR/out")" = true
ct --home "$H" verify "$W/cel_aster.png"
check "verify text names the record" grep -q "ledger record 1, signature valid" "$T_DIR/out"
ct --home "$H" verify --json "$CEL"
check "unmarked: record null" test "$(jq -r .record "$T_DIR/out")" = null

# A failed embed records nothing and leaves nothing.
expect_error "embed into a missing folder" "$H" "$CELTRACE" --home "$H" embed \
    --vendor "Aster Ink" "$CEL" -o "$W/no/such/o.png"
expect_error "embed with a control character in --asset" "$H" "$CELTRACE" --home "$H" embed \
    --vendor "Aster Ink" "$CEL" -o "$W/o.png" --asset $'a\tb'
check "no output after a failed embed" test ! -e "$W/o.png"

# ---- concurrency: PROCS processes x FILES embeds ----------------------------------------------
C=$W/conc
mkdir -p "$C"
t0=$SECONDS
for p in $(seq 1 "$PROCS"); do
    (
        v="Aster Ink"
        [ $((p % 2)) -eq 0 ] && v="Birch Frames"
        for i in $(seq 1 "$FILES"); do
            "$CELTRACE" --home "$H" embed --vendor "$v" "$W/small.png" -o "$C/p${p}_$i.png" \
                --asset "p$p/$i" --json >>"$W/conc.$p.jsonl" 2>>"$W/conc.$p.err" </dev/null ||
                echo "embed p$p/$i failed" >>"$W/conc.$p.err"
        done
    ) &
done
wait
echo "concurrent embeds: $PROCS x $FILES in $((SECONDS - t0)) s"
N=$((PROCS * FILES + 1))
# The small image is near the blind self-check's bar, so some embeds may
# warn (exit 0, marked and recorded); only failures count here.
cat "$W"/conc.*.err 2>/dev/null | grep -v '^celtrace: warning: ' >"$W/conc.err"
check "no concurrent embed failed" test ! -s "$W/conc.err"
[ -s "$W/conc.err" ] && head -5 "$W/conc.err" >&2
ct --home "$H" ledger list --json
expect_ok "ledger list after the concurrent run"
cp "$T_DIR/out" "$W/list.jsonl"
check "$N records" test "$(wc -l <"$W/list.jsonl")" -eq "$N"
check "unique serials" test "$(jq -r .serial "$W/list.jsonl" | sort -u | wc -l)" -eq "$N"
check "ids 1..N in order" test "$(jq -r .id "$W/list.jsonl" | tr '\n' ' ')" = "$(seq -s ' ' 1 "$N") "
check "every record signed" test "$(jq -r .signature_valid "$W/list.jsonl" | sort -u)" = true
check "serials in the embeds' output match the ledger" test \
    "$(cat "$W"/conc.*.jsonl | jq -r .serial | sort)" = \
    "$(jq -r 'select(.id > 1) | .serial' "$W/list.jsonl" | sort)"
(cd "$C" && sha256sum -- *.png | cut -d' ' -f1 | sort) >"$W/files.sha"
check "every output file's hash is recorded" test -z \
    "$(comm -23 "$W/files.sha" <(jq -r .output_sha256 "$W/list.jsonl" | sort))"
ct --home "$H" ledger verify
expect_ok "ledger verify after the concurrent run"
check "verify counts $N" grep -q "ledger valid: $N records" "$T_DIR/out"
ct --home "$H" ledger list --vendor "Birch Frames" --json
check "list --vendor" test "$(wc -l <"$T_DIR/out")" -eq $((PROCS / 2 * FILES))
ct --home "$H" ledger list --asset "p3/2" --json
check "list --asset" test "$(jq -r .asset "$T_DIR/out")" = "p3/2"
ct --home "$H" ledger list --since 2100-01-01 --json
expect_ok "list --since a future date"
check "list --since future: none" test ! -s "$T_DIR/out"
ct --home "$H" ledger list --since 2000-01-01
check "list --since 2000 (text): all plus header" test "$(wc -l <"$T_DIR/out")" -eq $((N + 1))

# ---- kill -9 in the middle of embeds -------------------------------------------------------
K=$W/crash
mkdir -p "$K"
# Single embeds killed after a varying delay hit every phase: unlock,
# read, mark, write, fsync, commit, rename.
for i in $(seq 1 12); do
    "$CELTRACE" --home "$H" embed --vendor "Aster Ink" "$W/small.png" -o "$K/single_$i.png" \
        >/dev/null 2>&1 </dev/null &
    pid=$!
    sleep "0.$(printf '%02d' $((i * 7 % 40 + 5)))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
done
# Then a batch: 4 loops of embeds, each in its own process group so that one
# kill takes the loop and the embed it is running (killing the loop alone can
# orphan an embed that then commits after the checks below).
for p in 1 2 3 4; do
    # The loop writes its own pid: after setsid it is the group's id.
    setsid bash -c 'echo $$ >"$6"; for i in $(seq 1 40); do
        "$1" --home "$2" embed --vendor "Birch Frames" "$3" -o "$4/batch${5}_$i.png" \
            >/dev/null 2>&1 </dev/null
    done' _ "$CELTRACE" "$H" "$W/small.png" "$K" "$p" "$W/loop.pid.$p" &
done
# Kill once some embed of the batch has finished, however slow the machine
# (sanitizers, a loaded CI box): a fixed delay left no output at all there.
# Outputs appear only by rename after their record is committed.
for t in $(seq 1 900); do
    if compgen -G "$K/batch*.png" >/dev/null; then break; fi
    sleep 0.2
done
sleep 0.3
for p in 1 2 3 4; do
    kill -9 -- "-$(cat "$W/loop.pid.$p")" 2>/dev/null
done
wait 2>/dev/null
for p in 1 2 3 4; do
    for t in $(seq 1 100); do
        kill -0 -- "-$(cat "$W/loop.pid.$p")" 2>/dev/null || break
        sleep 0.1
    done
done
ct --home "$H" ledger verify
expect_ok "ledger verify after kill -9"
ct --home "$H" ledger list --json
cp "$T_DIR/out" "$W/list2.jsonl"
(cd "$K" && find . -maxdepth 1 -type f -name '[!.]*' -exec sha256sum {} + | cut -d' ' -f1 | sort) \
    >"$W/crash.sha"
check "some embeds finished before the kills" test -s "$W/crash.sha"
check "no output file without its record after kill -9" test -z \
    "$(comm -23 "$W/crash.sha" <(jq -r .output_sha256 "$W/list2.jsonl" | sort))"
check "no partial output (every output decodes)" test -z \
    "$(cd "$K" && for f in [!.]*; do [ -e "$f" ] || continue; "$IM_CONVERT" "$f" null: 2>/dev/null || echo "$f"; done)"
tmps=$(find "$K" -maxdepth 1 -name '.*.png' | wc -l)
echo "kill -9: $(wc -l <"$W/crash.sha") outputs, $tmps temporaries left"
ct --home "$H" embed --vendor "Aster Ink" "$W/small.png" -o "$K/after.png"
expect_ok "embed after the crashes"
ct --home "$H" ledger verify
expect_ok "ledger verify after the crashes and one more embed"

# ---- export and check with the public key alone -----------------------------------------
ct --home "$H" keys export-public
cp "$T_DIR/out" "$W/studio.pub"
ct --home "$H" ledger export -o "$W/ledger.jsonl"
expect_ok "ledger export -o"
ct --home "$H" ledger export
expect_ok "ledger export to stdout"
check "export to stdout equals the file" cmp -s "$T_DIR/out" "$W/ledger.jsonl"
check "export header" test "$(head -n 1 "$W/ledger.jsonl" | jq -r .format)" = celtrace-ledger
NREC=$(($(wc -l <"$W/ledger.jsonl") - 1))
# No home, no keystore: a third party has only the two files.
run env -u CELTRACE_HOME HOME=/nonexistent "$CELTRACE" ledger check "$W/ledger.jsonl" --pubkey "$W/studio.pub"
expect_ok "ledger check with only the public key"
check "check counts the records" grep -q "valid: $NREC records" "$T_DIR/out"

# check_fails DESC FILE RECORD: check exits 1 with one line naming the record.
check_fails() {
    run env -u CELTRACE_HOME HOME=/nonexistent "$CELTRACE" ledger check "$2" --pubkey "$W/studio.pub"
    if [ "$RC" -ne 1 ] || [ "$(wc -l <"$T_DIR/err")" -ne 1 ] ||
        ! grep -q "^celtrace: .*record $3\b" "$T_DIR/err"; then
        bad "$1: exit $RC, stderr: $(head -c 300 "$T_DIR/err")"
    else
        ok
    fi
}
sed '3s/"asset":"[^"]*"/"asset":"renamed"/' "$W/ledger.jsonl" >"$W/edit.jsonl"
check_fails "export with an edited line" "$W/edit.jsonl" 2
sed '4d' "$W/ledger.jsonl" >"$W/drop.jsonl"
check_fails "export with a dropped line" "$W/drop.jsonl" 3
sed '$d' "$W/ledger.jsonl" >"$W/trunc.jsonl"
check_fails "export with its last line dropped" "$W/trunc.jsonl" "$NREC"
run "$CELTRACE" ledger check "$W/nosuch.jsonl" --pubkey "$W/studio.pub"
expect_error_output "ledger check of a missing file"

# ---- tampering with the database ----------------------------------------------------------
# tamper DESC SQL RECORD: on a copy of the home, verify exits 1 with one
# stderr line naming the record.
tamper() {
    rm -rf "$W/th"
    cp -a "$H" "$W/th"
    sqlite3 "$W/th/celtrace.db" "$2"
    run "$CELTRACE" --home "$W/th" ledger verify
    if [ "$RC" -ne 1 ] || [ -s "$T_DIR/out" ] || [ "$(wc -l <"$T_DIR/err")" -ne 1 ] ||
        ! grep -q "^celtrace: ledger: record $3\b" "$T_DIR/err"; then
        bad "tamper $1: exit $RC, stderr: $(head -c 300 "$T_DIR/err")"
    else
        ok
    fi
}
tamper "edit a field" "UPDATE records SET asset='x' WHERE id=5" 5
tamper "delete a middle record" "DELETE FROM records WHERE id=7" 7
tamper "delete the last record" "DELETE FROM records WHERE id=(SELECT max(id) FROM records)" "$NREC"
tamper "insert a record" "INSERT INTO records SELECT $NREC+1, serial+1, vendor_id, vendor, asset,
    original, input_sha256, phash, output_sha256, algo_version, strength, issued_at, operator,
    record_hash, record_hash, signature FROM records WHERE id=$NREC" $((NREC + 1))
tamper "swap two records" "UPDATE records SET id=-1 WHERE id=3; UPDATE records SET id=3 WHERE id=4;
    UPDATE records SET id=4 WHERE id=-1" 3
tamper "re-sign nothing, change the time" "UPDATE records SET issued_at=0 WHERE id=1" 1

finish

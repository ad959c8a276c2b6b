#!/usr/bin/env bash
# End to end: informed detection through the real celtrace command. Copies
# of one cel issued to two vendors are resized to 20 %, cropped to 15 % of
# the area and saved at JPEG quality 15 (ImageMagick 6); where blind
# detection finds nothing, verify registers the file to the original in the
# ledger and names the right vendor, never the other one. The attacked
# unmarked original is matched to its asset and names nobody; an unrelated
# image matches nothing. --originals finds a moved original by content.
. "$(dirname "$0")/lib.sh"

: "${CT_SAMPLES:?set CT_SAMPLES to the samples folder}"
IM_CONVERT=/usr/bin/convert # the real ImageMagick 6; a 'convert' on PATH may be a stand-in
for tool in "$IM_CONVERT" jq; do
    if ! command -v "$tool" >/dev/null; then
        bad "missing tool $tool (run scripts/install-deps.sh)"
        finish
    fi
done

H=$T_DIR/home
W=$T_DIR/work
mkdir -p "$W/studio" "$W/masters"
# The original lives in a studio folder; its ledger record holds that path.
cp "$CT_SAMPLES/images/cel_headmo_rgba_640x480.png" "$W/studio/headmo.png"
ORIG=$W/studio/headmo.png

ct --home "$H" init --studio "Informed CLI Studio"
expect_ok "init"
for v in "Aster Ink" "Birch Frames" "Cobalt Cels"; do
    ct --home "$H" vendor add "$v"
    expect_ok "vendor add $v"
done

# ---- help and usage ---------------------------------------------------------
ct verify --help
expect_ok "verify --help"
check "verify --help documents --originals" grep -q -- "--originals DIR" "$T_DIR/out"
check "verify --help documents --informed" grep -q -- "--informed MODE" "$T_DIR/out"
expect_error "verify --informed bogus" "$H" "$CELTRACE" --home "$H" verify --informed bogus x.png
expect_error "verify --originals missing" "$H" "$CELTRACE" --home "$H" verify \
    --originals "$W/none" x.png

# ---- issue copies to two vendors ------------------------------------------------
ct --home "$H" embed --vendor "Aster Ink" "$ORIG" -o "$W/aster.png" --asset "ep3 headmo"
expect_ok "embed for Aster Ink"
ct --home "$H" embed --vendor "Birch Frames" "$ORIG" -o "$W/birch.png" --asset "ep3 headmo"
expect_ok "embed for Birch Frames"

# A larger cel for JPEG quality 15 (a 640x480 cel keeps too little).
ct --home "$H" embed --vendor "Aster Ink" "$CT_SAMPLES/images/cel_kid_rgba_1920x1080.png" \
    -o "$W/kid_aster.png"
expect_ok "embed cel_kid for Aster Ink"

# The attacks of issue 5, by the real ImageMagick 6.
"$IM_CONVERT" "$W/aster.png" -resize 20% -strip "$W/aster_r20.png"
"$IM_CONVERT" "$W/birch.png" -crop 248x186+200+140 +repage -strip "$W/birch_c15.png"
"$IM_CONVERT" "$W/kid_aster.png" -background white -alpha remove -alpha off -quality 15 \
    -strip "$W/kid_q15.jpg"
"$IM_CONVERT" "$ORIG" -crop 248x186+212+120 +repage -strip "$W/plain_c15.png"
"$IM_CONVERT" -size 320x240 plasma:fractal -blur 0x1 "$W/unrelated.png"

# verdict FILE [OPTIONS...]: verify --json, leaving the JSON in $T_DIR/out.
verdict() {
    local f=$1
    shift
    ct --home "$H" verify --json "$@" "$f"
}
field() { jq -r "$1" "$T_DIR/out"; }

# The informed path names the vendor each copy was issued to, and only that
# vendor, whatever the blind path found (--informed always reports both).
expect_named() { # FILE VENDOR ASSET RECIPIENTS
    verdict "$W/$1" --informed always
    check "$1: exit 0" test "$RC" -eq 0
    check "$1: one JSON line" test "$(wc -l <"$T_DIR/out")" -eq 1
    check "$1: status identified" test "$(field .status)" = identified
    check "$1: named $2" test "$(field .vendor)" = "$2"
    check "$1: informed names $2" test "$(field .informed.vendor)" = "$2"
    check "$1: informed probability <= 1e-9" \
        test "$(field '.informed.false_positive_probability <= 1e-9')" = true
    check "$1: asset matched" test "$(field .asset_match.asset)" = "$3"
    check "$1: record of $2" test "$(field .record.vendor)" = "$2"
    check "$1: record signature valid" test "$(field .record.signature_valid)" = true
    check "$1: every recipient tested" test "$(field '.informed.recipients | length')" = "$4"
    check "$1: tests counted" test "$(field .informed.tests)" = "$4"
    check "$1: no other recipient significant" \
        test "$(field "[.informed.recipients[] | select(.vendor != \"$2\") |
                        .false_positive_probability > 1e-6] | all")" = true
    if [ "$(field .named_by)" = informed ]; then
        INFORMED_NAMED=$((INFORMED_NAMED + 1))
    fi
}
INFORMED_NAMED=0
expect_named aster_r20.png "Aster Ink" "ep3 headmo" 2
expect_named birch_c15.png "Birch Frames" "ep3 headmo" 2
expect_named kid_q15.jpg "Aster Ink" "cel_kid_rgba_1920x1080.png" 1
# a 128x96 file is too small for the blind path: informed named it
verdict "$W/aster_r20.png" --informed never
check "r20: blind alone finds nothing" test "$(field .status)" = not_found
check "informed named at least the file blind missed" test "$INFORMED_NAMED" -ge 1

# the text output says which path named the vendor
ct --home "$H" verify "$W/aster_r20.png"
check "text: informed identification" grep -q 'identified (informed' "$T_DIR/out"
check "text: names the asset" grep -q 'derives from asset "ep3 headmo"' "$T_DIR/out"

# the unmarked original, cropped: the asset is known, nobody is named
verdict "$W/plain_c15.png"
check "unmarked crop: exit 1" test "$RC" -eq 1
check "unmarked crop: not_found" test "$(field .status)" = not_found
check "unmarked crop: no vendor" test "$(field .vendor)" = null
check "unmarked crop: asset matched" test "$(field .asset_match.asset)" = "ep3 headmo"
check "unmarked crop: informed ran" test "$(field '.informed.recipients | length')" -eq 2
check "unmarked crop: informed names nobody" test "$(field .informed.vendor)" = null

# an unrelated image: no match, nobody
verdict "$W/unrelated.png"
check "unrelated: exit 1" test "$RC" -eq 1
check "unrelated: no asset match" test "$(field .asset_match)" = null
check "unrelated: no vendor" test "$(field .vendor)" = null

# --informed always keeps a blind verdict and reports informed beside it
verdict "$W/aster.png" --informed always
check "always: blind names Aster Ink" test "$(field .named_by)" = blind
check "always: informed agrees" test "$(field .informed.vendor)" = "Aster Ink"

# the original moved away: found again with --originals, by content
mv "$ORIG" "$W/masters/renamed_master.png"
verdict "$W/birch_c15.png" --informed always
check "moved original: no match without --originals" test "$(field .asset_match)" = null
check "moved original: informed cannot run without it" test "$(field .informed)" = null
verdict "$W/birch_c15.png" --informed always --originals "$W/masters"
check "--originals: informed names Birch Frames" test "$(field .informed.vendor)" = "Birch Frames"
check "--originals: the original's new place" \
    test "$(field .asset_match.original)" = "$W/masters/renamed_master.png"

finish

#!/usr/bin/env bash
# End to end: tag images for a vendor with the real celtrace command, trace
# them back with `verify`, attack the marked copies with real tools
# (ImageMagick 6 /usr/bin/convert, cwebp) and check the error contract of
# embed and verify: exit 2, one 'celtrace: ' line, no output, no temp file.
. "$(dirname "$0")/lib.sh"

: "${CT_SAMPLES:?set CT_SAMPLES to the samples folder}"
IMG=$CT_SAMPLES/images
# The real ImageMagick 6, by full path: a 'convert' earlier on PATH may be
# something else.
IM_CONVERT=/usr/bin/convert
IM_COMPARE=/usr/bin/compare
IM_IDENTIFY=/usr/bin/identify
for tool in "$IM_CONVERT" "$IM_COMPARE" "$IM_IDENTIFY" cwebp jq; do
    if ! command -v "$tool" >/dev/null; then
        bad "missing tool $tool (run scripts/install-deps.sh)"
        finish
    fi
done

H=$T_DIR/home
W=$T_DIR/work
mkdir -p "$W"
A="Aster Ink"
B="Birch Frames"
CEL=cel_headmo_rgba_640x480.png                           # 8-bit RGBA cel
SKETCH=sketch_woodpecker_gray_progressive_1920x1080.jpg   # grayscale progressive JPEG
DEEP=bg_garden_16bit_1920x1080.png                        # 16-bit RGB painting
cp "$IMG/$CEL" "$IMG/$SKETCH" "$IMG/$DEEP" "$W/"

ct --home "$H" init --studio "Image Test Studio"
expect_ok "init"
for v in "$A" "$B" "Gone Vendor"; do
    ct --home "$H" vendor add "$v" --json
    expect_ok "vendor add $v"
done
ct --home "$H" vendor revoke "Gone Vendor"
expect_ok "vendor revoke"

# identify FILE FORMAT: ImageMagick's view of a file.
ident() {
    "$IM_IDENTIFY" -format "$2" "$1" 2>/dev/null
}

# ---- help --------------------------------------------------------------------------
for cmd in embed verify; do
    ct "$cmd" --help
    expect_ok "$cmd --help"
    check "$cmd --help starts with Usage" grep -q "^Usage: celtrace $cmd" "$T_DIR/out"
    check "$cmd --help has an example" grep -q Example "$T_DIR/out"
done

# ---- embed ---------------------------------------------------------------------------
# embed_json NAME VENDOR IN OUT [EXPECTED_NAME]: embed with --json and check
# the object.
embed_json() {
    local name=$1 in=$3 outf=$4 vendor=${5:-$2}
    ct --home "$H" embed --vendor "$2" "$in" -o "$outf" --json
    expect_ok "embed $name"
    cp "$T_DIR/out" "$W/$name.embed.json"
    check "embed $name: --json is one object with vendor, serial, psnr_y >= 40" \
        jq -e --arg v "$vendor" \
        '.vendor == $v and (.serial | type) == "number" and .psnr_y >= 40
         and .ssim_y > 0.9 and .vendor_id >= 1 and .output != null' "$T_DIR/out"
    check "embed $name: one line" test "$(wc -l <"$T_DIR/out")" -eq 1
    check "embed $name: the image default strength 1 reported" jq -e '.strength == 1' "$T_DIR/out"
    check "embed $name: output exists" test -s "$outf"
}
mkdir -p "$W/out"
embed_json cel_A "$A" "$W/$CEL" "$W/out/cel_A.png"
embed_json sketch_A "$A" "$W/$SKETCH" "$W/out/sketch_A.jpg"
embed_json cel_B "$B" "$W/$CEL" "$W/out/cel_B.png"
embed_json deep_A 1 "$W/$DEEP" "$W/out/deep_A.png" "$A"
check "embed by id names the vendor" jq -e --arg v "$A" '.vendor == $v and .vendor_id == 1' \
    "$W/deep_A.embed.json"
check "two embeds get different serials" test \
    "$(jq -r .serial "$W/cel_A.embed.json")" != "$(jq -r .serial "$W/cel_B.embed.json")"
check "no temporary files left beside the outputs" \
    test "$(ls -A "$W/out" | LC_ALL=C sort | tr '\n' ' ')" = "cel_A.png cel_B.png deep_A.png sketch_A.jpg "

# The blind self-check: small images (up to 0.5 MP) are read back at their
# own geometry; a 1080p image is not checked (null).
check "cel (640x480) self-check: traceable blind" jq -e \
    '.blind_check.traceable == true and .blind_check.z >= .blind_check.needed
     and .blind_check.needed > 7' "$W/cel_A.embed.json"
check "1080p: no self-check" jq -e '.blind_check == null' "$W/sketch_A.embed.json"
# A thumbnail too small to carry a blind-traceable tile: marked and recorded,
# exit 0, and one warning line; informed verify still names the vendor.
"$IM_CONVERT" "$W/$DEEP" -resize 120x68 -depth 8 "$W/thumb.png"
ct --home "$H" embed --json --vendor "$A" "$W/thumb.png" -o "$W/thumb_A.png"
check "thumbnail: exit 0" test "$RC" -eq 0
check "thumbnail: self-check says not traceable blind" jq -e \
    '.blind_check.traceable == false and .blind_check.z < .blind_check.needed' "$T_DIR/out"
check "thumbnail: one warning line on stderr" test "$(wc -l <"$T_DIR/err")" -eq 1
check "thumbnail: the warning says so" grep -q '^celtrace: warning: .*thumb_A.png: .*too weak' \
    "$T_DIR/err"
ct --home "$H" verify --json "$W/thumb_A.png"
check "thumbnail: informed verify names the vendor" jq -e --arg v "$A" \
    '.status == "identified" and .vendor == $v and .named_by == "informed"' "$T_DIR/out"

# Plain text output: one line that names the vendor.
ct --home "$H" embed --vendor "$B" "$W/$SKETCH" -o "$W/sketch_B.jpg"
expect_ok "embed (text)"
check "embed text names the vendor and serial" grep -q "marked for $B (vendor 2), serial [0-9]" \
    "$T_DIR/out"

# ---- the output keeps what the input was ------------------------------------------------
for pair in "$CEL:cel_A.png" "$SKETCH:sketch_A.jpg" "$DEEP:deep_A.png"; do
    in=$W/${pair%%:*}
    o=$W/out/${pair#*:}
    check "$(basename "$o") keeps dimensions and depth" \
        test "$(ident "$in" '%w %h %z')" = "$(ident "$o" '%w %h %z')"
done
check "16-bit stays 16-bit" test "$(ident "$W/out/deep_A.png" '%z')" = 16
check "gray JPEG stays gray" test "$(ident "$W/out/sketch_A.jpg" '%[colorspace]')" = Gray
check "JPEG quality follows the input" \
    test "$(ident "$W/$SKETCH" '%Q')" = "$(ident "$W/out/sketch_A.jpg" '%Q')"
check "cel keeps an alpha channel" test "$(ident "$W/out/cel_A.png" '%A')" = True
"$IM_CONVERT" "$W/$CEL" -alpha extract "$W/alpha_in.png"
"$IM_CONVERT" "$W/out/cel_A.png" -alpha extract "$W/alpha_out.png"
ae=$("$IM_COMPARE" -metric AE "$W/alpha_in.png" "$W/alpha_out.png" null: 2>&1)
check "alpha is bit-exact (AE $ae)" test "$ae" = 0
check "the mark changed the pixels" test "$("$IM_COMPARE" -metric AE "$W/$CEL" \
    "$W/out/cel_A.png" null: 2>&1)" != 0

# ---- verify --------------------------------------------------------------------------------
# verdict FILE: verify --json one file; sets RC and leaves the line in out.
verdict() {
    ct --home "$H" verify --json "$1"
}
# expect_vendor DESC FILE VENDOR: the file is identified as VENDOR, with a
# false-positive probability of at most 1e-9, and exit 0.
expect_vendor() {
    local desc=$1 f=$2 v=$3
    verdict "$f"
    if [ "$RC" -eq 0 ] && jq -e --arg v "$v" \
        '.status == "identified" and .vendor == $v and (.vendor_id | type) == "number"
         and .false_positive_probability <= 1e-9' "$T_DIR/out" >/dev/null 2>&1; then
        ok
    else
        bad "$desc: wanted $v, exit $RC: $(head -c 400 "$T_DIR/out") $(head -c 200 "$T_DIR/err")"
    fi
}
expect_vendor "marked cel" "$W/out/cel_A.png" "$A"
check "verify --json is one line" test "$(wc -l <"$T_DIR/out")" -eq 1
check "verdict carries the embed's serial" \
    test "$(jq -r .serial "$T_DIR/out")" = "$(jq -r .serial "$W/cel_A.embed.json")"
check "verdict names the file" jq -e --arg f "$W/out/cel_A.png" '.file == $f' "$T_DIR/out"
expect_vendor "marked sketch JPEG" "$W/out/sketch_A.jpg" "$A"
expect_vendor "marked 16-bit PNG" "$W/out/deep_A.png" "$A"
expect_vendor "copy for B" "$W/out/cel_B.png" "$B"
expect_vendor "sketch copy for B" "$W/sketch_B.jpg" "$B"

# The unmarked original: not_found, exit 1, nobody named.
verdict "$W/$CEL"
check "unmarked original: exit 1" test "$RC" -eq 1
check "unmarked original: not_found, nobody named" jq -e \
    '.status == "not_found" and .vendor == null and .vendor_id == null
     and .false_positive_probability == null' "$T_DIR/out"
ct --home "$H" verify "$W/$SKETCH"
check "unmarked original (text): exit 1" test "$RC" -eq 1
check "unmarked original (text): 'no mark found'" grep -q "no mark found" "$T_DIR/out"

# Text output names the vendor.
ct --home "$H" verify "$W/out/cel_B.png"
expect_ok "verify (text)"
check "verify text names B" grep -q "identified: vendor \"$B\"" "$T_DIR/out"

# A folder is walked (recursively, hidden files skipped), one line per file.
mkdir -p "$W/dump/sub"
cp "$W/out/cel_A.png" "$W/dump/a.png"
cp "$W/out/cel_B.png" "$W/dump/sub/b.png"
cp "$W/$CEL" "$W/dump/sub/plain.png"
cp "$W/out/cel_A.png" "$W/dump/.hidden.png"
ct --home "$H" verify --json "$W/dump"
expect_ok "verify a folder"
check "folder: three lines" test "$(wc -l <"$T_DIR/out")" -eq 3
check "folder: a.png is A" jq -se --arg v "$A" \
    'map(select(.file | endswith("/a.png")))[0] | .status == "identified" and .vendor == $v' \
    "$T_DIR/out"
check "folder: sub/b.png is B" jq -se --arg v "$B" \
    'map(select(.file | endswith("/sub/b.png")))[0] | .vendor == $v' "$T_DIR/out"
check "folder: sub/plain.png is not_found" jq -se \
    'map(select(.file | endswith("/sub/plain.png")))[0] | .status == "not_found"' "$T_DIR/out"
# A link back up the tree is not followed (it listed the folder again
# and again, 64 levels deep, then failed on the over-long path).
ln -s .. "$W/dump/sub/up"
ct --home "$H" verify --json "$W/dump"
check "folder with a link loop: exit 0, three lines" \
    test "$RC" -eq 0 -a "$(wc -l <"$T_DIR/out")" -eq 3
check "folder with a link loop: one warning naming the link" \
    sh -c "test \$(wc -l <'$T_DIR/err') -eq 1 && grep -q '^celtrace: warning: .*/sub/up: a link back' '$T_DIR/err'"
rm "$W/dump/sub/up"

# ---- attacks with real tools ---------------------------------------------------------------
AT=$W/attacked
mkdir -p "$AT"
S_A=$W/out/sketch_A.jpg
"$IM_CONVERT" "$S_A" -strip -quality 75 "$AT/jpeg75.jpg"
cwebp -quiet -q 75 "$S_A" -o "$AT/webp75.webp"
"$IM_CONVERT" "$S_A" -resize 50% "$AT/resize50.png"
"$IM_CONVERT" "$S_A" -flop "$AT/mirror.png"
"$IM_CONVERT" "$W/sketch_B.jpg" -flop -quality 75 "$AT/mirror_B.jpg"
# Grayscale of a colour image: the 16-bit painting, re-exported as 8-bit JPEG.
"$IM_CONVERT" "$W/out/deep_A.png" -colorspace Gray -depth 8 -quality 90 "$AT/gray.jpg"
"$IM_CONVERT" "$W/out/cel_A.png" -flop "$AT/cel_mirror.png"
"$IM_CONVERT" "$W/out/cel_A.png" -resize 50% "$AT/cel_resize50.png"
"$IM_CONVERT" "$W/out/cel_B.png" -colorspace Gray "$AT/cel_gray_B.png"
# Aspect changes: squeezed to 3/4 of its width (16:9 -> 4:3) then JPEG,
# stretched to 4/3 of its height.
"$IM_CONVERT" "$S_A" -resize '75%x100%!' -strip -quality 80 "$AT/squeeze.jpg"
"$IM_CONVERT" "$W/out/deep_A.png" -resize '100%x133%!' -depth 8 "$AT/stretch.png"
# Quarter and half turns (a viewer's rotate button, a portrait export) and
# the upside-down mirror.
"$IM_CONVERT" "$S_A" -rotate 90 -quality 85 "$AT/turn90.jpg"
"$IM_CONVERT" "$W/out/cel_A.png" -rotate 180 "$AT/cel_turn180.png"
"$IM_CONVERT" "$W/out/deep_A.png" -rotate 270 -depth 8 "$AT/turn270.png"
"$IM_CONVERT" "$S_A" -flip "$AT/flip.png"
for f in jpeg75.jpg webp75.webp resize50.png mirror.png gray.jpg cel_mirror.png cel_resize50.png \
    squeeze.jpg stretch.png turn90.jpg cel_turn180.png turn270.png flip.png; do
    check "attack output $f exists" test -s "$AT/$f"
    expect_vendor "attack $f" "$AT/$f" "$A"
done
expect_vendor "attack mirror + JPEG 75 of B's copy" "$AT/mirror_B.jpg" "$B"
expect_vendor "attack grayscale of B's cel" "$AT/cel_gray_B.png" "$B"
check "the mirror is reported" jq -e '.mirrored == true' <(
    "$CELTRACE" --home "$H" verify --json "$AT/mirror.png" 2>/dev/null)

# Never the wrong vendor over everything above.
ct --home "$H" verify --json "$AT" "$W/out" "$W/sketch_B.jpg" "$W/$CEL" "$W/$SKETCH" "$W/$DEEP"
check "batch verify: exit 0" test "$RC" -eq 0
wrong=$(jq -r --arg a "$A" --arg b "$B" 'select(.status == "identified") |
    select((.file | test("_B[.]|mirror_B|cel_gray_B|sketch_B")) != (.vendor == $b)) | .file' \
    "$T_DIR/out")
check "no file is named for the wrong vendor ($wrong)" test -z "$wrong"
for f in "$CEL" "$SKETCH" "$DEEP"; do
    check "batch verify: unmarked original $f is not_found" jq -se --arg f "$W/$f" \
        'map(select(.file == $f)) | length == 1 and .[0].status == "not_found"' "$T_DIR/out"
done

# Workers and shards: the same lines in the same order whatever --jobs, and
# the shards of a list together verify each file exactly once. The batch
# above (default jobs) is the reference; a corrupt file is among the inputs.
cp "$T_DIR/out" "$W/batch_default.jsonl"
printf 'not an image' >"$AT/zz_corrupt.png"
for j in 1 3; do
    ct --home "$H" verify --json --jobs "$j" "$AT" "$W/out" "$W/sketch_B.jpg" "$W/$CEL" \
        "$W/$SKETCH" "$W/$DEEP"
    check "verify --jobs $j: exit 0 with a corrupt file among the inputs" test "$RC" -eq 0
    check "verify --jobs $j: the corrupt file is one error line" jq -se \
        'map(select(.file | endswith("/zz_corrupt.png"))) | length == 1 and .[0].status == "error"' \
        "$T_DIR/out"
    grep -v zz_corrupt "$T_DIR/out" >"$W/batch_$j.jsonl"
    check "verify --jobs $j: same lines, same order as the default" \
        cmp "$W/batch_default.jsonl" "$W/batch_$j.jsonl"
done
: >"$W/shards.jsonl"
for k in 1 2 3; do
    ct --home "$H" verify --json --shard "$k/3" "$AT" "$W/out" "$W/sketch_B.jpg" "$W/$CEL" \
        "$W/$SKETCH" "$W/$DEEP"
    grep -v zz_corrupt "$T_DIR/out" >>"$W/shards.jsonl"
done
check "shards 1/3..3/3 together: every file once, same verdicts" \
    cmp <(LC_ALL=C sort "$W/batch_default.jsonl") <(LC_ALL=C sort "$W/shards.jsonl")
rm -f "$AT/zz_corrupt.png"
for bad_opt in "--jobs 0" "--jobs x" "--jobs 65" "--shard 0/3" "--shard 4/3" "--shard 3" \
    "--shard 1/0" "--shard -1/2"; do
    # shellcheck disable=SC2086
    expect_error "verify $bad_opt" "$H" "$CELTRACE" --home "$H" verify $bad_opt "$W/out"
done

# ---- embed error paths -------------------------------------------------------------------------
# embed_error DESC ARGS...: celtrace embed fails per the contract, the output
# folder $E stays empty (no output, no temporary file) and the home is
# unchanged.
E=$W/errout
mkdir -p "$E"
embed_error() {
    local desc=$1
    shift
    expect_error "$desc" "$H" "$CELTRACE" --home "$H" "$@"
    local left
    left=$(ls -A "$E")
    if [ -z "$left" ]; then
        ok
    else
        bad "$desc: left files in the output folder: $left"
        rm -rf "${E:?}"/* "${E:?}"/.[!.]*
    fi
}
cp "$W/$CEL" "$W/half.png"
truncate -s $(($(stat -c %s "$W/$CEL") / 2)) "$W/half.png"
head -c 20000 /dev/urandom >"$W/x.png"
cp "$IMG/bg_backdrop_1920x1080.png" "$W/big.png"

embed_error "unknown vendor" embed --vendor "No Such Vendor" "$W/$CEL" -o "$E/o.png"
check "unknown vendor: says which" grep -q "No Such Vendor" "$T_DIR/err"
embed_error "unknown vendor id" embed --vendor 99 "$W/$CEL" -o "$E/o.png"
embed_error "revoked vendor" embed --vendor "Gone Vendor" "$W/$CEL" -o "$E/o.png"
check "revoked vendor: says revoked" grep -q revoked "$T_DIR/err"
embed_error "missing input" embed --vendor "$A" "$W/nosuch.png" -o "$E/o.png"
embed_error "truncated PNG" embed --vendor "$A" "$W/half.png" -o "$E/o.png"
embed_error "random bytes named .png" embed --vendor "$A" "$W/x.png" -o "$E/o.png"
embed_error "random bytes to JPEG" embed --vendor "$A" "$W/x.png" -o "$E/o.jpg"
embed_error "unsupported output extension" embed --vendor "$A" "$W/$CEL" -o "$E/out.gif"
check "unsupported extension: names the output, not a temporary file" \
    grep -q "^celtrace: $E/out.gif" "$T_DIR/err"
embed_error "output without extension" embed --vendor "$A" "$W/$CEL" -o "$E/out"
embed_error "output folder missing" embed --vendor "$A" "$W/$CEL" -o "$E/no/such/o.png"
sum_before=$(sha256sum <"$W/$CEL")
embed_error "output == input" embed --vendor "$A" "$W/$CEL" -o "$W/$CEL"
embed_error "output == input, other spelling" embed --vendor "$A" "$W/$CEL" -o "$W/../work/$CEL"
ln -s "$W/$CEL" "$W/link.png"
embed_error "output is a link to the input" embed --vendor "$A" "$W/$CEL" -o "$W/link.png"
check "input untouched after output == input" test "$(sha256sum <"$W/$CEL")" = "$sum_before"
check "no temporary file beside the input" \
    test -z "$(find "$W" -mindepth 1 -maxdepth 1 -name '.*')"
expect_error "wrong passphrase" "$H" env CELTRACE_PASSPHRASE=wrong \
    "$CELTRACE" --home "$H" embed --vendor "$A" "$W/$CEL" -o "$E/o.png"
check "wrong passphrase: output folder empty" test -z "$(ls -A "$E")"
embed_error "--strength 9" embed --vendor "$A" --strength 9 "$W/$CEL" -o "$E/o.png"
embed_error "--strength abc" embed --vendor "$A" --strength abc "$W/$CEL" -o "$E/o.png"
embed_error "--quality 0" embed --vendor "$A" --quality 0 "$W/$CEL" -o "$E/o.jpg"
embed_error "--max-pixels 1000 on a big image" --max-pixels 1000 embed --vendor "$A" \
    "$W/big.png" -o "$E/o.png"
check "--max-pixels: says too large" grep -q "too large" "$T_DIR/err"
embed_error "--max-pixels after the command" embed --max-pixels 1000 --vendor "$A" \
    "$W/big.png" -o "$E/o.png"
embed_error "--max-pixels 0" --max-pixels 0 embed --vendor "$A" "$W/$CEL" -o "$E/o.png"
embed_error "no -o" embed --vendor "$A" "$W/$CEL"
embed_error "no --vendor" embed "$W/$CEL" -o "$E/o.png"
embed_error "two inputs, -o not a folder" embed --vendor "$A" "$W/$CEL" "$W/$SKETCH" -o "$E/o.png"
mkdir -p "$W/dup"
cp "$W/$CEL" "$W/dup/$CEL"
embed_error "two inputs of one name" embed --vendor "$A" "$W/$CEL" "$W/dup/$CEL" -o "$E"
check "two inputs of one name: says which" grep -q "both be written to" "$T_DIR/err"
embed_error "-o the inputs' own folder" embed --vendor "$A" "$W/$CEL" "$W/$SKETCH" -o "$W/"
check "-o the inputs' own folder: says so" grep -q "would replace the originals" "$T_DIR/err"
embed_error "--asset with two inputs" embed --vendor "$A" --asset x "$W/$CEL" "$W/$SKETCH" -o "$E"
embed_error "--jobs 0" embed --vendor "$A" --jobs 0 "$W/$CEL" "$W/$SKETCH" -o "$E"
embed_error "two inputs, unknown vendor" embed --vendor "No Such Vendor" "$W/$CEL" "$W/$SKETCH" \
    -o "$E"
embed_error "two inputs, revoked vendor" embed --vendor "Gone Vendor" "$W/$CEL" "$W/$SKETCH" -o "$E"

# A limit the image fits under is fine.
ct --home "$H" --max-pixels 307200 embed --vendor "$A" "$W/$CEL" -o "$E/fits.png"
expect_ok "--max-pixels equal to the image"
rm -f "$E/fits.png"

# ---- a delivery: several inputs into one folder --------------------------------------------------
# Each copy under its input's name, lines in input order whatever --jobs; a
# corrupt input is one error line, the others are marked and recorded, and
# the exit status says something failed.
for j in 1 2; do
    D=$W/delivery$j
    mkdir -p "$D"
    ct --home "$H" embed --vendor "$B" --json --jobs "$j" "$W/$CEL" "$W/x.png" "$W/$SKETCH" -o "$D"
    check "delivery --jobs $j: exit 2 with a corrupt input" test "$RC" -eq 2
    check "delivery --jobs $j: three lines, in input order" jq -se --arg c "$W/$CEL" \
        --arg x "$W/x.png" --arg s "$W/$SKETCH" --arg d "$D" --arg b "$B" \
        'length == 3 and .[0].input == $c and .[0].output == ($d + "/" + ($c | split("/") | last))
         and .[0].vendor == $b and (.[0].record_id | type) == "number"
         and .[1].input == $x and (.[1].error | type) == "string"
         and .[2].input == $s and .[2].vendor == $b and .[0].serial != .[2].serial' "$T_DIR/out"
    check "delivery --jobs $j: the copies under their names" test -s "$D/$CEL" -a -s "$D/$SKETCH"
    check "delivery --jobs $j: nothing for the corrupt input, no temporary" \
        test -z "$(find "$D" -mindepth 1 ! -name "$CEL" ! -name "$SKETCH")"
    check "delivery --jobs $j: the error names the file" jq -se '.[1].error | test("x[.]png")' \
        "$T_DIR/out"
done
expect_vendor "delivery copy (cel)" "$W/delivery2/$CEL" "$B"
expect_vendor "delivery copy (JPEG sketch)" "$W/delivery1/$SKETCH" "$B"
ct --home "$H" embed --vendor "$A" "$W/$CEL" "$W/$SKETCH" -o "$W/delivery1/"
check "delivery (text): exit 0, a line per input in order" test "$RC" -eq 0 -a \
    "$(cut -d: -f1 "$T_DIR/out" | tr '\n' ' ')" = \
    "$W/$CEL -> $W/delivery1/$CEL $W/$SKETCH -> $W/delivery1/$SKETCH "
expect_vendor "delivery copy replaced for another vendor" "$W/delivery1/$CEL" "$A"

# ---- verify error paths --------------------------------------------------------------------------
ct --home "$H" verify --json "$W/half.png"
check "verify truncated PNG: exit 2" test "$RC" -eq 2
check "verify truncated PNG: status error line" jq -e --arg f "$W/half.png" \
    '.file == $f and .status == "error" and .vendor == null
     and (.error | type) == "string"' "$T_DIR/out"
check "verify truncated PNG: one line" test "$(wc -l <"$T_DIR/out")" -eq 1
ct --home "$H" verify --json "$W/x.png"
check "verify random bytes: exit 2" test "$RC" -eq 2
check "verify random bytes: status error" jq -e '.status == "error"' "$T_DIR/out"
expect_error "verify (text) of a corrupt file" "$H" "$CELTRACE" --home "$H" verify "$W/x.png"
expect_error "verify a missing file" "$H" "$CELTRACE" --home "$H" verify "$W/nosuch.png"
expect_error "verify with the wrong passphrase" "$H" \
    env CELTRACE_PASSPHRASE=wrong "$CELTRACE" --home "$H" verify "$W/out/cel_A.png"
expect_error "verify --max-pixels 1000" "$H" \
    "$CELTRACE" --home "$H" --max-pixels 1000 verify "$W/out/cel_A.png"
expect_error "verify without a file" "$H" "$CELTRACE" --home "$H" verify
# A corrupt file among marked ones: the marked ones still count (exit 0).
ct --home "$H" verify --json "$W/x.png" "$W/out/cel_A.png"
check "corrupt + marked: exit 0" test "$RC" -eq 0
check "corrupt + marked: an error line and an identified line" test \
    "$(jq -r .status "$T_DIR/out" | tr '\n' ' ')" = "error identified "
# A corrupt file among unmarked ones: nothing identified, an error -> 2.
ct --home "$H" verify --json "$W/x.png" "$W/$CEL"
check "corrupt + unmarked: exit 2" test "$RC" -eq 2

finish

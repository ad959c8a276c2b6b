#!/usr/bin/env bash
# End to end: video and frame sequences. Tag short cuts of both sample
# clips, check what must be kept (audio packets bit-exact, frame count,
# duration), trace them back, run the issue's public attack set with the
# ffmpeg CLI, and check the error contract on truncated and random input.
# The attack table goes to stdout (ctest -V shows it); attacks known to
# identify today are asserted (ASSERT below) so regressions show.
. "$(dirname "$0")/lib.sh"

: "${CT_SAMPLES:?set CT_SAMPLES to the samples folder}"
for tool in ffmpeg ffprobe jq; do
    if ! command -v "$tool" >/dev/null; then
        bad "missing tool $tool"
        finish
    fi
done

H=$T_DIR/home
W=$T_DIR/work
mkdir -p "$W"
A="Aster Ink"
B="Birch Frames"
ct --home "$H" init --studio "Video Test Studio"
expect_ok "init"
for v in "$A" "$B"; do
    ct --home "$H" vendor add "$v"
    expect_ok "vendor add $v"
done

FF="ffmpeg -nostdin -v error -y"
# 2.5-second cuts keep the test short; re-encoded so they start on a key frame.
$FF -i "$CT_SAMPLES/video/clip_kid_dune_1920x1080_h264_aac.mp4" -ss 2 -t 2.5 \
    -c:v libx264 -preset veryfast -crf 18 -c:a copy "$W/kid.mp4"
$FF -i "$CT_SAMPLES/video/clip_wolf_backdrop_1280x720_vp9_opus.webm" -t 2.5 \
    -c:v libvpx-vp9 -crf 24 -b:v 0 -cpu-used 5 -row-mt 1 -c:a copy "$W/wolf.webm"

audio_md5() { ffmpeg -nostdin -v error -i "$1" -map 0:a -c copy -f md5 - 2>/dev/null; }
frames_of() {
    ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
        -of csv=p=0 "$1"
}
duration_of() { ffprobe -v error -show_entries format=duration -of csv=p=0 "$1"; }

# verify_vendor FILE: sets GOT to the vendor named (or "-"), and RC.
verify_vendor() {
    ct --home "$H" verify --json "$1"
    GOT=$(jq -r '.vendor // "-"' "$T_DIR/out" 2>/dev/null | head -1)
    GOT=${GOT:--}
}

# Attacks known to identify (clip:attack); the others are reported only.
# The 1 s 640x360 cut of the kid clip decodes at payload z about 13, at the
# decoder's edge: it identifies for some vendor keys and not others, so it
# is measured (bench/video) but not asserted.
ASSERT=" ${CT_VIDEO_ASSERT:-kid:crop10 kid:fps30 kid:vp9_crf40 kid:x265_crf32 kid:x264_crf30_480p
wolf:crop10 wolf:fps30 wolf:vp9_crf40 wolf:x265_crf32 wolf:x264_crf30_480p} "
ASSERT=${ASSERT//$'\n'/ }

attack() { # attack NAME IN OUT ffmpeg-args...
    local name=$1 in=$2 o=$3
    shift 3
    $FF -i "$in" "$@" "$o"
}

for clip in kid.mp4:"$A" wolf.webm:"$B"; do
    f=${clip%%:*}
    vendor=${clip#*:}
    base=${f%.*}
    ext=${f##*.}
    in=$W/$f
    m=$W/marked_$f
    ct --home "$H" embed --vendor "$vendor" "$in" -o "$m" --json
    expect_ok "embed $f"
    psnr=$(jq -r .psnr_y "$T_DIR/out")
    echo "embed $f: psnr_y $psnr dB, $(jq -r .frames "$T_DIR/out") frames"
    check "$f: psnr_y >= 42" awk -v p="$psnr" 'BEGIN { exit !(p >= 42) }'
    check "$f: embedded at the video default strength 1.5" jq -e '.strength == 1.5' "$T_DIR/out"
    check "$f: audio packets bit-exact" test "$(audio_md5 "$in")" = "$(audio_md5 "$m")"
    check "$f: audio md5 not empty" test -n "$(audio_md5 "$m")"
    check "$f: frame count kept" test "$(frames_of "$in")" = "$(frames_of "$m")"
    d_in=$(duration_of "$in")
    d_out=$(duration_of "$m")
    check "$f: duration kept ($d_in vs $d_out)" \
        awk -v a="$d_in" -v b="$d_out" 'BEGIN { d = a - b; exit !(d < 0.05 && d > -0.05) }'
    verify_vendor "$m"
    got=$GOT
    check "$f: marked clip names $vendor" test "$got" = "$vendor"
    verify_vendor "$in"
    got=$GOT
    check "$f: unmarked clip not named ($got)" test "$got" = "-"
    check "$f: unmarked clip exits 1" test "$RC" -eq 1

    # The issue's public attack set.
    M=$W/att_$base
    mkdir -p "$M"
    attack x264_crf30_480p "$m" "$M/x264_crf30_480p.mp4" -ss 0.25 -t 2 \
        -vf scale=854:480 -c:v libx264 -crf 30 -an
    attack crop10 "$m" "$M/crop10.mp4" -vf "crop=iw*0.8:ih*0.8" -c:v libx264 -crf 23 -an
    # Under the sanitizers the attacks are about memory safety, not the
    # mark (measured in the plain build): two of them, the scaled cut and
    # the crop, exercise every path of the verifier (CT_SANITIZED).
    if [ "${CT_SANITIZED:-OFF}" != ON ]; then
        attack x264_crf35_480p "$m" "$M/x264_crf35_480p.mp4" -ss 0.25 -t 2 \
            -vf scale=854:480 -c:v libx264 -crf 35 -an
        attack x265_crf32 "$m" "$M/x265_crf32.mp4" -ss 0.25 -t 2 \
            -c:v libx265 -crf 32 -x265-params log-level=none -an
        attack vp9_crf40 "$m" "$M/vp9_crf40.webm" -ss 0.25 -t 2 \
            -c:v libvpx-vp9 -crf 40 -b:v 0 -cpu-used 5 -row-mt 1 -an
        attack fps30 "$m" "$M/fps30.mp4" -vf fps=30 -c:v libx264 -crf 23 -an
        attack cut1s_360p "$m" "$M/cut1s_360p.mp4" -ss 0.75 -t 1 \
            -vf scale=640:360 -c:v libx264 -crf 28 -an
    fi
    # A negative trial: the unmarked clip under the 480p cut (verify then
    # runs every attempt it has, and must name no one).
    N=$W/neg_$base
    mkdir -p "$N"
    attack x264_crf30_480p "$in" "$N/x264_crf30_480p.mp4" -ss 0.25 -t 2 \
        -vf scale=854:480 -c:v libx264 -crf 30 -an
    verify_vendor "$N/x264_crf30_480p.mp4"
    check "$f unmarked x264_crf30_480p: nobody named ($GOT)" test "$GOT" = "-"
    check "$f unmarked x264_crf30_480p: exits 1" test "$RC" -eq 1
    for a in "$M"/*; do
        an=$(basename "${a%.*}")
        t0=$(date +%s.%N)
        verify_vendor "$a"
        got=$GOT
        t1=$(date +%s.%N)
        printf 'attack %-10s %-16s -> %-14s (%.2f s)\n' "$f" "$an" "$got" \
            "$(echo "$t1 - $t0" | bc)"
        # Never a false accusation.
        check "$f $an: no other vendor named ($got)" \
            sh -c "test '$got' = '-' || test '$got' = '$vendor'"
        case "$ASSERT" in
        *" $base:$an "*) check "$f $an: identifies $vendor" test "$got" = "$vendor" ;;
        esac
        if [ "$got" = "$vendor" ]; then
            # Every decode attempt over every sum is counted.
            fpp=$(jq -r '.false_positive_probability' "$T_DIR/out" | head -1)
            check "$f $an: false-positive probability $fpp <= 1e-9" \
                awk -v p="$fpp" 'BEGIN { exit !(p + 0 <= 1e-9) }'
        fi
    done
done

# A frame sequence: the same folder layout out, traced as a clip.
S=$W/seq
mkdir -p "$S"
for i in 01 02 03 04 05 06; do
    cp "$CT_SAMPLES/frames/frame_00$i.png" "$S/"
done
ct --home "$H" embed --vendor "$B" "$S" -o "$W/seq_marked" --json
expect_ok "embed a frame sequence"
check "sequence: same names out" test "$(ls "$S")" = "$(ls "$W/seq_marked")"
check "sequence: one record" test "$(jq -r .frames "$T_DIR/out")" = 6
verify_vendor "$W/seq_marked"
    got=$GOT
check "sequence: names $B" test "$got" = "$B"
verify_vendor "$S"
    got=$GOT
check "unmarked sequence not named" test "$got" = "-"
# The same frames as JPEGs: marked in their coefficients, still JPEGs, the
# PSNR of what was written reported, traced as a clip.
SJ=$W/seqj
mkdir -p "$SJ"
for f in "$S"/*.png; do
    convert "$f" -quality 90 "$SJ/$(basename "${f%.png}").jpg"
done
ct --home "$H" embed --vendor "$B" "$SJ" -o "$W/seqj_marked" --json
expect_ok "embed a JPEG frame sequence"
check "JPEG sequence: same names out" test "$(ls "$SJ")" = "$(ls "$W/seqj_marked")"
check "JPEG sequence: PSNR of what was written" \
    jq -e '.psnr_y >= 40 and .psnr_y < 60' "$T_DIR/out"
verify_vendor "$W/seqj_marked"
    got=$GOT
check "JPEG sequence: names $B" test "$got" = "$B"
# Folders given with a trailing slash, as the help's example does.
ct --home "$H" embed --vendor "$B" "$S/" -o "$W/seq_marked2/" --json
expect_ok "embed a frame sequence given as FOLDER/"
check "sequence given as FOLDER/: the asset is the folder's name" \
    test "$(jq -r .asset "$T_DIR/out")" = "seq"

# Stills whose names merely end in digits are a folder of files, not a clip:
# verify gives one line per file, embed refuses the folder.
N=$W/stills
mkdir -p "$N"
cp "$W/seq_marked/frame_0001.png" "$N/bg_1920x1080.png"
cp "$S/frame_0002.png" "$N/cel_640x480.png"
ct --home "$H" verify --json "$N"
check "numbered stills: one line per file" test "$(wc -l <"$T_DIR/out")" -eq 2
check "numbered stills: the marked one names $B, the other nothing" jq -se --arg v "$B" \
    'map({(.file | split("/") | last): .vendor}) | add == {"bg_1920x1080.png": $v, "cel_640x480.png": null}' \
    "$T_DIR/out"
expect_error "embed a folder that is not a sequence" "$H" \
    "$CELTRACE" --home "$H" embed --vendor "$B" "$N" -o "$W/stills_out"
check "no output folder" test ! -e "$W/stills_out"

# RGB and alpha: QuickTime Animation (rgb24), PNG in MOV (rgba) and
# ProRes 4444 (Y'CbCr with alpha), as cel departments deliver them. The
# mark goes on the luma of R, G and B; alpha is kept to the bit where the
# encoder has it, and only seen pixels are marked.
$FF -loop 1 -i "$CT_SAMPLES/images/bg_backdrop_1920x1080.png" -t 1 -vf scale=960:540 \
    -c:v qtrle "$W/anim.mov"
$FF -loop 1 -i "$CT_SAMPLES/images/cel_wolf_rgba_1920x1080.png" -t 1 -vf scale=960:540 \
    -c:v png -pix_fmt rgba "$W/celpng.mov"
$FF -loop 1 -i "$CT_SAMPLES/images/cel_wolf_rgba_1920x1080.png" -t 1 -vf scale=960:540 \
    -c:v prores_ks -profile:v 4444 -pix_fmt yuva444p10le "$W/cel4444.mov"
pix_fmt_of() { ffprobe -v error -select_streams v:0 -show_entries stream=pix_fmt -of csv=p=0 "$1"; }
alpha_md5() { ffmpeg -nostdin -v error -i "$1" -vf alphaextract,format=gray -f md5 - 2>/dev/null; }
for spec in "anim.mov qtrle rgb24" "anim.mov libx264 yuv444p" "celpng.mov png rgba" \
    "cel4444.mov prores_ks yuva444p12le"; do
    read -r in codec fmt <<<"$spec"
    out=$W/rgb_${codec}_$in
    ct --home "$H" embed --json --vendor "$B" --codec "$codec" "$W/$in" -o "$out"
    expect_ok "embed $in with $codec"
    check "$in with $codec: PSNR-Y of the seen pixels at least 42 dB" jq -e '.psnr_y >= 42' "$T_DIR/out"
    check "$in with $codec: pixel format $fmt" test "$(pix_fmt_of "$out")" = "$fmt"
    ct --home "$H" verify --json "$out"
    check "$in with $codec: verify names $B" jq -e --arg v "$B" '.vendor == $v' "$T_DIR/out"
done
for in in celpng.mov cel4444.mov; do
    codec=png
    [ "$in" = cel4444.mov ] && codec=prores_ks
    check "$in with $codec: alpha kept to the bit" \
        test "$(alpha_md5 "$W/$in")" = "$(alpha_md5 "$W/rgb_${codec}_$in")"
done
# Where alpha is 0 nothing is seen, so nothing is marked: the PNG clip's
# transparent pixels keep their RGB (the first frame, masked by alpha).
transparent_md5() {
    ffmpeg -nostdin -v error -i "$1" -frames:v 1 -vf "format=rgba,geq=r='r(X,Y)*eq(alpha(X,Y),0)':g='g(X,Y)*eq(alpha(X,Y),0)':b='b(X,Y)*eq(alpha(X,Y),0)':a=255" \
        -f md5 - 2>/dev/null
}
check "celpng.mov: transparent pixels unchanged" \
    test "$(transparent_md5 "$W/celpng.mov")" = "$(transparent_md5 "$W/rgb_png_celpng.mov")"
ct --home "$H" embed --json --vendor "$B" "$W/celpng.mov" -o "$W/opaque.mp4"
check "rgba into libx264: exit 0, alpha_dropped" jq -e '.alpha_dropped == true' "$T_DIR/out"
check "rgba into libx264: one warning that alpha is not kept" \
    sh -c "test \$(wc -l <'$T_DIR/err') -eq 1 && grep -q '^celtrace: warning: .*alpha channel is not kept' '$T_DIR/err'"

# Errors: exit 2, one 'celtrace: ' line, nothing left behind.
head -c $(($(stat -c %s "$W/kid.mp4") / 2)) "$W/kid.mp4" >"$W/trunc.mp4"
head -c 300000 /dev/urandom >"$W/random.mp4"
# Noise that FFmpeg 5.1 probes as a raw H.263 stream (score 25) with a
# 704x576 picture: it decoded to one garbage frame and was "marked" (exit 0)
# until embed refused uncontained streams. Random bytes do this about once
# in 300 files, which made the random.mp4 case fail now and then.
ffmpeg -nostdin -v error -y -f lavfi -i "anoisesrc=seed=1092:amplitude=1:sample_rate=48000" \
    -t 6.25 -f u8 -ac 1 "$W/noise_h263.mp4"
check "the noise file is 300,000 bytes" test "$(stat -c %s "$W/noise_h263.mp4")" -eq 300000
# The index first (faststart) and the picture data cut off: the probe
# decodes no frame, so the stream's pixel format is unknown; embed handed
# that to libswscale, which aborted the process (SIGABRT) before any check.
$FF -i "$W/kid.mp4" -c copy -movflags +faststart "$W/kid_fs.mp4"
head -c $(($(stat -c %s "$W/kid_fs.mp4") / 10)) "$W/kid_fs.mp4" >"$W/head.mp4"
ct --home "$H" embed --vendor "$A" "$W/head.mp4" -o "$W/out_head.mp4"
check "embed head.mp4: says no frame could be decoded" grep -q "no video frame could be decoded" "$T_DIR/err"
for bad_in in trunc.mp4 random.mp4 noise_h263.mp4 head.mp4; do
    ct --home "$H" embed --vendor "$A" "$W/$bad_in" -o "$W/out_$bad_in"
    expect_error_output "embed $bad_in"
    check "embed $bad_in: no output" test ! -e "$W/out_$bad_in"
    check "embed $bad_in: no temporary" sh -c "! ls -a '$W' | grep -q '^\.out_'"
    ct --home "$H" verify "$W/$bad_in"
    expect_error_output "verify $bad_in"
done

# Cut short at the start of the 46th video packet, so every packet before
# it is whole (a cut inside a packet is corrupt data: exit 2, as above):
# marked (exit 0), with a warning that says how many of the stated frames
# the output holds.
cut_at=$(ffprobe -v error -select_streams v:0 -show_entries packet=pos -of csv=p=0 \
    "$W/kid_fs.mp4" | sed -n 46p)
head -c "$cut_at" "$W/kid_fs.mp4" >"$W/cut.mp4"
ct --home "$H" embed --json --vendor "$A" "$W/cut.mp4" -o "$W/out_cut.mp4"
check "embed a cut-short clip: exit 0" test "$RC" -eq 0
check "cut-short clip: fewer frames than the container states" \
    jq -e '.frames == 45 and .frames_declared == 60' "$T_DIR/out"
check "cut-short clip: one warning line" \
    sh -c "test \$(wc -l <'$T_DIR/err') -eq 1 && grep -q '^celtrace: warning: .*cut short' '$T_DIR/err'"
check "cut-short clip: the output has the frames reported" test \
    "$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$W/out_cut.mp4")" \
    = "$(jq .frames "$T_DIR/out")"
finish

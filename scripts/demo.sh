#!/usr/bin/env bash
# celtrace demo, start to finish on a fresh Debian 12 machine (run as root,
# or with sudo): install the packages, build, create a studio, onboard two
# vendors, tag one image for both, leak one copy through a real re-export
# (crop, resize, JPEG with metadata stripped) and trace it back.
#
#   sudo ./scripts/demo.sh
#
# Everything the demo makes goes into a new folder under ${TMPDIR:-/tmp}
# (printed at the start and the end); re-running makes a fresh one.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD

step() {
    printf '\n== %s\n' "$*"
}
fail() {
    echo "demo: FAILED: $*" >&2
    exit 1
}
# show CMD...: print the command as a user would type it (on stderr, so
# that stdout can be captured), then run it.
show() {
    local line="$" a
    for a in "$@"; do
        case "$a" in
        "$CT") a=celtrace ;;
        *[!A-Za-z0-9_./%+=:@-]*) a="\"$a\"" ;;
        esac
        line="$line $a"
    done
    echo "$line" >&2
    "$@"
}

step "1. Installing the Debian packages (scripts/install-deps.sh)"
scripts/install-deps.sh

step "2. Building celtrace in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >build-demo-configure.log 2>&1 ||
    { cat build-demo-configure.log >&2; fail "cmake configure (see above)"; }
rm -f build-demo-configure.log
cmake --build build --target celtrace -j"$(nproc)" >/dev/null ||
    fail "build (run 'cmake --build build' to see the errors)"
CT=$SRC/build/celtrace
"$CT" --version

D=$(mktemp -d "${TMPDIR:-/tmp}/celtrace-demo.XXXXXX")
export CELTRACE_HOME=$D/studio-home
# A fixed passphrase so the demo runs unattended. Real studios type theirs at
# the prompt, or use --passphrase-file.
export CELTRACE_PASSPHRASE="celtrace demo passphrase - not for real use"
IM=/usr/bin/convert # ImageMagick 6, by full path
SAMPLE=$SRC/samples/images/bg_backdrop_1920x1080.png
mkdir -p "$D/outgoing/inkwell" "$D/outgoing/northpoint" "$D/leak"
cp "$SAMPLE" "$D/bg_backdrop.png"
cd "$D"

step "3. A new studio home in $CELTRACE_HOME"
echo "(passphrase from CELTRACE_PASSPHRASE=\"$CELTRACE_PASSPHRASE\")"
show "$CT" init --studio "Blue Heron Animation"
show "$CT" keys export-public

step "4. Onboarding two vendors"
show "$CT" vendor add "Inkwell Studio" --country KR --contact ops@inkwell.example
show "$CT" vendor add "Northpoint Cel Works" --country PH --contact it@northpoint.example
show "$CT" vendor list

step "5. Tagging one background for each vendor"
show "$CT" embed --vendor "Inkwell Studio" bg_backdrop.png -o outgoing/inkwell/bg_backdrop.png
show "$CT" embed --vendor "Northpoint Cel Works" bg_backdrop.png \
    -o outgoing/northpoint/bg_backdrop.png
echo "The copies look the same as the original; PSNR of Northpoint's copy against it"
echo "(RGB, ImageMagick compare): $(/usr/bin/compare -metric PSNR bg_backdrop.png \
    outgoing/northpoint/bg_backdrop.png null: 2>&1) dB."

step "6. Northpoint's copy leaks: cropped to 60% of its area, resized to 70%, JPEG quality 60, metadata stripped"
read -r w h < <(/usr/bin/identify -format '%w %h\n' outgoing/northpoint/bg_backdrop.png)
cw=$((w * 7746 / 10000)) # sqrt(0.6) of each side
ch=$((h * 7746 / 10000))
x=$(((w - cw) * 2 / 3))
y=$(((h - ch) / 3))
show "$IM" outgoing/northpoint/bg_backdrop.png -crop "${cw}x${ch}+${x}+${y}" +repage \
    -resize 70% -strip -quality 60 leak/forum_upload.jpg
/usr/bin/identify leak/forum_upload.jpg | sed "s|$D/||"

step "7. Tracing the leaked file (no original needed)"
show "$CT" verify leak/forum_upload.jpg || fail "verify did not identify the leak"
show "$CT" verify --json leak/forum_upload.jpg | tee verdict.json || fail "verify --json"
vendor=$(jq -r 'select(.status == "identified") | .vendor' verdict.json)
fpp=$(jq -r '.false_positive_probability' verdict.json)
[ "$vendor" = "Northpoint Cel Works" ] || fail "the leak was traced to '$vendor'"

step "8. The untagged original carries no mark (verify exits 1: nobody is accused)"
set +e
show "$CT" verify bg_backdrop.png
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "verify of the untagged original exited $rc, wanted 1"

step "Done"
echo "The leaked JPEG was traced to vendor \"$vendor\" (false-positive probability $fpp)."
echo "Demo files (studio home, tagged copies, the leak): $D"
echo "Try: CELTRACE_HOME=$CELTRACE_HOME CELTRACE_PASSPHRASE='$CELTRACE_PASSPHRASE' $CT verify $D/outgoing"

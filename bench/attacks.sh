# shellcheck shell=bash
# bench/attacks.sh -- the attacks of the robustness benchmark, as bash functions.
#
# Source this file; it defines nothing but functions and a few read-only
# settings.  Every attack has the signature
#
#     attack_NAME IN OUT_PREFIX SEED            (public attack points, issue 4)
#     attack_jpegq    IN OUT_PREFIX SEED Q      (sweeps, issue 7)
#     attack_scale    IN OUT_PREFIX SEED PCT
#     attack_croparea IN OUT_PREFIX SEED PCT
#     attack_rotate   IN OUT_PREFIX SEED DEG
#     attack_aspect   IN OUT_PREFIX SEED PCT
#     attack_turn     IN OUT_PREFIX SEED DEG
#
# writes exactly one attacked file, OUT_PREFIX plus an extension chosen by the
# attack (.jpg for JPEG attacks, .webp for WebP, .png otherwise), checks that
# the file decodes, and prints its path on stdout.  SEED drives everything
# random (crop positions, noise), so an attack is reproducible.
# `run_attack SPEC IN OUT_PREFIX SEED` dispatches on a name such as `jpeg75`
# or a sweep point such as `jpegq:40`, `scale:33`, `croparea:12`, `rotate:7.5`,
# `aspect:75`.
#
# Conventions:
# - ImageMagick 6 at /usr/bin/convert (override with CT_CONVERT/CT_IDENTIFY);
#   WebP through cwebp.  Every output is written with -strip (no metadata:
#   the mark must live in the pixels).
# - Images with alpha (cels): attacks that keep a lossless format write PNG,
#   so the alpha channel survives as it would in a leaked PNG.  JPEG cannot
#   carry alpha and IM6 would otherwise drop it and expose whatever colour
#   sits under transparent pixels (often black), so every JPEG attack first
#   flattens onto white explicitly (what an "export as JPEG" in an editor
#   does).  WebP attacks flatten onto white too, so that the WebP and JPEG
#   points measure the codec and not the alpha handling; flatwhite/flatgray
#   are the attacks that vary the backdrop.
# - Output is at most 8 bits per channel for JPEG/WebP; PNG outputs keep the
#   input's depth (16-bit PNGs stay 16-bit).

CT_CONVERT=${CT_CONVERT:-/usr/bin/convert}
CT_IDENTIFY=${CT_IDENTIFY:-/usr/bin/identify}
CT_CWEBP=${CT_CWEBP:-cwebp}

# PNG outputs are written with zlib's fastest level: the pixels are the same
# at any level, and IM6's default (7, adaptive filters) spent more time than
# the attack itself on 1080p and 4K images.
CT_PNG_OUT=(-define png:compression-level=1)

# -attenuate factor that makes IM6's `+noise Gaussian` on a 50% gray canvas
# have a standard deviation of 5.0/255 per channel (measured: 0.2517 -> 5.02).
CT_NOISE_ATTENUATE=${CT_NOISE_ATTENUATE:-0.2517}

# The public attack set of issue 4, in table order.
# shellcheck disable=SC2034  # used by bench/run
CT_PUBLIC_ATTACKS="none jpeg75 jpeg50 jpeg30 webp75 resize50 resize25 crop50 crop25 rot2 rot5 mirror bright contrast gamma07 gamma14 gray blur noise screenshot chain flatwhite flatgray"

# ---------------------------------------------------------------- helpers

# ct_quote_args ARG... -> the arguments as a user would type them, each after
# a space, shell-quoted only where it must be (for the recorded commands).
ct_quote_args() {
    local a
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./:,=+@%-]+$ ]]; then printf ' %s' "$a"; else printf ' %q' "$a"; fi
    done
}

_ct_die() { printf 'attacks.sh: %s\n' "$*" >&2; return 1; }

# _ct_dims IN -> "W H"
_ct_dims() { "$CT_IDENTIFY" -ping -format '%w %h\n' "${1}[0]" | head -n 1; }

# _ct_has_alpha IN -> status 0 iff the image has an alpha channel (incl. tRNS)
_ct_has_alpha() {
    local a
    a=$("$CT_IDENTIFY" -ping -format '%A\n' "${1}[0]" | head -n 1)
    [[ $a == [Tt]rue || $a == [Bb]lend ]]
}

# _ct_is_gray IN -> status 0 iff the file is stored as grayscale
_ct_is_gray() {
    local c
    c=$("$CT_IDENTIFY" -ping -format '%[channels]\n' "${1}[0]" | head -n 1)
    [[ $c == gray* ]]
}

# _ct_rand SEED N -> a deterministic integer in [0, N] (N >= 0); reseeds RANDOM.
_ct_rand() {
    local seed=$1 n=$2
    RANDOM=$seed
    if (( n <= 0 )); then echo 0; return; fi
    echo $(( (RANDOM * 32768 + RANDOM) % (n + 1) ))
}

# _ct_flatten_args IN COLOUR -> sets array CT_FLAT to the IM arguments that
# flatten IN onto COLOUR if it has alpha (empty otherwise).
_ct_flatten_args() {
    CT_FLAT=()
    if _ct_has_alpha "$1"; then
        CT_FLAT=(-background "$2" -alpha remove -alpha off)
    fi
}

# _ct_done OUT -> check that OUT exists, is non-empty and decodes; print it.
_ct_done() {
    local out=$1
    [[ -s $out ]] || _ct_die "no output written: $out" || return 1
    case $out in
        *.webp) dwebp -quiet "$out" -pgm -o /dev/null \
                    || _ct_die "invalid WebP: $out" || return 1 ;;
        *)      "$CT_IDENTIFY" -regard-warnings "$out" >/dev/null 2>&1 \
                    || _ct_die "invalid image: $out" || return 1 ;;
    esac
    printf '%s\n' "$out"
}

# _ct_crop_geometry IN SEED PCT -> "WxH+X+Y": PCT % of the area, same aspect,
# at a position drawn from SEED.  Opaque images: uniform over all positions.
# Images with alpha: the crop's centre is drawn uniformly inside the bounding
# box of the visible pixels (alpha > 0), then the window is clamped to the
# image -- a small character on a big transparent cel would otherwise often
# give an all-transparent crop, which carries no mark and is no trial at all.
_ct_crop_geometry() {
    local in=$1 seed=$2 pct=$3 w h cw ch x y bbox bw bh bx by
    read -r w h < <(_ct_dims "$in")
    read -r cw ch < <(awk -v w="$w" -v h="$h" -v p="$pct" 'BEGIN {
        s = sqrt(p / 100); cw = int(w * s + 0.5); ch = int(h * s + 0.5)
        if (cw < 1) cw = 1; if (ch < 1) ch = 1
        if (cw > w) cw = w; if (ch > h) ch = h
        print cw, ch }')
    if _ct_has_alpha "$in"; then
        bbox=$("$CT_CONVERT" "${in}[0]" -alpha extract -format '%@' info:)
        if [[ $bbox =~ ^([0-9]+)x([0-9]+)\+([0-9]+)\+([0-9]+)$ ]] && (( BASH_REMATCH[1] > 0 )); then
            bw=${BASH_REMATCH[1]} bh=${BASH_REMATCH[2]} bx=${BASH_REMATCH[3]} by=${BASH_REMATCH[4]}
            x=$(( bx + $(_ct_rand "$seed" $(( bw - 1 ))) - cw / 2 ))
            y=$(( by + $(_ct_rand $(( seed * 7919 + 17 )) $(( bh - 1 ))) - ch / 2 ))
            (( x < 0 )) && x=0
            (( y < 0 )) && y=0
            (( x > w - cw )) && x=$(( w - cw ))
            (( y > h - ch )) && y=$(( h - ch ))
            printf '%dx%d+%d+%d\n' "$cw" "$ch" "$x" "$y"
            return 0
        fi
    fi
    x=$(_ct_rand "$seed" $(( w - cw )))
    y=$(_ct_rand $(( seed * 7919 + 17 )) $(( h - ch )))
    printf '%dx%d+%d+%d\n' "$cw" "$ch" "$x" "$y"
}

# _ct_rotated_rect W H DEG -> "WR HR": the largest axis-aligned rectangle that
# fits inside a W x H rectangle rotated by DEG (exact, then floored).
_ct_rotated_rect() {
    awk -v w="$1" -v h="$2" -v deg="$3" 'BEGIN {
        pi = atan2(0, -1); a = deg * pi / 180
        s = sin(a); if (s < 0) s = -s
        c = cos(a); if (c < 0) c = -c
        if (s < 1e-12) { print w, h; exit }
        wide = (w >= h); L = wide ? w : h; S = wide ? h : w
        d = s - c; if (d < 0) d = -d
        if (S <= 2 * s * c * L || d < 1e-10) {
            # half-constrained: two corners touch the longer side
            x = 0.5 * S
            if (wide) { wr = x / s; hr = x / c } else { wr = x / c; hr = x / s }
        } else {
            # fully constrained: all four corners touch the rotated sides
            c2 = c * c - s * s
            wr = (w * c - h * s) / c2; hr = (h * c - w * s) / c2
        }
        wr = int(wr); hr = int(hr)
        if (wr < 1) wr = 1; if (hr < 1) hr = 1
        print wr, hr }'
}

# ------------------------------------------------- parameterised attacks

# attack_jpegq IN OUT_PREFIX SEED Q -- JPEG at quality Q (alpha flattened on white)
attack_jpegq() {
    local in=$1 out=$2.jpg q=$4
    _ct_flatten_args "$in" white
    "$CT_CONVERT" "${in}[0]" "${CT_FLAT[@]}" -strip -depth 8 -quality "$q" "$out" || return 1
    _ct_done "$out"
}

# attack_webpq IN OUT_PREFIX SEED Q -- cwebp -q Q (alpha flattened on white)
attack_webpq() {
    local in=$1 out=$2.webp q=$4 tmp=$2.webpsrc.png rc=0
    _ct_flatten_args "$in" white
    "$CT_CONVERT" "${in}[0]" "${CT_FLAT[@]}" -strip -depth 8 "${CT_PNG_OUT[@]}" "PNG:$tmp" || return 1
    "$CT_CWEBP" -quiet -q "$q" -metadata none "$tmp" -o "$out" || rc=1
    rm -f -- "$tmp"
    (( rc == 0 )) || return 1
    _ct_done "$out"
}

# attack_scale IN OUT_PREFIX SEED PCT -- resize to PCT % of each side (IM default filter)
attack_scale() {
    local in=$1 out=$2.png pct=$4
    "$CT_CONVERT" "${in}[0]" -resize "${pct}%" -strip "${CT_PNG_OUT[@]}" "$out" || return 1
    _ct_done "$out"
}

# attack_aspect IN OUT_PREFIX SEED PCT -- width resized to PCT %, height kept
# (a 16:9 picture squeezed to 4:3 is 75; an anamorphic stretch above 100)
attack_aspect() {
    local in=$1 out=$2.png pct=$4
    "$CT_CONVERT" "${in}[0]" -resize "${pct}%x100%!" -strip "${CT_PNG_OUT[@]}" "$out" || return 1
    _ct_done "$out"
}

# attack_turn IN OUT_PREFIX SEED DEG -- turned by DEG (a multiple of 90: a
# viewer's rotate button, a portrait export; no crop), then JPEG 85 (alpha
# flattened on white)
attack_turn() {
    local in=$1 out=$2.jpg deg=$4
    (( deg % 90 == 0 )) || _ct_die "turn:$deg is not a multiple of 90" || return 1
    _ct_flatten_args "$in" white
    "$CT_CONVERT" "${in}[0]" "${CT_FLAT[@]}" -rotate "$deg" +repage -strip -depth 8 \
        -quality 85 "$out" || return 1
    _ct_done "$out"
}

# attack_croparea IN OUT_PREFIX SEED PCT -- keep PCT % of the area, same
# aspect ratio, at a random position drawn from SEED
attack_croparea() {
    local in=$1 out=$2.png seed=$3 pct=$4 geom
    geom=$(_ct_crop_geometry "$in" "$seed" "$pct")
    "$CT_CONVERT" "${in}[0]" -crop "$geom" +repage -strip "${CT_PNG_OUT[@]}" "$out" || return 1
    _ct_done "$out"
}

# attack_rotate IN OUT_PREFIX SEED DEG -- rotate by DEG (clockwise), then crop
# back to the largest upright rectangle inside the rotated picture, so no
# background corner is left.  The rectangle is exact (floored to whole
# pixels); its corners touch the rotated edges, so a handful of corner pixels
# are partly blended with the white background (measured: < 30 px, none fully).
attack_rotate() {
    local in=$1 out=$2.png deg=$4 w h wr hr
    read -r w h < <(_ct_dims "$in")
    read -r wr hr < <(_ct_rotated_rect "$w" "$h" "$deg")
    # +repage after -rotate: IM6 leaves a negative page offset on the rotated
    # canvas, and a gravity crop would honour it and land off-centre.
    "$CT_CONVERT" "${in}[0]" -background white -rotate "$deg" +repage \
        -gravity center -crop "${wr}x${hr}+0+0" +repage -strip "${CT_PNG_OUT[@]}" "$out" || return 1
    _ct_done "$out"
}

# ---------------------------------------------------- public attack set

attack_none()     { local out=$2.png; "$CT_CONVERT" "${1}[0]" -strip "${CT_PNG_OUT[@]}" "$out" || return 1; _ct_done "$out"; }
attack_jpeg75()   { attack_jpegq "$1" "$2" "$3" 75; }
attack_jpeg50()   { attack_jpegq "$1" "$2" "$3" 50; }
attack_jpeg30()   { attack_jpegq "$1" "$2" "$3" 30; }
attack_webp75()   { attack_webpq "$1" "$2" "$3" 75; }
attack_resize50() { attack_scale "$1" "$2" "$3" 50; }
attack_resize25() { attack_scale "$1" "$2" "$3" 25; }
attack_crop50()   { attack_croparea "$1" "$2" "$3" 50; }
attack_crop25()   { attack_croparea "$1" "$2" "$3" 25; }
attack_rot2()     { attack_rotate "$1" "$2" "$3" 2; }
attack_rot5()     { attack_rotate "$1" "$2" "$3" 5; }

# _ct_im_png IN OUT_PREFIX IM-ARGS... -- a lossless ImageMagick operation to PNG
_ct_im_png() {
    local in=$1 out=$2.png
    shift 2
    "$CT_CONVERT" "${in}[0]" "$@" -strip "${CT_PNG_OUT[@]}" "$out" || return 1
    _ct_done "$out"
}

attack_mirror()   { _ct_im_png "$1" "$2" -flop; }
attack_bright()   { _ct_im_png "$1" "$2" -modulate 120; }
attack_contrast() { _ct_im_png "$1" "$2" -brightness-contrast 0x20; }
attack_gamma07()  { _ct_im_png "$1" "$2" -gamma 0.7; }
attack_gamma14()  { _ct_im_png "$1" "$2" -gamma 1.4; }
attack_gray()     { _ct_im_png "$1" "$2" -colorspace Gray; }
attack_blur()     { _ct_im_png "$1" "$2" -gaussian-blur 0x1; }

# attack_noise -- additive gaussian noise, sigma 5/255 per channel, independent
# of the content: IM6's `+noise Gaussian` scales with the pixel value, so the
# noise is drawn on a flat 50% canvas (calibrated, see CT_NOISE_ATTENUATE) and
# added to the image (compose Mathematics: img + noise - 0.5, clipped).  Gray
# images get gray noise; colour images independent noise per channel; alpha
# is kept untouched.
attack_noise() {
    local in=$1 out=$2.png seed=$3 w h
    local -a canvas=() alpha=() tail=()
    read -r w h < <(_ct_dims "$in")
    if _ct_is_gray "$in"; then
        canvas=(xc:gray50); tail=(-colorspace Gray)
    else
        # TrueColor, or IM6 draws the same noise in R, G and B
        canvas=(-type TrueColor 'xc:rgb(128,128,128)')
    fi
    if _ct_has_alpha "$in"; then
        alpha=( '(' "${in}[0]" -alpha extract ')' -compose CopyOpacity -composite )
    fi
    "$CT_CONVERT" "${in}[0]" -alpha off \
        '(' -size "${w}x${h}" "${canvas[@]}" -seed "$seed" \
            -attenuate "$CT_NOISE_ATTENUATE" +noise Gaussian +type ')' \
        -compose Mathematics -define compose:args=0,1,1,-0.5 -composite \
        "${alpha[@]}" "${tail[@]}" -strip "${CT_PNG_OUT[@]}" "$out" || return 1
    _ct_done "$out"
}

# attack_screenshot -- resize 83 % then JPEG 85 (alpha flattened on white)
attack_screenshot() {
    local in=$1 out=$2.jpg
    _ct_flatten_args "$in" white
    "$CT_CONVERT" "${in}[0]" "${CT_FLAT[@]}" -resize 83% -strip -depth 8 -quality 85 "$out" || return 1
    _ct_done "$out"
}

# attack_chain -- crop to 70 % of the area at a random position, resize 50 %,
# JPEG 60 (alpha flattened on white)
attack_chain() {
    local in=$1 out=$2.jpg seed=$3 geom
    geom=$(_ct_crop_geometry "$in" "$seed" 70)
    _ct_flatten_args "$in" white
    "$CT_CONVERT" "${in}[0]" "${CT_FLAT[@]}" -crop "$geom" +repage -resize 50% \
        -strip -depth 8 -quality 60 "$out" || return 1
    _ct_done "$out"
}

# attack_flatwhite / attack_flatgray -- flatten the alpha onto white / #808080,
# then JPEG 75.  Meant for images with alpha (see ct_attack_applies); on an
# opaque image they reduce to JPEG 75.
attack_flatwhite() { _ct_flat_jpeg "$1" "$2" white; }
attack_flatgray()  { _ct_flat_jpeg "$1" "$2" '#808080'; }
_ct_flat_jpeg() {
    local in=$1 out=$2.jpg
    "$CT_CONVERT" "${in}[0]" -background "$3" -alpha remove -alpha off \
        -strip -depth 8 -quality 75 "$out" || return 1
    _ct_done "$out"
}

# ------------------------------------------------------------ dispatch

# ct_attack_applies SPEC IN -> status 0 iff the attack makes sense for IN
# (the flatten attacks only apply to images with an alpha channel).
ct_attack_applies() {
    case $1 in
        flatwhite|flatgray) _ct_has_alpha "$2" ;;
        *) return 0 ;;
    esac
}

# run_attack SPEC IN OUT_PREFIX SEED -- SPEC is a public attack name or a sweep
# point jpegq:Q, webpq:Q, scale:PCT, croparea:PCT, rotate:DEG, aspect:PCT,
# turn:DEG
run_attack() {
    local spec=$1 in=$2 prefix=$3 seed=$4
    case $spec in
        jpegq:*|webpq:*|scale:*|croparea:*|rotate:*|aspect:*|turn:*)
            local fn=${spec%%:*} arg=${spec#*:}
            [[ $arg =~ ^-?[0-9]+(\.[0-9]+)?$ ]] || _ct_die "bad parameter in $spec" || return 1
            "attack_$fn" "$in" "$prefix" "$seed" "$arg" ;;
        *)
            [[ $spec =~ ^[a-z0-9]+$ ]] && declare -F "attack_$spec" >/dev/null \
                || _ct_die "unknown attack: $spec" || return 1
            "attack_$spec" "$in" "$prefix" "$seed" ;;
    esac
}

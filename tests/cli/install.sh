#!/usr/bin/env bash
# Install: `cmake --install` into a fresh prefix, build examples/hello.c
# against it with pkg-config as a pipeline engineer would, and run it on a
# home made by the installed celtrace. Also checks that only the public
# header is installed and that the shared library exports only ct_ names.
. "$(dirname "$0")/lib.sh"

: "${CT_BUILD:?set CT_BUILD to the build tree}"
: "${CT_SRC:?set CT_SRC to the source tree}"
PREFIX=$T_DIR/prefix
CACHE=$CT_BUILD/CMakeCache.txt
CC=${CC:-cc}

cache_var() {
    sed -n "s/^$1:[A-Z]*=//p" "$CACHE"
}

# The example must be built the way the library was: a sanitized libceltrace
# needs the sanitizer runtimes in the program that loads it.
SAN_FLAGS=()
if [ "$(cache_var CELTRACE_SANITIZE)" = ON ]; then
    SAN_FLAGS=(-fsanitize=address,undefined -fno-omit-frame-pointer)
    echo "sanitizer build: the example is built with ${SAN_FLAGS[*]}"
fi

run cmake --install "$CT_BUILD" --prefix "$PREFIX"
check "cmake --install succeeds" test "$RC" -eq 0
[ "$RC" -eq 0 ] || { err >&2; finish; }

# GNUInstallDirs picks lib or lib/<multiarch> at configure time.
LIBDIR=$(cache_var CMAKE_INSTALL_LIBDIR)
case "$LIBDIR" in
/*) bad "CMAKE_INSTALL_LIBDIR is absolute ($LIBDIR); cannot relocate" ;;
esac
echo "libdir: $LIBDIR"
LIB=$PREFIX/$LIBDIR
PC_DIR=$LIB/pkgconfig

check "celtrace installed" test -x "$PREFIX/bin/celtrace"
check "shared library installed" test -e "$LIB/libceltrace.so"
check "soname link installed" test -e "$LIB/libceltrace.so.0"
check "static library installed" test -e "$LIB/libceltrace.a"
check "pkg-config file installed" test -e "$PC_DIR/celtrace.pc"

# Only the public header.
check "only include/celtrace/celtrace.h is installed" \
    test "$(cd "$PREFIX" && find include -mindepth 1 -type f)" = include/celtrace/celtrace.h

# The shared library exports ct_ names and nothing else, and every CT_API
# function of the header.
nm -D --defined-only "$LIB/libceltrace.so" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort -u \
    >"$T_DIR/exported"
grep -v '^ct_' "$T_DIR/exported" >"$T_DIR/foreign"
check "exports only ct_* symbols (others: $(tr '\n' ' ' <"$T_DIR/foreign"))" \
    test ! -s "$T_DIR/foreign"
grep -oP 'CT_API\b.*?\bct_\w+(?=\()' "$PREFIX/include/celtrace/celtrace.h" |
    grep -oP 'ct_\w+$' | sort -u >"$T_DIR/declared"
check "header declares CT_API functions" test "$(wc -l <"$T_DIR/declared")" -gt 10
comm -23 "$T_DIR/declared" "$T_DIR/exported" >"$T_DIR/missing"
check "every CT_API function is exported (missing: $(tr '\n' ' ' <"$T_DIR/missing"))" \
    test ! -s "$T_DIR/missing"

# pkg-config, used exactly as documented. The .pc file must point into the
# prefix it was installed to, not the one given at configure time.
PC_FLAGS=$(PKG_CONFIG_PATH=$PC_DIR pkg-config --cflags --libs celtrace 2>"$T_DIR/pc.err")
check "pkg-config finds celtrace ($(head -c 200 "$T_DIR/pc.err"))" test -n "$PC_FLAGS"
echo "pkg-config: $PC_FLAGS"
PC_PREFIX=$(realpath -m "$(PKG_CONFIG_PATH=$PC_DIR pkg-config --variable=prefix celtrace)")
# The -I and -L paths, resolved (a relocatable .pc gives ${pcfiledir}/../..).
PC_DIRS=$(for f in $PC_FLAGS; do
    case "$f" in -I* | -L*) echo "${f:0:2}$(realpath -m "${f:2}")" ;; esac
done)
if grep -qxF -- "-I$(realpath -m "$PREFIX/include")" <<<"$PC_DIRS" &&
    grep -qxF -- "-L$(realpath -m "$LIB")" <<<"$PC_DIRS"; then
    ok
else
    bad "celtrace.pc is not relocated by 'cmake --install --prefix': it says prefix=$PC_PREFIX," \
        "flags '$PC_FLAGS' (the .pc is configured with CMAKE_INSTALL_PREFIX at configure time;" \
        "derive prefix from \${pcfiledir} instead)"
    # Go on with the right flags so the rest of the test still says something.
    PC_FLAGS="-I$PREFIX/include -L$LIB -lceltrace"
fi
check "pkg-config --modversion matches the header" \
    test "$(PKG_CONFIG_PATH=$PC_DIR pkg-config --modversion celtrace)" = \
    "$(sed -n 's/^#define CT_VERSION_STRING "\(.*\)"/\1/p' "$PREFIX/include/celtrace/celtrace.h")"

# Build the example: warnings are errors, only the installed header.
# shellcheck disable=SC2086 # PC_FLAGS is a list of flags
run "$CC" -std=c17 -Wall -Wextra -Werror -Wstrict-prototypes "${SAN_FLAGS[@]}" \
    "$CT_SRC/examples/hello.c" -o "$T_DIR/hello" $PC_FLAGS
check "examples/hello.c builds against the install ($(head -c 400 "$T_DIR/err"))" \
    test "$RC" -eq 0

# And with its Makefile, in a copy (the source tree stays clean).
mkdir -p "$T_DIR/mk"
cp "$CT_SRC/examples/hello.c" "$CT_SRC/examples/Makefile" "$T_DIR/mk/"
run env PKG_CONFIG_PATH="$PC_DIR" make -C "$T_DIR/mk" \
    CFLAGS="-std=c17 -Wall -Wextra -Werror ${SAN_FLAGS[*]}" LDFLAGS="${SAN_FLAGS[*]}"
if [ "$PC_PREFIX" = "$(realpath -m "$PREFIX")" ]; then
    check "examples/Makefile builds hello ($(head -c 400 "$T_DIR/err"))" test -x "$T_DIR/mk/hello"
fi

# A home made by the installed command.
H=$T_DIR/home
"$PREFIX/bin/celtrace" --home "$H" init --studio "Install Studio" </dev/null >/dev/null
check "installed celtrace init" test -s "$H/keystore"
"$PREFIX/bin/celtrace" --home "$H" vendor add "Inkwell" --country KR </dev/null >/dev/null
"$PREFIX/bin/celtrace" --home "$H" vendor add "Studio Ghibli 日本" </dev/null >/dev/null
"$PREFIX/bin/celtrace" --home "$H" vendor revoke 2 </dev/null >/dev/null
VERSION=$("$PREFIX/bin/celtrace" --version)

if [ -x "$T_DIR/hello" ]; then
    check "hello loads the installed library" \
        bash -c "LD_LIBRARY_PATH='$LIB' ldd '$T_DIR/hello' | grep -q '$LIB/libceltrace.so'"
    run env LD_LIBRARY_PATH="$LIB" "$T_DIR/hello" "$H"
    expect_ok "hello runs"
    printf '%s\n' "$VERSION" "2 vendors in $H" "1 Inkwell" "2 Studio Ghibli 日本 (revoked)" \
        >"$T_DIR/want"
    check "hello prints the version and the vendors: $(tr '\n' '|' <"$T_DIR/out")" \
        diff "$T_DIR/want" "$T_DIR/out"

    run env LD_LIBRARY_PATH="$LIB" "$T_DIR/hello" "$T_DIR/nohome"
    check "hello on a missing home fails" test "$RC" -eq 1
    check "hello on a missing home says init" grep -q init "$T_DIR/err"
fi

finish

/* keys: keystore format, init/unlock, key derivation, fault injection. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include <celtrace/celtrace.h>

#include "keys/keys.h"
#include "store/store.h"
#include "testutil.h"

/* The cheapest Argon2 the header accepts, so the format tests can unseal a
 * thousand times in well under a second. */
#define OPS_MIN ((uint32_t)crypto_pwhash_OPSLIMIT_MIN)
#define MEM_MIN_KIB ((uint32_t)(crypto_pwhash_MEMLIMIT_MIN / 1024u))

static const char PASS[] = "correct horse battery staple";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Read a whole file into a malloc'd buffer; NULL if it cannot be read. */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    *n = 0;
    if (f == NULL) {
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            cap = cap == 0 ? 4096 : cap * 2;
            uint8_t *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) {
            break;
        }
    }
    fclose(f);
    *n = len;
    return buf;
}

static int same_file(const char *path, const uint8_t *want, size_t want_n)
{
    size_t n = 0;
    uint8_t *got = slurp(path, &n);
    int same = got != NULL && n == want_n && memcmp(got, want, n) == 0;
    free(got);
    return same;
}

static void join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "path too long: %s/%s\n", dir, name);
        exit(2);
    }
}

static mode_t mode_of(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        return (mode_t)-1;
    }
    return sb.st_mode & 07777;
}

/* ---- keystore format ------------------------------------------------------ */

static void fill_secrets(key_secrets *sec)
{
    for (size_t i = 0; i < sizeof sec->master; i++) {
        sec->master[i] = (uint8_t)(0xa0 + i);
    }
    for (size_t i = 0; i < sizeof sec->sign_sk; i++) {
        sec->sign_sk[i] = (uint8_t)(3 * i + 1);
    }
}

static void test_seal_roundtrip(ct_ctx *ctx, const uint8_t file[KEY_FILE_BYTES],
                                const key_secrets *sec)
{
    key_secrets *got = NULL;

    CHECK(memcmp(file, "CTKS", 4) == 0);
    CHECK(file[4] == KEY_FILE_VERSION);
    CHECK(get32(file + 8) == OPS_MIN);
    CHECK(get32(file + 12) == MEM_MIN_KIB);

    CHECK_ST(key_unseal(ctx, file, KEY_FILE_BYTES, PASS, strlen(PASS), &got), CT_OK);
    CHECK(got != NULL);
    if (got != NULL) {
        CHECK(memcmp(got->master, sec->master, sizeof sec->master) == 0);
        CHECK(memcmp(got->sign_sk, sec->sign_sk, sizeof sec->sign_sk) == 0);
    }
    key_secrets_free(got);
    got = NULL;

    /* The passphrase is bytes with a length, not a C string. */
    CHECK_ST(key_unseal(ctx, file, KEY_FILE_BYTES, PASS, strlen(PASS) - 1, &got), CT_ERR_AUTH);
    CHECK(got == NULL);
    CHECK_ST(key_unseal(ctx, file, KEY_FILE_BYTES, "wrong", 5, &got), CT_ERR_AUTH);
    CHECK(got == NULL);
    CHECK(strstr(ct_errmsg(ctx), PASS) == NULL);

    /* Two seals of the same secrets differ (fresh salt and nonce). */
    uint8_t again[KEY_FILE_BYTES];
    CHECK_ST(key_seal(ctx, sec, PASS, strlen(PASS), OPS_MIN, MEM_MIN_KIB, again), CT_OK);
    CHECK(memcmp(again, file, KEY_FILE_BYTES) != 0);
    CHECK(memcmp(again, file, 16) == 0);
}

static void test_bit_flips(ct_ctx *ctx, const uint8_t file[KEY_FILE_BYTES])
{
    uint8_t bad[KEY_FILE_BYTES];
    int never_ok = 1, only_auth_or_format = 1, out_null = 1, skipped = 0, tried = 0;

    for (size_t i = 0; i < KEY_FILE_BYTES; i++) {
        for (int bit = 0; bit < 8; bit++) {
            key_secrets *got = NULL;
            memcpy(bad, file, KEY_FILE_BYTES);
            bad[i] ^= (uint8_t)(1u << bit);
            /* A flip in the memory cost that stays within the accepted range
             * would run Argon2 with up to 512 MiB; those few are left to the
             * absurd-cost test, the rest of the header is covered here. */
            uint32_t mem = get32(bad + 12);
            if (mem > 16u * 1024u && mem <= KEY_MAX_MEMLIMIT_KIB && get32(bad + 8) >= OPS_MIN &&
                get32(bad + 8) <= KEY_MAX_OPSLIMIT) {
                skipped++;
                continue;
            }
            tried++;
            ct_status st = key_unseal(ctx, bad, KEY_FILE_BYTES, PASS, strlen(PASS), &got);
            if (st == CT_OK) {
                never_ok = 0;
                fprintf(stderr, "bit %d of byte %zu flipped: unsealed anyway\n", bit, i);
            }
            if (st != CT_ERR_AUTH && st != CT_ERR_FORMAT) {
                only_auth_or_format = 0;
                fprintf(stderr, "bit %d of byte %zu flipped: status %d\n", bit, i, (int)st);
            }
            if (got != NULL) {
                out_null = 0;
            }
            key_secrets_free(got);
        }
    }
    CHECK(never_ok);
    CHECK(only_auth_or_format);
    CHECK(out_null);
    CHECK(skipped < 8);
    CHECK(tried > (int)KEY_FILE_BYTES * 7);
}

static void test_truncation(ct_ctx *ctx, const uint8_t file[KEY_FILE_BYTES])
{
    int all_format = 1;
    for (size_t n = 0; n < KEY_FILE_BYTES; n++) {
        key_secrets *got = NULL;
        /* A heap copy of exactly n bytes, so ASan sees any read past it. */
        uint8_t *cut = malloc(n == 0 ? 1 : n);
        if (cut == NULL) {
            CHECK(cut != NULL);
            return;
        }
        memcpy(cut, file, n);
        ct_status st = key_unseal(ctx, cut, n, PASS, strlen(PASS), &got);
        if (st != CT_ERR_FORMAT || got != NULL) {
            all_format = 0;
            fprintf(stderr, "truncated to %zu bytes: status %d\n", n, (int)st);
        }
        key_secrets_free(got);
        free(cut);
    }
    CHECK(all_format);

    uint8_t longer[KEY_FILE_BYTES + 1];
    key_secrets *got = NULL;
    memcpy(longer, file, KEY_FILE_BYTES);
    longer[KEY_FILE_BYTES] = 0;
    CHECK_ST(key_unseal(ctx, longer, sizeof longer, PASS, strlen(PASS), &got), CT_ERR_FORMAT);
    CHECK(got == NULL);
}

static void test_header_fields(ct_ctx *ctx, const uint8_t file[KEY_FILE_BYTES])
{
    uint8_t bad[KEY_FILE_BYTES];
    key_secrets *got = NULL;

    /* A version this library does not know: FORMAT, and the message says so. */
    const uint8_t versions[] = {0, 2, 9, 255};
    for (size_t i = 0; i < sizeof versions; i++) {
        memcpy(bad, file, KEY_FILE_BYTES);
        bad[4] = versions[i];
        CHECK_ST(key_unseal(ctx, bad, KEY_FILE_BYTES, PASS, strlen(PASS), &got), CT_ERR_FORMAT);
        CHECK(got == NULL);
        CHECK(strstr(ct_errmsg(ctx), "version") != NULL);
    }
    /* A future version must be named as such even if its file is longer. */
    uint8_t future[KEY_FILE_BYTES + 32] = {0};
    memcpy(future, file, KEY_FILE_BYTES);
    future[4] = 2;
    CHECK_ST(key_unseal(ctx, future, sizeof future, PASS, strlen(PASS), &got), CT_ERR_FORMAT);
    CHECK(strstr(ct_errmsg(ctx), "version") != NULL);

    /* Not a keystore at all. */
    memcpy(bad, file, KEY_FILE_BYTES);
    memcpy(bad, "\x89PNG", 4);
    CHECK_ST(key_unseal(ctx, bad, KEY_FILE_BYTES, PASS, strlen(PASS), &got), CT_ERR_FORMAT);

    /* Unknown algorithms and a nonzero reserved byte. */
    for (size_t pos = 5; pos <= 7; pos++) {
        memcpy(bad, file, KEY_FILE_BYTES);
        bad[pos] = 0x7f;
        CHECK_ST(key_unseal(ctx, bad, KEY_FILE_BYTES, PASS, strlen(PASS), &got), CT_ERR_FORMAT);
    }

    /* Absurd cost parameters are refused before Argon2 runs. */
    const uint32_t cost[][2] = {
        {0, MEM_MIN_KIB},
        {0xffffffffu, MEM_MIN_KIB},
        {KEY_MAX_OPSLIMIT + 1, MEM_MIN_KIB},
        {OPS_MIN, 0},
        {OPS_MIN, MEM_MIN_KIB - 1},
        {OPS_MIN, KEY_MAX_MEMLIMIT_KIB + 1},
        {OPS_MIN, 0xffffffffu},
        {0xffffffffu, 0xffffffffu},
    };
    double t0 = now_s();
    for (size_t i = 0; i < sizeof cost / sizeof cost[0]; i++) {
        memcpy(bad, file, KEY_FILE_BYTES);
        put32(bad + 8, cost[i][0]);
        put32(bad + 12, cost[i][1]);
        CHECK_ST(key_unseal(ctx, bad, KEY_FILE_BYTES, PASS, strlen(PASS), &got), CT_ERR_FORMAT);
        CHECK(got == NULL);
    }
    CHECK(now_s() - t0 < 1.0);
}

static void test_format(void)
{
    ct_ctx *ctx = NULL;
    key_secrets *sec = sodium_malloc(sizeof *sec);
    uint8_t file[KEY_FILE_BYTES];

    CHECK(sec != NULL);
    CHECK_ST(ct_ctx_new(tu_tmpdir("keys_format"), &ctx), CT_OK);
    if (sec == NULL || ctx == NULL) {
        goto done;
    }
    CHECK(KEY_FILE_BYTES == 168u);
    CHECK(sizeof(key_secrets) == KEY_PLAIN_BYTES);
    fill_secrets(sec);
    CHECK_ST(key_seal(ctx, sec, PASS, strlen(PASS), OPS_MIN, MEM_MIN_KIB, file), CT_OK);
    test_seal_roundtrip(ctx, file, sec);
    test_bit_flips(ctx, file);
    test_truncation(ctx, file);
    test_header_fields(ctx, file);
done:
    if (sec != NULL) {
        sodium_free(sec);
    }
    ct_ctx_free(ctx);
}

/* ---- init and unlock through the public API ------------------------------- */

typedef struct snapshot {
    uint8_t *ks, *pub, *db;
    size_t ks_n, pub_n, db_n;
} snapshot;

static void snap_take(snapshot *s, const char *home)
{
    char p[4200];
    join(p, sizeof p, home, KEY_FILE_NAME);
    s->ks = slurp(p, &s->ks_n);
    join(p, sizeof p, home, KEY_PUB_NAME);
    s->pub = slurp(p, &s->pub_n);
    join(p, sizeof p, home, STO_DB_NAME);
    s->db = slurp(p, &s->db_n);
}

static int snap_same(const snapshot *s, const char *home)
{
    char p[4200];
    int same = 1;
    join(p, sizeof p, home, KEY_FILE_NAME);
    same &= same_file(p, s->ks, s->ks_n);
    join(p, sizeof p, home, KEY_PUB_NAME);
    same &= same_file(p, s->pub, s->pub_n);
    join(p, sizeof p, home, STO_DB_NAME);
    same &= same_file(p, s->db, s->db_n);
    return same;
}

static void snap_free(snapshot *s)
{
    free(s->ks);
    free(s->pub);
    free(s->db);
}

/* Number of entries in a folder, not counting . and .. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static void test_init_unlock(void)
{
    char base[4096], home[4200], p[4300];
    ct_ctx *ctx = NULL, *ctx2 = NULL;
    snapshot snap = {0};
    uint8_t pk[CT_PUBLICKEYBYTES], pk2[CT_PUBLICKEYBYTES];
    char studio[CT_NAME_MAX];

    snprintf(base, sizeof base, "%s", tu_tmpdir("keys_init"));
    join(home, sizeof home, base, "home");

    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    if (ctx == NULL) {
        return;
    }
    CHECK(strcmp(ct_home(ctx), home) == 0);
    CHECK(!ct_is_unlocked(ctx));

    /* Missing home: unlock says run init; nothing is created. */
    CHECK_ST(ct_unlock(ctx, PASS, strlen(PASS)), CT_ERR_NOT_FOUND);
    CHECK(strstr(ct_errmsg(ctx), "init") != NULL);
    CHECK(mode_of(home) == (mode_t)-1);
    CHECK_ST(ct_public_key(ctx, pk, NULL), CT_ERR_NOT_FOUND);

    /* Bad arguments change nothing. */
    CHECK_ST(ct_init(ctx, "", PASS, strlen(PASS)), CT_ERR_MISUSE);
    CHECK_ST(ct_init(ctx, "Blue Heron", PASS, 0), CT_ERR_MISUSE);
    CHECK_ST(ct_init(ctx, "two\nlines", PASS, strlen(PASS)), CT_ERR_MISUSE);
    CHECK(mode_of(home) == (mode_t)-1);

    CHECK_ST(ct_init(ctx, "Blue Heron Animation", PASS, strlen(PASS)), CT_OK);
    CHECK(ct_is_unlocked(ctx));
    CHECK(mode_of(home) == 0700);
    join(p, sizeof p, home, KEY_FILE_NAME);
    CHECK(mode_of(p) == 0600);
    join(p, sizeof p, home, STO_DB_NAME);
    CHECK(mode_of(p) == 0600);
    join(p, sizeof p, home, KEY_PUB_NAME);
    CHECK(mode_of(p) != (mode_t)-1);
    CHECK((mode_of(p) & 0022) == 0);
    /* keystore, studio.pub, celtrace.db and no leftovers (tmp, -wal). */
    CHECK(count_entries(home) == 3);

    CHECK_ST(ct_public_key(ctx, pk, studio), CT_OK);
    CHECK(strcmp(studio, "Blue Heron Animation") == 0);

    /* The signing key in the keystore matches the public file. */
    const key_secrets *sec = NULL;
    CHECK_ST(key_secrets_of(ctx, &sec), CT_OK);
    if (sec != NULL) {
        CHECK(memcmp(sec->sign_sk + 32, pk, CT_PUBLICKEYBYTES) == 0);
    }

    /* A second init refuses and leaves every byte as it was. */
    snap_take(&snap, home);
    CHECK(snap.ks != NULL && snap.ks_n == KEY_FILE_BYTES);
    CHECK_ST(ct_ctx_new(home, &ctx2), CT_OK);
    CHECK_ST(ct_init(ctx2, "Other Studio", "other pass", 10), CT_ERR_EXISTS);
    CHECK(!ct_is_unlocked(ctx2));
    CHECK_ST(ct_init(ctx, "Blue Heron Animation", PASS, strlen(PASS)), CT_ERR_EXISTS);
    CHECK(snap_same(&snap, home));
    CHECK(count_entries(home) == 3);
    CHECK(mode_of(home) == 0700);

    /* Unlock in a fresh context: wrong passphrase, then the right one. */
    CHECK_ST(ct_unlock(ctx2, "wrong", 5), CT_ERR_AUTH);
    CHECK(!ct_is_unlocked(ctx2));
    CHECK(strstr(ct_errmsg(ctx2), "wrong") != NULL);
    CHECK_ST(ct_unlock(ctx2, PASS, strlen(PASS) + 1), CT_ERR_AUTH);
    CHECK_ST(ct_unlock(ctx2, PASS, strlen(PASS)), CT_OK);
    CHECK(ct_is_unlocked(ctx2));
    CHECK_ST(ct_public_key(ctx2, pk2, NULL), CT_OK);
    CHECK(memcmp(pk, pk2, sizeof pk) == 0);

    /* Both contexts hold the same master secret: same mark keys. */
    uint8_t k1[CT_MARK_KEYBYTES], k2[CT_MARK_KEYBYTES];
    CHECK_ST(ct_vendor_mark_key(ctx, 5, 1, k1), CT_OK);
    CHECK_ST(ct_vendor_mark_key(ctx2, 5, 1, k2), CT_OK);
    CHECK(memcmp(k1, k2, sizeof k1) == 0);
    CHECK(snap_same(&snap, home));

    char *text = NULL;
    CHECK_ST(ct_public_key_export(ctx2, &text), CT_OK);
    CHECK(text != NULL && strstr(text, "Blue Heron Animation") != NULL);
    ct_free(text);

    /* An existing folder with loose permissions is tightened by init. */
    char home2[4200];
    ct_ctx *ctx3 = NULL;
    join(home2, sizeof home2, base, "loose");
    CHECK(mkdir(home2, 0755) == 0);
    CHECK(chmod(home2, 0755) == 0);
    CHECK_ST(ct_ctx_new(home2, &ctx3), CT_OK);
    CHECK_ST(ct_init(ctx3, "Loose", PASS, strlen(PASS)), CT_OK);
    CHECK(mode_of(home2) == 0700);
    ct_ctx_free(ctx3);

    /* A damaged keystore on disk: FORMAT or AUTH, never OK. The byte is
     * flipped, not overwritten: a fixed value equals the random byte there
     * one run in 256, and then nothing is damaged. */
    ctx3 = NULL;
    join(p, sizeof p, home2, KEY_FILE_NAME);
    FILE *f = fopen(p, "r+b");
    CHECK(f != NULL);
    if (f != NULL) {
        int old = -1;
        if (fseek(f, 100, SEEK_SET) == 0)
            old = fgetc(f);
        CHECK(old >= 0);
        CHECK(fseek(f, 100, SEEK_SET) == 0);
        fputc((old ^ 0x55) & 0xff, f);
        CHECK(fclose(f) == 0);
    }
    CHECK_ST(ct_ctx_new(home2, &ctx3), CT_OK);
    CHECK_ST(ct_unlock(ctx3, PASS, strlen(PASS)), CT_ERR_AUTH);
    ct_ctx_free(ctx3);
    CHECK(truncate(p, 60) == 0);
    ctx3 = NULL;
    CHECK_ST(ct_ctx_new(home2, &ctx3), CT_OK);
    CHECK_ST(ct_unlock(ctx3, PASS, strlen(PASS)), CT_ERR_FORMAT);
    ct_ctx_free(ctx3);

    snap_free(&snap);
    ct_ctx_free(ctx2);
    ct_ctx_free(ctx);
}

/* ---- derivation ------------------------------------------------------------ */

/* libsodium 1.0.18's crypto_kdf_derive_from_key, written out: BLAKE2b keyed
 * with the master, salt = subkey id little-endian then zeros, personal =
 * the 8-byte context then zeros. A second implementation to hold the KAT to. */
static void kdf_by_hand(const uint8_t master[32], uint64_t subkey, const char ctx8[8],
                        uint8_t out[32])
{
    uint8_t salt[crypto_generichash_blake2b_SALTBYTES] = {0};
    uint8_t personal[crypto_generichash_blake2b_PERSONALBYTES] = {0};
    for (int i = 0; i < 8; i++) {
        salt[i] = (uint8_t)(subkey >> (8 * i));
    }
    memcpy(personal, ctx8, 8);
    if (crypto_generichash_blake2b_salt_personal(out, 32, NULL, 0, master, 32, salt, personal) !=
        0) {
        memset(out, 0, 32);
    }
}

static const struct {
    uint32_t vendor, epoch;
} KAT_CASES[] = {{1, 1}, {7, 2}, {0xffffffffu, 0xffffffffu}};

static void test_kat(void)
{
    uint8_t master[KEY_MASTER_BYTES];
    char line[256], want_line[256], path[4096];
    const char *kat = getenv("CT_KAT");
    size_t idx = 0;

    for (size_t i = 0; i < sizeof master; i++) {
        master[i] = (uint8_t)i;
    }
    snprintf(path, sizeof path, "%s/kdf.exp", kat != NULL && kat[0] != '\0' ? kat : "tests/kat");
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (f == NULL) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        if (line[0] == '#' || line[0] == '\n') {
            continue;
        }
        if (idx >= sizeof KAT_CASES / sizeof KAT_CASES[0]) {
            CHECK(!"kdf.exp has more vectors than the test");
            break;
        }
        uint8_t got[CT_MARK_KEYBYTES], hand[CT_MARK_KEYBYTES];
        char hex[2 * CT_MARK_KEYBYTES + 1];
        uint32_t v = KAT_CASES[idx].vendor, e = KAT_CASES[idx].epoch;
        key_derive_mark_raw(master, v, e, got);
        kdf_by_hand(master, ((uint64_t)e << 32) | v, "ctvmark1", hand);
        CHECK(memcmp(got, hand, sizeof got) == 0);
        sodium_bin2hex(hex, sizeof hex, got, sizeof got);
        snprintf(want_line, sizeof want_line, "vendor=%u epoch=%u %s\n", v, e, hex);
        if (strcmp(line, want_line) != 0) {
            fprintf(stderr, "kdf.exp line %zu:\n  file: %s  code: %s", idx + 1, line, want_line);
        }
        CHECK(strcmp(line, want_line) == 0);
        idx++;
    }
    fclose(f);
    CHECK(idx == sizeof KAT_CASES / sizeof KAT_CASES[0]);
}

static void test_derivation(void)
{
    uint8_t master[KEY_MASTER_BYTES], a[32], b[32], c[32], d[32];
    for (size_t i = 0; i < sizeof master; i++) {
        master[i] = (uint8_t)(0x5a ^ i);
    }
    key_derive_mark_raw(master, 3, 1, a);
    key_derive_mark_raw(master, 3, 1, b);
    CHECK(memcmp(a, b, 32) == 0);
    key_derive_mark_raw(master, 4, 1, c);
    CHECK(memcmp(a, c, 32) != 0);
    key_derive_mark_raw(master, 3, 2, d);
    CHECK(memcmp(a, d, 32) != 0);
    CHECK(memcmp(c, d, 32) != 0);
    /* Vendor and epoch do not alias: (v=1,e=2) vs (v=2,e=1). */
    key_derive_mark_raw(master, 1, 2, a);
    key_derive_mark_raw(master, 2, 1, b);
    CHECK(memcmp(a, b, 32) != 0);
    /* A different master gives different keys. */
    master[31] ^= 1;
    key_derive_mark_raw(master, 1, 2, c);
    CHECK(memcmp(a, c, 32) != 0);

    /* Many vendors, two epochs: all distinct. */
    enum { NV = 64 };
    static uint8_t keys[2 * NV][32];
    int distinct = 1;
    for (uint32_t e = 1; e <= 2; e++) {
        for (uint32_t v = 1; v <= NV; v++) {
            key_derive_mark_raw(master, v, e, keys[(e - 1) * NV + (v - 1)]);
        }
    }
    for (size_t i = 0; i < 2 * NV; i++) {
        for (size_t j = i + 1; j < 2 * NV; j++) {
            if (memcmp(keys[i], keys[j], 32) == 0) {
                distinct = 0;
            }
        }
    }
    CHECK(distinct);
}

static void test_mark_key_api(void)
{
    char home[4200];
    ct_ctx *ctx = NULL, *locked = NULL;
    uint8_t k[CT_MARK_KEYBYTES], raw[CT_MARK_KEYBYTES];
    const uint8_t zero[CT_MARK_KEYBYTES] = {0};

    join(home, sizeof home, tu_tmpdir("keys_mark"), "home");
    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    CHECK_ST(ct_ctx_new(home, &locked), CT_OK);
    if (ctx == NULL || locked == NULL) {
        goto done;
    }
    CHECK_ST(ct_vendor_mark_key(locked, 1, 1, k), CT_ERR_AUTH);
    CHECK_ST(ct_init(ctx, "Mark Studio", PASS, strlen(PASS)), CT_OK);
    CHECK_ST(ct_vendor_mark_key(locked, 1, 1, k), CT_ERR_AUTH);

    CHECK_ST(ct_vendor_mark_key(ctx, 0, 1, k), CT_ERR_MISUSE);
    CHECK_ST(ct_vendor_mark_key(ctx, 1, 0, k), CT_ERR_MISUSE);
    CHECK_ST(ct_vendor_mark_key(ctx, 0, 0, k), CT_ERR_MISUSE);
    CHECK_ST(ct_vendor_mark_key(ctx, 9, 3, k), CT_OK);
    CHECK(memcmp(k, zero, sizeof k) != 0);

    const key_secrets *sec = NULL;
    CHECK_ST(key_secrets_of(ctx, &sec), CT_OK);
    if (sec != NULL) {
        key_derive_mark_raw(sec->master, 9, 3, raw);
        CHECK(memcmp(k, raw, sizeof k) == 0);
    }
    /* The sync key is not any vendor's mark key. */
    uint8_t sync[CT_MARK_KEYBYTES];
    CHECK_ST(key_derive_sync(ctx, sync), CT_OK);
    CHECK(memcmp(sync, k, sizeof k) != 0);
    CHECK_ST(key_derive_sync(locked, sync), CT_ERR_AUTH);

    /* Signatures verify under the published key. */
    uint8_t sig[KEY_SIG_BYTES], pk[CT_PUBLICKEYBYTES];
    const uint8_t msg[] = "issuance record";
    CHECK_ST(key_sign(ctx, msg, sizeof msg, sig), CT_OK);
    CHECK_ST(ct_public_key(locked, pk, NULL), CT_OK);
    CHECK(crypto_sign_verify_detached(sig, msg, sizeof msg, pk) == 0);
    CHECK_ST(key_sign(locked, msg, sizeof msg, sig), CT_ERR_AUTH);
    sodium_memzero(k, sizeof k);
done:
    ct_ctx_free(locked);
    ct_ctx_free(ctx);
}

/* A clone for a worker thread: the same keys without a second unlock,
 * its own copy (the original may go first), its own settings after. */
static void test_clone(void)
{
    char home[4200];
    ct_ctx *ctx = NULL, *clone = NULL, *locked = NULL, *lclone = NULL;
    uint8_t k1[CT_MARK_KEYBYTES], k2[CT_MARK_KEYBYTES];

    join(home, sizeof home, tu_tmpdir("keys_clone"), "home");
    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    CHECK_ST(ct_ctx_new(home, &locked), CT_OK);
    if (ctx == NULL || locked == NULL) {
        goto done;
    }
    CHECK_ST(ct_init(ctx, "Clone Studio", PASS, strlen(PASS)), CT_OK);
    ct_set_max_pixels(ctx, 12345);
    CHECK_ST(ct_vendor_mark_key(ctx, 4, 2, k1), CT_OK);
    CHECK_ST(ct_ctx_clone(ctx, &clone), CT_OK);
    CHECK_ST(ct_ctx_clone(locked, &lclone), CT_OK);
    if (clone == NULL || lclone == NULL) {
        goto done;
    }
    CHECK(ct_is_unlocked(clone));
    CHECK(!ct_is_unlocked(lclone));
    CHECK(strcmp(ct_home(clone), ct_home(ctx)) == 0);
    CHECK(clone->max_pixels == 12345);
    /* The original goes first: the clone keeps working on its own copy. */
    ct_ctx_free(ctx);
    ctx = NULL;
    CHECK_ST(ct_vendor_mark_key(clone, 4, 2, k2), CT_OK);
    CHECK(memcmp(k1, k2, sizeof k1) == 0);
    CHECK_ST(ct_vendor_mark_key(lclone, 4, 2, k2), CT_ERR_AUTH);
    /* Each has its own error message. */
    CHECK(ct_errmsg(lclone)[0] != '\0');
    CHECK(ct_errmsg(clone)[0] == '\0');
    sodium_memzero(k1, sizeof k1);
    sodium_memzero(k2, sizeof k2);
done:
    ct_ctx_free(lclone);
    ct_ctx_free(clone);
    ct_ctx_free(locked);
    ct_ctx_free(ctx);
}

/* ---- fault injection ------------------------------------------------------- */

static void test_faults(void)
{
    char home[4200];
    ct_ctx *ctx = NULL;
    ct_vendor v;
    int bad = 0, saw_nomem = 0, reached_ok = 0;

    join(home, sizeof home, tu_tmpdir("keys_fault"), "home");
    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    if (ctx == NULL) {
        return;
    }
    CHECK_ST(ct_init(ctx, "Fault Studio", PASS, strlen(PASS)), CT_OK);
    CHECK_ST(ct_vendor_add(ctx, "Alpha", NULL, NULL, &v), CT_OK);
    CHECK_ST(ct_vendor_add(ctx, "Beta", "fr", "b@example.org", &v), CT_OK);
    ct_ctx_free(ctx);
    ctx = NULL;

    /* ct_unlock: fail the 1st, 2nd, ... allocation until a run needs no
     * more than N. Each call gets a fresh context so earlier successes do
     * not hide later allocations. */
    for (long n = 1; n <= 50 && !reached_ok; n++) {
        CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
        if (ctx == NULL) {
            return;
        }
        ctx->fail_alloc_after = n;
        ct_status st = ct_unlock(ctx, PASS, strlen(PASS));
        if (st == CT_ERR_NOMEM) {
            saw_nomem = 1;
            if (ct_is_unlocked(ctx)) {
                bad++;
            }
        } else if (st == CT_OK) {
            reached_ok = ctx->fail_alloc_after > 0;
            if (!ct_is_unlocked(ctx)) {
                bad++;
            }
        } else {
            bad++;
            fprintf(stderr, "ct_unlock with allocation %ld failing: %d (%s)\n", n, (int)st,
                    ct_errmsg(ctx));
        }
        /* After the fault the same context still works. */
        ctx->fail_alloc_after = 0;
        if (!ct_is_unlocked(ctx)) {
            CHECK_ST(ct_unlock(ctx, PASS, strlen(PASS)), CT_OK);
        }
        ct_ctx_free(ctx);
        ctx = NULL;
    }
    CHECK(bad == 0);
    CHECK(saw_nomem);
    CHECK(reached_ok);

    /* ct_vendor_list, on a fresh context (opens the database) and on one
     * that has it open already. */
    for (int warm = 0; warm <= 1; warm++) {
        bad = 0;
        saw_nomem = 0;
        reached_ok = 0;
        for (long n = 1; n <= 50 && !reached_ok; n++) {
            ct_vendor *all = NULL;
            size_t count = 99;
            CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
            if (ctx == NULL) {
                return;
            }
            if (warm) {
                CHECK_ST(ct_vendor_find(ctx, "Alpha", &v), CT_OK);
            }
            ctx->fail_alloc_after = n;
            ct_status st = ct_vendor_list(ctx, &all, &count);
            if (st == CT_ERR_NOMEM) {
                saw_nomem = 1;
                if (all != NULL || count != 0) {
                    bad++;
                }
            } else if (st == CT_OK) {
                reached_ok = ctx->fail_alloc_after > 0;
                if (count != 2 || all == NULL || strcmp(all[1].name, "Beta") != 0) {
                    bad++;
                }
            } else {
                bad++;
                fprintf(stderr, "ct_vendor_list with allocation %ld failing: %d (%s)\n", n,
                        (int)st, ct_errmsg(ctx));
            }
            ct_free(all);
            all = NULL;
            ctx->fail_alloc_after = 0;
            CHECK_ST(ct_vendor_list(ctx, &all, &count), CT_OK);
            CHECK(count == 2);
            ct_free(all);
            ct_ctx_free(ctx);
            ctx = NULL;
        }
        CHECK(bad == 0);
        CHECK(saw_nomem);
        CHECK(reached_ok);
    }
}

int main(void)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 2;
    }
    double t0 = now_s();
    test_format();
    test_init_unlock();
    test_derivation();
    test_kat();
    test_mark_key_api();
    test_clone();
    test_faults();
    printf("test_keys: %.2f s\n", now_s() - t0);
    return tu_done("test_keys");
}

/* watermark: keyed patterns, known answers, the payload code, the tile,
 * the perceptual mask and the quality of an embedding.
 *
 * `test_watermark --write-kat` rewrites tests/kat/watermark.exp from the
 * current code (then review the diff: a changed KAT is a changed mark
 * format, so WM_ALGO_VERSION goes up with it). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include <celtrace/celtrace.h>

#include "media/media.h"
#include "watermark/wm.h"
#include "testutil.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- deterministic randomness (splitmix64), so a failure reproduces ------ */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_u64(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(rng *r) /* (0, 1) */
{
    return ((double)(rng_u64(r) >> 11) + 0.5) / 9007199254740992.0;
}

static double rng_gauss(rng *r)
{
    double u = rng_unit(r), v = rng_unit(r);
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static void rng_bytes(rng *r, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = (uint8_t)(rng_u64(r) >> 56);
    }
}

static void key_seq(uint8_t key[WM_KEYBYTES])
{
    for (int i = 0; i < WM_KEYBYTES; i++) {
        key[i] = (uint8_t)i;
    }
}

/* ---- keyed determinism and the shape of the sync and spreading ----------- */

/* Exactly WM_SYNC_K distinct frequencies in the band, none on or next to an
 * axis, none whose mirror image (-p, q) is chosen as well. Returns the
 * number of violations (and says which). */
static int sync_violations(const wm_sync *s)
{
    int bad = 0;
    for (int k = 0; k < WM_SYNC_K; k++) {
        int p = s->p[k], q = s->q[k];
        double r = sqrt((double)(p * p + q * q));
        if (r < WM_SYNC_RMIN || r > WM_SYNC_RMAX) {
            fprintf(stderr, "sync %d: (%d,%d) radius %.2f outside the band\n", k, p, q, r);
            bad++;
        }
        if (abs(p) < 2 || abs(q) < 2) {
            fprintf(stderr, "sync %d: (%d,%d) on an axis\n", k, p, q);
            bad++;
        }
        if (!(s->phase[k] >= 0.0f && s->phase[k] < (float)(2.0 * M_PI) + 1e-6f)) {
            fprintf(stderr, "sync %d: phase %f\n", k, (double)s->phase[k]);
            bad++;
        }
        for (int j = 0; j < WM_SYNC_K; j++) {
            if (j == k) {
                continue;
            }
            /* (p, q) and (-p, -q) are one real frequency. */
            if ((s->p[j] == p && s->q[j] == q) || (s->p[j] == -p && s->q[j] == -q)) {
                fprintf(stderr, "sync %d and %d: both (%d,%d)\n", k, j, p, q);
                bad++;
            }
            /* The mirror (-p, q), also as its conjugate (p, -q). */
            if ((s->p[j] == -p && s->q[j] == q) || (s->p[j] == p && s->q[j] == -q)) {
                fprintf(stderr, "sync %d and %d: (%d,%d) and its mirror\n", k, j, p, q);
                bad++;
            }
        }
    }
    return bad;
}

/* Round robin: every coded bit gets CELLS_LO or CELLS_LO + 1 cells. */
#define CELLS_LO (WM_NCELLS / WM_CODED_BITS)

static void test_keyed(void)
{
    uint8_t ka[WM_KEYBYTES], kb[WM_KEYBYTES];
    wm_sync s1, s2, s3;
    static wm_spread sp1, sp2, sp3;
    rng r = {42};

    key_seq(ka);
    memcpy(kb, ka, sizeof kb);
    kb[31] ^= 0x01;

    memset(&s1, 0xa5, sizeof s1);
    memset(&s2, 0x5a, sizeof s2);
    wm_sync_init(&s1, ka);
    wm_sync_init(&s2, ka);
    wm_sync_init(&s3, kb);
    CHECK(memcmp(&s1, &s2, sizeof s1) == 0);
    CHECK(memcmp(&s1, &s3, sizeof s1) != 0);
    CHECK(memcmp(s1.phase, s3.phase, sizeof s1.phase) != 0);

    memset(&sp1, 0xa5, sizeof sp1);
    memset(&sp2, 0x5a, sizeof sp2);
    wm_spread_init(&sp1, ka);
    wm_spread_init(&sp2, ka);
    wm_spread_init(&sp3, kb);
    CHECK(memcmp(&sp1, &sp2, sizeof sp1) == 0);
    CHECK(memcmp(sp1.pn, sp3.pn, sizeof sp1.pn) != 0);
    CHECK(memcmp(sp1.bit_of_cell, sp3.bit_of_cell, sizeof sp1.bit_of_cell) != 0);

    /* Keys one bit apart give unrelated sequences: pn agrees about half
     * the time (sigma sqrt(N)/2 cells; 5 sigma). */
    int agree = 0;
    for (int i = 0; i < WM_NCELLS; i++) {
        agree += sp1.pn[i] == sp3.pn[i];
    }
    CHECK(fabs(agree - WM_NCELLS / 2.0) < 2.5 * sqrt((double)WM_NCELLS));

    /* Shape, over many keys. */
    int sync_bad = 0, pn_bad = 0, spread_bad = 0;
    for (int t = 0; t < 300; t++) {
        uint8_t k[WM_KEYBYTES];
        if (t == 0) {
            key_seq(k);
        } else {
            rng_bytes(&r, k, sizeof k);
        }
        wm_sync_init(&s1, k);
        sync_bad += sync_violations(&s1);

        wm_spread_init(&sp1, k);
        int sum = 0, ones = 0;
        int count[WM_CODED_BITS];
        memset(count, 0, sizeof count);
        for (int i = 0; i < WM_NCELLS; i++) {
            if (sp1.pn[i] != 1 && sp1.pn[i] != -1) {
                pn_bad++;
            }
            sum += sp1.pn[i];
            if (sp1.bit_of_cell[i] >= WM_CODED_BITS) {
                spread_bad++;
                continue;
            }
            count[sp1.bit_of_cell[i]]++;
        }
        /* sigma of the sum is sqrt(N); 4.5 sigma (p = 7e-6 per key). The
         * keys are fixed, so this cannot flake. */
        if (abs(sum) > 4.5 * sqrt((double)WM_NCELLS)) {
            fprintf(stderr, "key %d: pn sum %d\n", t, sum);
            pn_bad++;
        }
        for (int b = 0; b < WM_CODED_BITS; b++) {
            if (count[b] != CELLS_LO && count[b] != CELLS_LO + 1) {
                spread_bad++;
            }
            ones += count[b] == CELLS_LO + 1;
        }
        /* e.g. 1024 = 258 * 3 + 250: 250 bits get a fourth cell */
        if (ones != WM_NCELLS - WM_CODED_BITS * CELLS_LO) {
            spread_bad++;
        }
    }
    CHECK(sync_bad == 0);
    CHECK(pn_bad == 0);
    CHECK(spread_bad == 0);

    /* wm_sync_at is unit RMS over a tile and periodic in 64 cells. */
    wm_sync_init(&s1, ka);
    double e2 = 0, e1 = 0;
    for (int v = 0; v < WM_CELLS; v++) {
        for (int u = 0; u < WM_CELLS; u++) {
            double x = wm_sync_at(&s1, u, v);
            e1 += x;
            e2 += x * x;
        }
    }
    e1 /= WM_CELLS * WM_CELLS;
    e2 /= WM_CELLS * WM_CELLS;
    CHECK(fabs(e1) < 1e-4);
    CHECK(fabs(e2 - 1.0) < 1e-3);
    CHECK(fabs(wm_sync_at(&s1, 3.3, 7.7) - wm_sync_at(&s1, 3.3 + WM_CELLS, 7.7 - WM_CELLS)) < 1e-4);
}

/* ---- known answers ---------------------------------------------------------- */

#define KAT_SERIAL 0x12345678u
#define KAT_NSYNC  (WM_SYNC_K < 16 ? WM_SYNC_K : 16)

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            abort();
        }
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = (b->cap + (size_t)k + 1) * 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            abort();
        }
        b->p = np;
        b->cap = cap;
    }
}

/* The known answers as text, from the current code. */
static void kat_text(sbuf *b)
{
    uint8_t key[WM_KEYBYTES], info[WM_INFO_BITS], coded[WM_CODED_BITS];
    wm_sync s;
    static wm_spread sp;

    key_seq(key);
    wm_sync_init(&s, key);
    wm_spread_init(&sp, key);
    wm_payload_make(key, KAT_SERIAL, info);
    wm_code_encode(info, coded);

    sb_printf(b, "# celtrace mark algorithm %u: known answers for key bytes 00 01 .. 1f.\n",
              WM_ALGO_VERSION);
    sb_printf(b, "# Written by test_watermark --write-kat. A change here is a change of the\n"
                 "# mark format: bump WM_ALGO_VERSION and say so in the commit.\n");
    sb_printf(b, "# sync k p q phase (first 16)\n");
    for (int k = 0; k < KAT_NSYNC; k++) {
        sb_printf(b, "sync %d %d %d %.4f\n", k, s.p[k], s.q[k], (double)s.phase[k]);
    }
    sb_printf(b, "# pn of cells 0..63 (+ is +1)\n");
    sb_printf(b, "pn ");
    for (int i = 0; i < 64; i++) {
        sb_printf(b, "%c", sp.pn[i] > 0 ? '+' : '-');
    }
    sb_printf(b, "\n# bit_of_cell of cells 0..63\nbit_of_cell");
    for (int i = 0; i < 64; i++) {
        sb_printf(b, " %u", (unsigned)sp.bit_of_cell[i]);
    }
    sb_printf(b, "\n# info bits (serial LSB first, then the tag) for serial 0x%08x\ninfo ",
              KAT_SERIAL);
    for (int i = 0; i < WM_INFO_BITS; i++) {
        sb_printf(b, "%u", (unsigned)info[i]);
    }
    sb_printf(b, "\n# %d coded bits\ncoded ", WM_CODED_BITS);
    for (int i = 0; i < WM_CODED_BITS; i++) {
        sb_printf(b, "%u", (unsigned)coded[i]);
    }
    sb_printf(b, "\n");
}

static const char *kat_path(void)
{
    static char path[4096];
    const char *kat = getenv("CT_KAT");
    snprintf(path, sizeof path, "%s/watermark.exp",
             kat != NULL && kat[0] != '\0' ? kat : "tests/kat");
    return path;
}

static int write_kat(void)
{
    sbuf b = {0};
    const char *path = kat_path();
    kat_text(&b);
    FILE *f = fopen(path, "w");
    if (f == NULL || fwrite(b.p, 1, b.n, f) != b.n || fclose(f) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        free(b.p);
        return 2;
    }
    printf("wrote %s\n", path);
    free(b.p);
    return 0;
}

static void test_kat(void)
{
    sbuf b = {0};
    const char *path = kat_path();
    char line[2048];
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (f == NULL) {
        fprintf(stderr, "%s: %s (run test_watermark --write-kat)\n", path, strerror(errno));
        return;
    }
    kat_text(&b);
    /* Compare the data lines, one by one, and name the first that differs. */
    char *save = NULL;
    char *want = strtok_r(b.p, "\n", &save);
    int lineno = 0, ndata = 0, mismatch = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        lineno++;
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        while (want != NULL && want[0] == '#') {
            want = strtok_r(NULL, "\n", &save);
        }
        if (want == NULL) {
            fprintf(stderr, "%s:%d: more lines than the code gives\n", path, lineno);
            mismatch++;
            break;
        }
        if (strcmp(line, want) != 0) {
            if (mismatch == 0) {
                fprintf(stderr, "%s:%d: mark format changed?\n  file: %s\n  code: %s\n", path,
                        lineno, line, want);
            }
            mismatch++;
        }
        ndata++;
        want = strtok_r(NULL, "\n", &save);
    }
    while (want != NULL && want[0] == '#') {
        want = strtok_r(NULL, "\n", &save);
    }
    fclose(f);
    CHECK(mismatch == 0);
    CHECK(want == NULL);
    CHECK(ndata == KAT_NSYNC + 4);
    free(b.p);
}

/* ---- payload and code -------------------------------------------------------- */

static void to_soft(const uint8_t coded[WM_CODED_BITS], float soft[WM_CODED_BITS])
{
    for (int i = 0; i < WM_CODED_BITS; i++) {
        soft[i] = coded[i] ? -1.0f : 1.0f;
    }
}

static void test_code(void)
{
    uint8_t key[WM_KEYBYTES], key2[WM_KEYBYTES];
    uint8_t info[WM_INFO_BITS], got[WM_INFO_BITS], coded[WM_CODED_BITS], c2[WM_CODED_BITS];
    float soft[WM_CODED_BITS];
    uint32_t serial;
    rng r = {7};

    key_seq(key);
    memcpy(key2, key, sizeof key2);
    key2[0] ^= 0x80;

    /* The payload layout: serial LSB first. */
    wm_payload_make(key, KAT_SERIAL, info);
    serial = 0;
    for (int i = 0; i < WM_SERIAL_BITS; i++) {
        serial |= (uint32_t)info[i] << i;
    }
    CHECK(serial == KAT_SERIAL);
    int infobad = 0;
    for (int i = 0; i < WM_INFO_BITS; i++) {
        infobad += info[i] > 1;
    }
    CHECK(infobad == 0);

    /* Clean round trips: many payloads, including the extremes. */
    int rt_bad = 0, tail_bad = 0;
    for (int t = 0; t < 200; t++) {
        uint32_t s = t == 0 ? 0u : t == 1 ? 0xffffffffu : (uint32_t)rng_u64(&r);
        wm_payload_make(key, s, info);
        wm_code_encode(info, coded);
        to_soft(coded, soft);
        memset(got, 0xee, sizeof got);
        wm_code_decode(soft, got);
        serial = ~s;
        if (memcmp(got, info, sizeof got) != 0 || !wm_payload_check(key, got, &serial) ||
            serial != s) {
            rt_bad++;
        }
        /* Zero termination: the last (K-1)*3 coded bits of an all-zero
         * tail depend only on the last info bits; a codeword of all-zero
         * info is all zero. */
        if (t == 0) {
            uint8_t z[WM_INFO_BITS] = {0};
            wm_code_encode(z, c2);
            for (int i = 0; i < WM_CODED_BITS; i++) {
                tail_bad += c2[i] != 0;
            }
        }
    }
    CHECK(rt_bad == 0);
    CHECK(tail_bad == 0);

    /* Linearity of the code: enc(a ^ b) = enc(a) ^ enc(b). */
    {
        uint8_t a[WM_INFO_BITS], bb[WM_INFO_BITS], ab[WM_INFO_BITS];
        uint8_t ca[WM_CODED_BITS], cb[WM_CODED_BITS], cab[WM_CODED_BITS];
        int lin_bad = 0;
        for (int t = 0; t < 50; t++) {
            for (int i = 0; i < WM_INFO_BITS; i++) {
                a[i] = (uint8_t)(rng_u64(&r) & 1u);
                bb[i] = (uint8_t)(rng_u64(&r) & 1u);
                ab[i] = a[i] ^ bb[i];
            }
            wm_code_encode(a, ca);
            wm_code_encode(bb, cb);
            wm_code_encode(ab, cab);
            for (int i = 0; i < WM_CODED_BITS; i++) {
                lin_bad += cab[i] != (ca[i] ^ cb[i]);
            }
        }
        CHECK(lin_bad == 0);
        /* Free distance of (133,171,165): a single 1 gives weight 15. */
        uint8_t one[WM_INFO_BITS] = {0};
        one[10] = 1;
        wm_code_encode(one, ca);
        int wt = 0;
        for (int i = 0; i < WM_CODED_BITS; i++) {
            wt += ca[i];
        }
        CHECK(wt == 15);
    }

    /* AWGN at Eb/N0 = 4 dB, counting the real rate 80/258. */
    {
        const double ebn0 = pow(10.0, 4.0 / 10.0);
        const double rate = (double)WM_INFO_BITS / WM_CODED_BITS;
        const double sigma = sqrt(1.0 / (2.0 * rate * ebn0));
        int ok = 0;
        for (int t = 0; t < 200; t++) {
            wm_payload_make(key, (uint32_t)rng_u64(&r), info);
            wm_code_encode(info, coded);
            for (int i = 0; i < WM_CODED_BITS; i++) {
                soft[i] = (float)((coded[i] ? -1.0 : 1.0) + sigma * rng_gauss(&r));
            }
            wm_code_decode(soft, got);
            ok += memcmp(got, info, sizeof got) == 0 && wm_payload_check(key, got, &serial);
        }
        printf("  AWGN Eb/N0 4 dB (sigma %.3f): %d/200 decoded\n", sigma, ok);
        CHECK(ok >= 190);
    }

    /* Hard decisions with flipped bits. dfree = 15, so up to 7 flips are
     * always corrected; beyond that, scattered flips are corrected most of
     * the time. */
    {
        int always_bad = 0;
        int ok_at[16] = {0};
        const int trials = 100;
        for (int nf = 1; nf <= 15; nf++) {
            for (int t = 0; t < trials; t++) {
                wm_payload_make(key, (uint32_t)rng_u64(&r), info);
                wm_code_encode(info, coded);
                to_soft(coded, soft);
                int pos[15];
                for (int k = 0; k < nf; k++) {
                    int p, dup;
                    do {
                        p = (int)(rng_u64(&r) % WM_CODED_BITS);
                        dup = 0;
                        for (int j = 0; j < k; j++) {
                            dup |= pos[j] == p;
                        }
                    } while (dup);
                    pos[k] = p;
                    soft[p] = -soft[p];
                }
                wm_code_decode(soft, got);
                int good = memcmp(got, info, sizeof got) == 0;
                ok_at[nf] += good;
                if (nf <= 7 && !good) {
                    always_bad++;
                }
            }
        }
        printf("  flips decoded/%d:", trials);
        for (int nf = 1; nf <= 15; nf++) {
            printf(" %d:%d", nf, ok_at[nf]);
        }
        printf("\n");
        CHECK(always_bad == 0);
        CHECK(ok_at[10] >= 90);
        CHECK(ok_at[15] >= 60);
    }

    /* The tag. */
    wm_payload_make(key, KAT_SERIAL, info);
    serial = 0;
    CHECK(wm_payload_check(key, info, &serial));
    CHECK(serial == KAT_SERIAL);
    serial = 99;
    CHECK(!wm_payload_check(key2, info, &serial));
    CHECK(serial == 99); /* untouched on rejection */
    int single_bad = 0;
    for (int i = 0; i < WM_INFO_BITS; i++) {
        info[i] ^= 1;
        single_bad += wm_payload_check(key, info, &serial);
        info[i] ^= 1;
    }
    CHECK(single_bad == 0);
    /* The first serial bit and the first tag bit, by name. */
    info[0] ^= 1;
    CHECK(!wm_payload_check(key, info, &serial));
    info[0] ^= 1;
    info[WM_SERIAL_BITS] ^= 1;
    CHECK(!wm_payload_check(key, info, &serial));
    info[WM_SERIAL_BITS] ^= 1;
    /* The same serial under another key has another tag. */
    wm_payload_make(key2, KAT_SERIAL, got);
    CHECK(memcmp(got, info, WM_SERIAL_BITS) == 0);
    CHECK(memcmp(got + WM_SERIAL_BITS, info + WM_SERIAL_BITS, WM_TAG_BITS) != 0);

    /* Random info vectors: a 48-bit tag passes by chance with 2^-48. */
    int accepted = 0;
    for (int t = 0; t < 100000; t++) {
        uint64_t a = rng_u64(&r), bits2 = rng_u64(&r);
        for (int i = 0; i < WM_INFO_BITS; i++) {
            info[i] = (uint8_t)(i < 64 ? (a >> i) & 1u : (bits2 >> (i - 64)) & 1u);
        }
        accepted += wm_payload_check(key, info, &serial);
    }
    CHECK(accepted == 0);
}

/* ---- tile and period ---------------------------------------------------------- */

static void test_period(void)
{
    int bad = 0;
    for (uint32_t m = 1; m <= 12000; m++) {
        for (int swap = 0; swap < 2; swap++) {
            uint32_t w = swap ? m + 37 : m, h = swap ? m : m + 1000;
            int p = wm_period_for(w, h);
            if (p < 120 || p > 1200 || (p & (p - 1)) == 0) {
                if (bad++ < 5) {
                    fprintf(stderr, "wm_period_for(%u, %u) = %d\n", w, h, p);
                }
            }
            /* Only the short side counts. */
            if (p != wm_period_for(m, m)) {
                if (bad++ < 5) {
                    fprintf(stderr, "wm_period_for(%u, %u) = %d != wm_period_for(%u, %u)\n", w,
                            h, p, m, m);
                }
            }
        }
        /* Grows with the image: a downscaled leak looks like a smaller
         * original (the +2 that skips a power of two may step back 2). */
        if (m > 1 && wm_period_for(m, m) < wm_period_for(m - 1, m - 1) - 2) {
            if (bad++ < 5) {
                fprintf(stderr, "wm_period_for shrinks at %u\n", m);
            }
        }
    }
    CHECK(bad == 0);
    CHECK(wm_period_for(1920, 1080) == wm_period_for(1080, 1920));
    CHECK(wm_period_for(1, 1) == WM_PERIOD_MIN);
    CHECK(wm_period_for(100000, 100000) == 1200);
    CHECK(wm_period_for(576, 576) != 128);
    CHECK(wm_period_for(1152, 4000) != 256);
    CHECK(wm_period_for(4608, 4608) != 1024);
}

static void test_tile(ct_ctx *ctx)
{
    const uint32_t w = 640, h = 480;
    const size_t n = (size_t)w * h;
    uint8_t skey[WM_KEYBYTES], vkey[WM_KEYBYTES];
    uint8_t info[WM_INFO_BITS], coded[WM_CODED_BITS];
    int8_t chips[WM_NCELLS];
    static wm_spread sp;
    wm_sync s;
    float *y = malloc(n * sizeof *y), *delta = malloc(n * sizeof *delta);
    float *up = malloc(n * sizeof *up), *down = malloc(n * sizeof *down);
    const uint32_t serial = 0xc0ffee11u;

    CHECK(y != NULL && delta != NULL && up != NULL && down != NULL);
    if (y == NULL || delta == NULL || up == NULL || down == NULL) {
        goto done;
    }
    for (int i = 0; i < WM_KEYBYTES; i++) {
        skey[i] = (uint8_t)(0x30 + i);
        vkey[i] = (uint8_t)(0x90 ^ i);
    }
    for (size_t i = 0; i < n; i++) {
        y[i] = 128.0f;
        up[i] = 127.0f;
        down[i] = 128.0f;
    }
    wm_sync_init(&s, skey);
    wm_spread_init(&sp, vkey);
    wm_payload_make(vkey, serial, info);
    wm_code_encode(info, coded);
    wm_chips(&sp, coded, chips);

    /* Chips: +-1 and the coded bit times pn. */
    int chip_bad = 0;
    for (int i = 0; i < WM_NCELLS; i++) {
        int want = coded[sp.bit_of_cell[i]] ? -sp.pn[i] : sp.pn[i];
        chip_bad += chips[i] != want;
    }
    CHECK(chip_bad == 0);

    /* Tile: unit RMS over a period (sampled finely), and at message cell
     * centres the message part is the chip itself. */
    double e2 = 0;
    int cell_bad = 0;
    for (int v = 0; v < 4 * WM_CELLS; v++) {
        for (int u = 0; u < 4 * WM_CELLS; u++) {
            /* mid-points of a fine grid: an even sampling of the bilinear
             * chips (on whole and half cells it would be biased) */
            double t = wm_tile_at(chips, &s, (u + 0.5) * 0.25, (v + 0.5) * 0.25);
            e2 += t * t;
        }
    }
    e2 /= 16.0 * WM_CELLS * WM_CELLS;
    printf("  tile RMS %.4f\n", sqrt(e2));
    CHECK(fabs(sqrt(e2) - 1.0) < 0.05);
    /* Message cell (i, j) is centred at tile units (i, j) * WM_CELLS / WM_MCELLS. */
    const int cu = WM_CELLS / WM_MCELLS;
    for (int j = 0; j < WM_MCELLS; j++) {
        for (int i = 0; i < WM_MCELLS; i++) {
            double t = wm_tile_at(chips, &s, i * cu, j * cu);
            double m = WM_ALPHA_MSG * chips[j * WM_MCELLS + i] +
                       WM_ALPHA_SYNC * wm_sync_at(&s, i * cu, j * cu);
            cell_bad += fabs(t - m) > 1e-4;
        }
    }
    CHECK(cell_bad == 0);

    /* The embedder renders exactly wm_tile_at: flat gray, fine output, so
     * the budget is one constant and the change is that constant times
     * the tile at u = x * 64 / P. */
    wm_plane pl = {w, h, y, up, down, NULL, true, 1, NULL, NULL};
    wm_embed_params prm = {.strength = 1.0, .serial = serial};
    CHECK_ST(wm_embed(ctx, &pl, skey, vkey, &prm, delta), CT_OK);
    int P = wm_period_for(w, h);
    double sxy = 0, sxx = 0, syy = 0, sx = 0, sy = 0;
    for (uint32_t yy = 0; yy < h; yy++) {
        for (uint32_t xx = 0; xx < w; xx++) {
            double t = wm_tile_at(chips, &s, xx * (double)WM_CELLS / P, yy * (double)WM_CELLS / P);
            double d = delta[(size_t)yy * w + xx];
            sxy += t * d;
            sxx += t * t;
            syy += d * d;
            sx += t;
            sy += d;
        }
    }
    double nn = (double)n;
    double corr = (sxy - sx * sy / nn) / sqrt((sxx - sx * sx / nn) * (syy - sy * sy / nn));
    double gain = sxy / sxx; /* the flat budget */
    double resid = 0;
    int periodic_bad = 0;
    for (uint32_t yy = 0; yy < h; yy++) {
        for (uint32_t xx = 0; xx < w; xx++) {
            double t = wm_tile_at(chips, &s, xx * (double)WM_CELLS / P, yy * (double)WM_CELLS / P);
            double d = delta[(size_t)yy * w + xx];
            resid = fmax(resid, fabs(d - gain * t));
            if (xx + (uint32_t)P < w && fabs(d - delta[(size_t)yy * w + xx + (uint32_t)P]) > 1e-5) {
                periodic_bad++;
            }
        }
    }
    printf("  embed vs wm_tile_at: P %d corr %.6f gain %.4f max residual %.2e\n", P, corr, gain,
           resid);
    CHECK(corr > 0.99999);
    CHECK(gain > 0.3 && gain <= 0.6 + 1e-4);
    CHECK(resid < 1e-3);
    CHECK(periodic_bad == 0);

    /* Deterministic: the same call gives the same change; another serial
     * another one. */
    float *d2 = malloc(n * sizeof *d2);
    CHECK(d2 != NULL);
    if (d2 != NULL) {
        CHECK_ST(wm_embed(ctx, &pl, skey, vkey, &prm, d2), CT_OK);
        CHECK(memcmp(d2, delta, n * sizeof *d2) == 0);
        prm.serial ^= 1;
        CHECK_ST(wm_embed(ctx, &pl, skey, vkey, &prm, d2), CT_OK);
        CHECK(memcmp(d2, delta, n * sizeof *d2) != 0);
        free(d2);
    }

    /* Room: no change goes past it; weight 0 gets none at all. */
    float *wt = malloc(n * sizeof *wt);
    CHECK(wt != NULL);
    if (wt != NULL) {
        for (size_t i = 0; i < n; i++) {
            up[i] = (i % 7 == 0) ? 0.0f : 0.2f;
            down[i] = (i % 5 == 0) ? 0.0f : 0.1f;
            wt[i] = (i / w) < h / 2 ? 1.0f : 0.0f;
        }
        pl.weight = wt;
        prm.serial = serial;
        CHECK_ST(wm_embed(ctx, &pl, skey, vkey, &prm, delta), CT_OK);
        int room_bad = 0, wt_bad = 0;
        for (size_t i = 0; i < n; i++) {
            room_bad += delta[i] > up[i] + 1e-6f || delta[i] < -down[i] - 1e-6f;
            wt_bad += wt[i] == 0.0f && delta[i] != 0.0f;
        }
        CHECK(room_bad == 0);
        CHECK(wt_bad == 0);
        free(wt);
        pl.weight = NULL;
    }

    /* White paper (no room up): the swing moves below the limit instead of
     * losing its upper half, so the change still follows the whole tile;
     * black ink (no room down) the same upwards. */
    for (int side = 0; side < 2; side++) {
        for (size_t i = 0; i < n; i++) {
            y[i] = side == 0 ? 255.0f : 0.0f;
            up[i] = side == 0 ? 0.0f : 255.0f;
            down[i] = side == 0 ? 255.0f : 0.0f;
        }
        prm.serial = serial;
        CHECK_ST(wm_embed(ctx, &pl, skey, vkey, &prm, delta), CT_OK);
        double c_sxy = 0, c_sxx = 0, c_syy = 0, c_sx = 0, c_sy = 0;
        int lim_bad = 0;
        for (uint32_t yy = 0; yy < h; yy++) {
            for (uint32_t xx = 0; xx < w; xx++) {
                double t = wm_tile_at(chips, &s, xx * (double)WM_CELLS / P, yy * (double)WM_CELLS / P);
                double d = delta[(size_t)yy * w + xx];
                lim_bad += side == 0 ? d > 0 : d < 0;
                c_sxy += t * d;
                c_sxx += t * t;
                c_syy += d * d;
                c_sx += t;
                c_sy += d;
            }
        }
        double c_corr = (c_sxy - c_sx * c_sy / nn) /
                        sqrt((c_sxx - c_sx * c_sx / nn) * (c_syy - c_sy * c_sy / nn));
        double c_gain = (c_sxy - c_sx * c_sy / nn) / (c_sxx - c_sx * c_sx / nn);
        printf("  %s: corr with the tile %.4f, gain %.4f (unclipped %.4f)\n",
               side == 0 ? "white paper" : "black ink", c_corr, c_gain, gain);
        CHECK(lim_bad == 0);
        CHECK(c_corr > 0.9);
        CHECK(c_gain > 0.8 * gain); /* a plain clip keeps about half */
    }

    /* The PSNR ceiling takes from texture, not from the fills: half flat,
     * half strong grain. The fill keeps its cap, the whole stays at the
     * ceiling. */
    {
        rng r = {99};
        for (size_t i = 0; i < n; i++) {
            bool grain = (i % w) >= w / 2;
            y[i] = grain ? (float)(128.0 + 40.0 * rng_gauss(&r)) : 128.0f;
            y[i] = y[i] < 20.0f ? 20.0f : (y[i] > 235.0f ? 235.0f : y[i]);
            up[i] = 255.0f - y[i];
            down[i] = y[i];
        }
        float *amp = malloc(n * sizeof *amp);
        CHECK(amp != NULL);
        if (amp != NULL) {
            CHECK_ST(wm_mask(ctx, &pl, 1.0, amp), CT_OK);
            CHECK_ST(wm_embed(ctx, &pl, skey, vkey, &prm, delta), CT_OK);
            double sq = 0, fsxy = 0, fsxx = 0;
            for (uint32_t yy = 0; yy < h; yy++) {
                for (uint32_t xx = 0; xx < w; xx++) {
                    size_t i = (size_t)yy * w + xx;
                    sq += (double)delta[i] * delta[i];
                    if (xx < w / 2 - 8) {
                        double t = wm_tile_at(chips, &s, xx * (double)WM_CELLS / P,
                                              yy * (double)WM_CELLS / P);
                        fsxy += t * delta[i];
                        fsxx += t * t;
                    }
                }
            }
            double wpsnr = 10.0 * log10(255.0 * 255.0 / (sq / nn));
            printf("  ceiling: PSNR %.2f dB, fill gain %.4f (cap %.2f)\n", wpsnr, fsxy / fsxx,
                   wm_flat_cap(true));
            CHECK(wpsnr > 42.4 && wpsnr < 42.6);
            CHECK(fabs(fsxy / fsxx - wm_flat_cap(true)) < 0.01);
            free(amp);
        }
    }
done:
    free(y);
    free(delta);
    free(up);
    free(down);
}

/* ---- mask ------------------------------------------------------------------------- */

/* Left half: a flat fill (level 200) with a one-pixel ink line of level
 * `ink` at x = 64; right half: paper grain, sigma 10 (the same grain for
 * every call). */
static void mask_image(float *y, uint32_t w, uint32_t h, uint32_t line_x, uint32_t half, float ink)
{
    rng r = {1234};
    for (uint32_t yy = 0; yy < h; yy++) {
        for (uint32_t xx = 0; xx < w; xx++) {
            float v = 200.0f;
            if (xx >= half) {
                v = (float)(150.0 + 10.0 * rng_gauss(&r));
            } else if (xx == line_x) {
                v = ink;
            }
            y[(size_t)yy * w + xx] = v;
        }
    }
}

static void test_mask(ct_ctx *ctx)
{
    const uint32_t w = 256, h = 128, line_x = 64, half = 128;
    const size_t n = (size_t)w * h;
    float *y = malloc(n * sizeof *y), *amp = malloc(n * sizeof *amp);
    float *amp2 = malloc(n * sizeof *amp2), *wt = malloc(n * sizeof *wt);

    CHECK(y != NULL && amp != NULL && amp2 != NULL && wt != NULL);
    if (y == NULL || amp == NULL || amp2 == NULL || wt == NULL) {
        goto done;
    }
    for (int fine = 0; fine <= 1; fine++) {
        const float cap = fine ? 0.6f : 0.45f;
        wm_plane pl = {w, h, y, NULL, NULL, NULL, fine, 1, NULL, NULL};
        mask_image(y, w, h, line_x, half, 30.0f);
        CHECK_ST(wm_mask(ctx, &pl, 1.0, amp), CT_OK);
        /* The same picture with a fainter line. */
        mask_image(y, w, h, line_x, half, 170.0f);
        CHECK_ST(wm_mask(ctx, &pl, 1.0, amp2), CT_OK);
        mask_image(y, w, h, line_x, half, 30.0f);

        float flat_max = 0, near_max = 0, line_min = 1e9f, noisy_min = 1e9f;
        double noisy_mean = 0;
        size_t nn = 0;
        int bleed = 0;
        /* Rows away from the top and bottom borders (clamped windows). */
        for (uint32_t yy = 8; yy + 8 < h; yy++) {
            for (uint32_t xx = 0; xx < w; xx++) {
                size_t i = (size_t)yy * w + xx;
                float a = amp[i];
                int d = abs((int)xx - (int)line_x);
                if (xx + 4 < half && d > 4) {
                    flat_max = fmaxf(flat_max, a);
                } else if (xx + 4 < half && d >= 2) {
                    near_max = fmaxf(near_max, a);
                    /* Beyond one pixel the line's contrast makes no
                     * difference: a line of 170 or of 30 on 200 leaves
                     * the fill the same budget. */
                    bleed += a != amp2[i];
                } else if (d <= 1) {
                    line_min = fminf(line_min, a);
                } else if (xx >= half + 4) {
                    noisy_min = fminf(noisy_min, a);
                    noisy_mean += a;
                    nn++;
                }
            }
        }
        noisy_mean /= (double)nn;
        printf("  mask fine=%d: flat max %.3f, 2..4 px from the line max %.3f, line min %.3f, "
               "noise min %.3f mean %.3f\n",
               fine, (double)flat_max, (double)near_max, (double)line_min, (double)noisy_min,
               noisy_mean);
        CHECK(flat_max > 0.0f);
        CHECK(flat_max <= cap + 1e-6f);
        CHECK(noisy_min > flat_max);
        CHECK(noisy_mean > 2.5 * flat_max);
        CHECK(line_min > flat_max);
        CHECK(line_min > 2.0f * near_max);
        CHECK(bleed == 0);

        /* strength scales the budget. */
        CHECK_ST(wm_mask(ctx, &pl, 0.5, amp2), CT_OK);
        int sc_bad = 0;
        for (size_t i = 0; i < n; i++) {
            sc_bad += fabsf(amp2[i] - 0.5f * amp[i]) > 1e-4f * (1 + amp[i]);
        }
        CHECK(sc_bad == 0);
    }
    /* Alpha: opaque everywhere is the same as no alpha; a transparent
     * pixel gets nothing. */
    for (size_t i = 0; i < n; i++) {
        wt[i] = (i % 3 == 0) ? 0.0f : 1.0f;
    }
    {
        wm_plane pl0 = {w, h, y, NULL, NULL, NULL, false, 1, NULL, NULL};
        wm_plane pl = pl0;
        for (size_t i = 0; i < n; i++) {
            wt[i] = 1.0f;
        }
        pl.weight = wt;
        CHECK_ST(wm_mask(ctx, &pl0, 1.0, amp2), CT_OK);
        CHECK_ST(wm_mask(ctx, &pl, 1.0, amp), CT_OK);
        int w_bad = 0;
        for (size_t i = 0; i < n; i++) {
            w_bad += amp[i] != amp2[i];
        }
        CHECK(w_bad == 0);
        for (size_t i = 0; i < n; i++) {
            wt[i] = (i % 3 == 0) ? 0.0f : 1.0f;
        }
        CHECK_ST(wm_mask(ctx, &pl, 1.0, amp), CT_OK);
        w_bad = 0;
        for (size_t i = 0; i < n; i++) {
            w_bad += wt[i] == 0.0f && amp[i] != 0.0f;
        }
        CHECK(w_bad == 0);
        /* Line art drawn as black ink with an anti-aliased alpha on a
         * transparent canvas: flat in raw luma, a line once seen. The line
         * gets a line's budget (and 1/alpha more where half covered); the
         * canvas nothing. */
        for (size_t i = 0; i < n; i++) {
            uint32_t xx = (uint32_t)(i % w);
            y[i] = 0.0f;
            wt[i] = xx == line_x ? 1.0f : (xx == line_x + 1 ? 0.5f : 0.0f);
        }
        CHECK_ST(wm_mask(ctx, &pl, 1.0, amp), CT_OK);
        float on_line = 1e9f, half_cov = 1e9f;
        for (uint32_t yy = 8; yy + 8 < h; yy++) {
            on_line = fminf(on_line, amp[(size_t)yy * w + line_x]);
            half_cov = fminf(half_cov, amp[(size_t)yy * w + line_x + 1]);
        }
        CHECK(on_line >= 3.9f);
        CHECK(half_cov >= 1.9f * on_line);
        mask_image(y, w, h, line_x, half, 30.0f);
    }
done:
    free(y);
    free(amp);
    free(amp2);
    free(wt);
}

/* ---- embedding quality on real samples ----------------------------------------------- */

typedef struct quality_case {
    const char *file;
    bool split;      /* realise fractional luma over RGB (lossless output) */
    double min_flat; /* share of pixels in flat fills the sample is known to have */
} quality_case;

static void test_quality(ct_ctx *ctx)
{
    static const quality_case cases[] = {
        /* paper grain everywhere: the PSNR ceiling is what binds */
        {"images/sketch_eagle_gray_1920x1080.png", false, 0.0},
        /* a cel on a transparent canvas, as a PNG (RGB split) and as
         * whole levels (JPEG output) */
        {"images/cel_kid_rgba_1920x1080.png", true, 0.01},
        {"images/cel_kid_rgba_1920x1080.png", false, 0.01},
        /* large flat colour fills in whole levels: the dither case */
        {"images/bg_backdrop_1920x1080.png", false, 0.3},
    };
    uint8_t skey[WM_KEYBYTES], vkey[WM_KEYBYTES];
    for (int i = 0; i < WM_KEYBYTES; i++) {
        skey[i] = (uint8_t)(7 * i + 1);
        vkey[i] = (uint8_t)(13 * i + 5);
    }
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        med_image *img = NULL;
        float *y = NULL, *up = NULL, *down = NULL, *wt = NULL, *delta = NULL, *y2 = NULL;
        float *rmax = NULL, *rmin = NULL;
        CHECK_ST(med_read_file(ctx, tu_sample(cases[c].file), &img), CT_OK);
        if (img == NULL) {
            fprintf(stderr, "%s: %s\n", cases[c].file, ct_errmsg(ctx));
            continue;
        }
        uint32_t w = med_width(img), h = med_height(img);
        size_t n = (size_t)w * h;
        y = malloc(n * sizeof *y);
        up = malloc(n * sizeof *up);
        down = malloc(n * sizeof *down);
        wt = malloc(n * sizeof *wt);
        delta = malloc(n * sizeof *delta);
        y2 = malloc(n * sizeof *y2);
        rmax = malloc(n * sizeof *rmax);
        rmin = malloc(n * sizeof *rmin);
        if (y == NULL || up == NULL || down == NULL || wt == NULL || delta == NULL || y2 == NULL ||
            rmax == NULL || rmin == NULL) {
            CHECK(!"out of memory");
            goto next;
        }
        CHECK_ST(med_luma(ctx, img, y, up, down, wt), CT_OK);
        bool fine = med_depth(img) == 16 || cases[c].split;
        wm_plane pl = {w, h, y, up, down, wt, fine, 1, NULL, NULL};
        wm_embed_params prm = {.strength = 1.0, .serial = 0xa5a5a5a5u};
        CHECK_ST(wm_embed(ctx, &pl, skey, vkey, &prm, delta), CT_OK);
        {
            /* The same change and the same pixels on 4 threads as on 1. */
            wm_plane pl4 = pl;
            pl4.threads = 4;
            float *d4 = malloc(n * sizeof *d4);
            med_image *img4 = NULL;
            CHECK_ST(med_image_clone(ctx, img, &img4), CT_OK);
            CHECK(d4 != NULL);
            if (d4 != NULL && img4 != NULL) {
                CHECK_ST(wm_embed(ctx, &pl4, skey, vkey, &prm, d4), CT_OK);
                CHECK(memcmp(d4, delta, n * sizeof *d4) == 0);
                CHECK_ST(med_realize_luma(ctx, img4, d4, cases[c].split, 4), CT_OK);
            }
            CHECK_ST(med_realize_luma(ctx, img, delta, cases[c].split, 1), CT_OK);
            if (d4 != NULL && img4 != NULL) {
                CHECK(memcmp(d4, delta, n * sizeof *d4) == 0);
                CHECK(memcmp(med_pixels(img4), med_pixels(img),
                             n * med_channels(img) * (med_depth(img) / 8)) == 0);
            }
            free(d4);
            med_image_free(img4);
        }
        CHECK_ST(med_luma(ctx, img, y2, NULL, NULL, NULL), CT_OK);
        for (size_t i = 0; i < n; i++) {
            y2[i] -= y[i]; /* the change actually written */
        }
        double psnr = 0, ssim = 0;
        wm_quality(&pl, y2, &psnr, &ssim);
        /* Fills are judged on what is seen: a cel laid over mid-grey (the
         * backdrop of the mask), where a pixel of alpha a shows a times its
         * change. An ink outline drawn in the canvas colour with an
         * anti-aliased alpha is flat in raw luma but is a line once seen. */
        for (size_t i = 0; i < n; i++) {
            y[i] = wt[i] * y[i] + (1.0f - wt[i]) * 128.0f;
            y2[i] *= wt[i];
        }

        /* 9x9 range of the original, brute force along rows then columns. */
        for (uint32_t yy = 0; yy < h; yy++) {
            for (uint32_t xx = 0; xx < w; xx++) {
                float mx = -1e9f, mn = 1e9f;
                for (int d = -4; d <= 4; d++) {
                    long x2 = (long)xx + d;
                    if (x2 < 0 || x2 >= (long)w) {
                        continue;
                    }
                    float v = y[(size_t)yy * w + (size_t)x2];
                    mx = fmaxf(mx, v);
                    mn = fminf(mn, v);
                }
                rmax[(size_t)yy * w + xx] = mx;
                rmin[(size_t)yy * w + xx] = mn;
            }
        }
        double flat_e2 = 0, flat_max = 0;
        size_t nflat = 0;
        for (uint32_t xx = 0; xx < w; xx++) {
            for (uint32_t yy = 0; yy < h; yy++) {
                float mx = -1e9f, mn = 1e9f;
                for (int d = -4; d <= 4; d++) {
                    long y3 = (long)yy + d;
                    if (y3 < 0 || y3 >= (long)h) {
                        continue;
                    }
                    mx = fmaxf(mx, rmax[(size_t)y3 * w + xx]);
                    mn = fminf(mn, rmin[(size_t)y3 * w + xx]);
                }
                size_t i = (size_t)yy * w + xx;
                if (mx - mn <= 1.0f && wt[i] > 0.0f) {
                    flat_e2 += (double)y2[i] * y2[i];
                    flat_max = fmax(flat_max, fabs(y2[i]));
                    nflat++;
                }
            }
        }
        double flat_rms = nflat > 0 ? sqrt(flat_e2 / (double)nflat) : 0;
        printf("  %s%s: PSNR %.2f dB, SSIM %.4f; flat fills %.1f%% of pixels, RMS %.3f, max "
               "%.2f\n",
               cases[c].file, cases[c].split ? " (split RGB)" : "", psnr, ssim,
               100.0 * (double)nflat / (double)n, flat_rms, flat_max);
        CHECK(psnr >= 40.0);
        CHECK(ssim >= 0.98);
        CHECK((double)nflat >= cases[c].min_flat * (double)n);
        CHECK(flat_max <= 2.0 + 1e-3); /* luma of +2 on R, G, B is 2 within float error */
        CHECK(flat_rms <= 0.7);
    next:
        med_image_free(img);
        free(y);
        free(up);
        free(down);
        free(wt);
        free(delta);
        free(y2);
        free(rmax);
        free(rmin);
    }
}

/* wm_quality against the definition, in double, pixel by pixel: PSNR of
 * the seen change over the seen pixels, mean SSIM over the 8x8 windows
 * (stride 8) with a pixel seen, of a = al y + (1 - al) 128 against a + al
 * delta. Odd sizes (columns and rows outside every window count for the
 * PSNR only), with and without alpha, flat windows (variance 0), and a
 * thread count that splits bands. */
static void quality_reference(const wm_plane *pl, const float *delta, double *psnr, double *ssim)
{
    const uint32_t w = pl->w, h = pl->h;
    double se = 0, n = 0, acc = 0, nw = 0;
    for (size_t i = 0; i < (size_t)w * h; i++) {
        double al = pl->weight != NULL ? pl->weight[i] : 1.0;
        if (al > 0) {
            se += (al * delta[i]) * (al * delta[i]);
            n++;
        }
    }
    for (uint32_t by = 0; by + 8 <= h; by += 8) {
        for (uint32_t bx = 0; bx + 8 <= w; bx += 8) {
            double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0, vis = 0;
            for (uint32_t yy = by; yy < by + 8; yy++) {
                for (uint32_t xx = bx; xx < bx + 8; xx++) {
                    size_t i = (size_t)yy * w + xx;
                    double al = pl->weight != NULL ? pl->weight[i] : 1.0;
                    double a = al * pl->y[i] + (1 - al) * 128.0, b = a + al * delta[i];
                    sx += a;
                    sy += b;
                    sxx += a * a;
                    syy += b * b;
                    sxy += a * b;
                    vis += al > 0 ? 1 : 0;
                }
            }
            if (vis == 0) {
                continue;
            }
            double mx = sx / 64, my = sy / 64;
            double vx = sxx / 64 - mx * mx, vy = syy / 64 - my * my, cxy = sxy / 64 - mx * my;
            acc += ((2 * mx * my + 6.5025) * (2 * cxy + 58.5225)) /
                   ((mx * mx + my * my + 6.5025) * (vx + vy + 58.5225));
            nw++;
        }
    }
    *psnr = se == 0 || n == 0 ? 99.0 : 10.0 * log10(65025.0 / (se / n));
    *ssim = nw == 0 ? 1.0 : acc / nw;
}

static void test_quality_reference(void)
{
    static const uint32_t dims[][2] = {{1, 1}, {7, 9}, {64, 64}, {203, 77}, {640, 481}};
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++) {
        const uint32_t w = dims[k][0], h = dims[k][1];
        const size_t n = (size_t)w * h;
        float *y = malloc(n * sizeof *y), *d = malloc(n * sizeof *d), *wt = malloc(n * sizeof *wt);
        CHECK(y != NULL && d != NULL && wt != NULL);
        if (y == NULL || d == NULL || wt == NULL) {
            free(y);
            free(d);
            free(wt);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            s = s * 6364136223846793005u + 1442695040888963407u;
            uint32_t r = (uint32_t)(s >> 33);
            /* the left half flat (a fill), the right half random; the
             * change up to +-6 levels, in quarters; alpha 0, partial, 1 */
            y[i] = (i % w) < w / 2 ? 200.0f : (float)(r % 256);
            d[i] = (float)((int)((r >> 8) % 49) - 24) * 0.25f;
            wt[i] = (float)((r >> 16) % 5) / 4.0f;
        }
        for (int alpha = 0; alpha < 2; alpha++) {
            wm_plane pl = {w, h, y, NULL, NULL, alpha ? wt : NULL, false, 3, NULL, NULL};
            double p = 0, q = 0, pr = 0, qr = 0;
            wm_quality(&pl, d, &p, &q);
            quality_reference(&pl, d, &pr, &qr);
            CHECK(fabs(p - pr) < 1e-4);
            CHECK(fabs(q - qr) < 1e-6);
        }
        /* no change at all: 99 dB and an SSIM of 1 */
        memset(d, 0, n * sizeof *d);
        wm_plane pl = {w, h, y, NULL, NULL, wt, false, 2, NULL, NULL};
        double p = 0, q = 0;
        wm_quality(&pl, d, &p, &q);
        CHECK(p == 99.0);
        CHECK(fabs(q - 1.0) < 1e-12);
        free(y);
        free(d);
        free(wt);
    }
}

/* ---- allocation failure ----------------------------------------------------------------- */

static void test_faults(ct_ctx *ctx)
{
    const uint32_t w = 200, h = 150;
    const size_t n = (size_t)w * h;
    float *y = malloc(n * sizeof *y), *delta = malloc(n * sizeof *delta);
    float *ref = malloc(n * sizeof *ref);
    uint8_t skey[WM_KEYBYTES], vkey[WM_KEYBYTES];
    rng r = {99};
    int bad = 0, saw_nomem = 0, reached_ok = 0;

    CHECK(y != NULL && delta != NULL && ref != NULL);
    if (y == NULL || delta == NULL || ref == NULL) {
        goto done;
    }
    key_seq(skey);
    key_seq(vkey);
    vkey[3] ^= 0x40;
    for (size_t i = 0; i < n; i++) {
        y[i] = (float)(100.0 + 6.0 * rng_gauss(&r));
    }
    wm_plane pl = {w, h, y, NULL, NULL, NULL, false, 1, NULL, NULL};
    wm_embed_params prm = {.strength = 1.0, .serial = 77};
    CHECK_ST(wm_embed(ctx, &pl, skey, vkey, &prm, ref), CT_OK);
    CHECK_ST(wm_mask(ctx, &pl, 1.0, delta), CT_OK);
    for (long k = 1; k <= 30; k++) {
        ctx->fail_alloc_after = k;
        ct_status st = wm_embed(ctx, &pl, skey, vkey, &prm, delta);
        bool injected = ctx->fail_alloc_after == 0;
        ctx->fail_alloc_after = 0;
        if (st == CT_ERR_NOMEM) {
            saw_nomem = 1;
            if (!injected) {
                bad++;
            }
        } else if (st == CT_OK) {
            if (injected) {
                bad++; /* a failed allocation was swallowed */
                fprintf(stderr, "wm_embed: allocation %ld failed, status OK\n", k);
            } else {
                reached_ok = 1;
                if (memcmp(delta, ref, n * sizeof *ref) != 0) {
                    bad++;
                }
            }
        } else {
            bad++;
            fprintf(stderr, "wm_embed with allocation %ld failing: %d (%s)\n", k, (int)st,
                    ct_errmsg(ctx));
        }
    }
    CHECK(bad == 0);
    CHECK(saw_nomem);
    CHECK(reached_ok);

    bad = saw_nomem = reached_ok = 0;
    for (long k = 1; k <= 30; k++) {
        ctx->fail_alloc_after = k;
        ct_status st = wm_mask(ctx, &pl, 1.0, delta);
        bool injected = ctx->fail_alloc_after == 0;
        ctx->fail_alloc_after = 0;
        if (st == CT_ERR_NOMEM) {
            saw_nomem = 1;
            bad += !injected;
        } else if (st == CT_OK) {
            bad += injected;
            reached_ok = 1;
        } else {
            bad++;
        }
    }
    CHECK(bad == 0);
    CHECK(saw_nomem);
    CHECK(reached_ok);
done:
    free(y);
    free(delta);
    free(ref);
}


/* List Viterbi: its first entry is the plain decoder's answer, entries are
 * distinct and best first, and near the threshold the true word is often in the list when
 * the most likely one is wrong (what verify relies on). */
static void test_code_list(void)
{
    rng r = {777};
    uint8_t info[WM_INFO_BITS], coded[WM_CODED_BITS], ml[WM_INFO_BITS];
    uint8_t list[8][WM_INFO_BITS];
    float soft[WM_CODED_BITS];
    int ml_wrong = 0, rescued = 0;
    for (int trial = 0; trial < 120; trial++) {
        for (int i = 0; i < WM_INFO_BITS; i++) {
            info[i] = (uint8_t)(rng_u64(&r) & 1);
        }
        wm_code_encode(info, coded);
        for (int i = 0; i < WM_CODED_BITS; i++) {
            /* Es/N0 around -1.5 dB per coded bit: at the edge of decoding */
            soft[i] = (float)((coded[i] ? -1.0 : 1.0) + 1.19 * rng_gauss(&r));
        }
        wm_code_decode(soft, ml);
        int n = wm_code_decode_list(soft, 8, list);
        CHECK(n >= 1 && n <= 8);
        CHECK(memcmp(list[0], ml, sizeof ml) == 0);
        double prev = INFINITY;
        for (int a = 0; a < n; a++) {
            for (int b = a + 1; b < n; b++) {
                CHECK(memcmp(list[a], list[b], WM_INFO_BITS) != 0);
            }
            /* Best first: each word correlates with the soft values at
             * least as well as the next (float sums: a small tolerance). */
            uint8_t c[WM_CODED_BITS];
            double corr = 0;
            wm_code_encode(list[a], c);
            for (int i = 0; i < WM_CODED_BITS; i++) {
                corr += c[i] ? -soft[i] : soft[i];
            }
            CHECK(corr <= prev + 1e-3);
            prev = corr;
        }
        if (memcmp(ml, info, sizeof info) != 0) {
            ml_wrong++;
            for (int a = 1; a < n; a++) {
                if (memcmp(list[a], info, sizeof info) == 0) {
                    rescued++;
                }
            }
        }
    }
    printf("list Viterbi: ML wrong in %d of 120, true word further down the list in %d\n",
           ml_wrong, rescued);
    CHECK(ml_wrong > 0);
    CHECK(rescued > 0);
}

int main(int argc, char **argv)
{
    ct_ctx *ctx = NULL;
    char home[4200];

    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 2;
    }
    if (argc > 1 && strcmp(argv[1], "--write-kat") == 0) {
        return write_kat();
    }
    snprintf(home, sizeof home, "%s/home", tu_tmpdir("watermark"));
    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    if (ctx == NULL) {
        return tu_done("test_watermark");
    }
    double t0 = now_s(), t;
    t = now_s();
    test_keyed();
    printf("keyed: %.2f s\n", now_s() - t);
    t = now_s();
    test_kat();
    printf("kat: %.2f s\n", now_s() - t);
    t = now_s();
    test_code();
    test_code_list();
    printf("code: %.2f s\n", now_s() - t);
    t = now_s();
    test_period();
    test_tile(ctx);
    printf("tile: %.2f s\n", now_s() - t);
    t = now_s();
    test_mask(ctx);
    printf("mask: %.2f s\n", now_s() - t);
    t = now_s();
    test_quality_reference();
    test_quality(ctx);
    printf("quality: %.2f s\n", now_s() - t);
    t = now_s();
    test_faults(ctx);
    printf("faults: %.2f s\n", now_s() - t);
    ct_ctx_free(ctx);
    printf("test_watermark: %.2f s\n", now_s() - t0);
    return tu_done("test_watermark");
}

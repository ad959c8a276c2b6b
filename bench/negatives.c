/* bench/negatives: false-accusation trials for the blind detector.
 *
 * Runs vfy_detect, with the keys of N vendors of "our" studio, on images
 * that carry none of those marks, and counts identifications (each one is a
 * false accusation). Kinds of trial, cycled:
 *   crop     a random crop (64..768 px a side) of an unmarked sample, then a
 *            random downscale (25..100 %), gamma and noise
 *   foreign  the same, from a copy marked with ANOTHER studio's keys
 *   noise    Gaussian noise of random strength around a random level
 *   flat     a flat image with rounding noise only
 *   gradient a smooth ramp, optionally with periodic stripes
 *   sibling  the same as crop, from a copy marked by OUR vendor 1 with one
 *            of its issued serials, verified with the keys of the other
 *            vendors only (a mark of vendor A tested against every other
 *            vendor: same studio, same sync, so the geometry is found and
 *            every issued-serial test runs on chips full of A's mark)
 * Every vendor key comes with N_ISSUED random serials (default 500), the
 * ledger's issued serials the verifier also tests directly.
 * Writes one CSV line per trial to stdout:
 *   trial,kind,width,height,identified,trials,sync_z,tag_agree_top,
 *   tag_agree_max,tag_checks,issued_tests,issued_z
 * and a summary to stderr. identified, trials (tag checks) and sync_z (the
 * strongest sync correlation of the decoded candidates, in standard
 * deviations) come from vfy_detect, the verifier itself.
 *
 * The tag_* columns are the null of the DECISION, which vfy_detect does not
 * expose (its decoded words stay inside verify/detect.c): a bench-side
 * decode of the same trial image, with watermark/'s own spreading, list
 * Viterbi and payload code. The image is whitened (vfy_whiten, the
 * verifier's windows) and folded onto one tile at the embedder's nominal
 * period for its size (no geometry search: under no mark any geometry gives
 * a word that owes nothing to the vendor key's tag). Each vendor key
 * despreads the chips and list-decodes WM_DECODE_LIST words; for each word
 * the 48 tag bits are compared with the tag the key gives its serial
 * (wm_payload_make). tag_agree_top: matching bits of the most likely word
 * under the first vendor key, Binomial(48, 1/2) under no mark;
 * tag_agree_max: the most matching bits over all tag_checks words and keys.
 * A vendor is named only at 48 of 48.
 *
 * issued_tests and issued_z (the best issued-serial correlation, in
 * sigmas; each test is sub-Gaussian under no mark, P(z >= t) <= exp(-t^2/2))
 * come from vfy_detect.
 *
 * Usage: negatives SAMPLES_DIR N_TRIALS [SEED] [N_VENDORS] [N_ISSUED]
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "media/media.h"
#include "verify/vfy.h"
#include "watermark/wm.h"

typedef struct img {
    uint32_t w, h;
    float *y;
} img;

static uint64_t rng_state;

static double urand(void)
{
    /* xorshift64*: reproducible from the seed. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static double nrand(void)
{
    double u = urand() + 1e-12, v = urand();
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static int load_dir(ct_ctx *ctx, const char *dir, img *out, int max)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (d == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL && n < max) {
        char path[4096];
        med_image *m = NULL;
        if (e->d_name[0] == '.') {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (med_read_file(ctx, path, &m) != CT_OK) {
            continue;
        }
        out[n].w = med_width(m);
        out[n].h = med_height(m);
        out[n].y = malloc(sizeof(float) * out[n].w * out[n].h);
        float *wt = malloc(sizeof(float) * out[n].w * out[n].h);
        if (out[n].y != NULL && wt != NULL && med_luma(ctx, m, out[n].y, NULL, NULL, wt) == CT_OK) {
            /* Transparent pixels as if flattened on white. */
            for (size_t i = 0; i < (size_t)out[n].w * out[n].h; i++) {
                out[n].y[i] = wt[i] * out[n].y[i] + (1 - wt[i]) * 255.0f;
            }
            n++;
        }
        free(wt);
        med_image_free(m);
    }
    closedir(d);
    return n;
}

/* Random crop, box downscale, gamma and noise, rounded to whole levels. */
static img attacked_crop(const img *src)
{
    img o;
    uint32_t cw = 64 + (uint32_t)(urand() * 704), ch = 64 + (uint32_t)(urand() * 704);
    if (cw > src->w) {
        cw = src->w;
    }
    if (ch > src->h) {
        ch = src->h;
    }
    uint32_t x0 = (uint32_t)(urand() * (src->w - cw + 1)), y0 = (uint32_t)(urand() * (src->h - ch + 1));
    double sc = 0.25 + 0.75 * urand();
    o.w = (uint32_t)fmax(32, cw * sc);
    o.h = (uint32_t)fmax(32, ch * sc);
    o.y = malloc(sizeof(float) * o.w * o.h);
    double gam = 0.7 + 0.7 * urand(), sig = urand() < 0.5 ? 0 : 5 * urand();
    for (uint32_t y = 0; y < o.h; y++) {
        for (uint32_t x = 0; x < o.w; x++) {
            /* Average the source pixels that map to this one. */
            uint32_t sx0 = x0 + (uint32_t)(x * (double)cw / o.w), sx1 = x0 + (uint32_t)((x + 1) * (double)cw / o.w);
            uint32_t sy0 = y0 + (uint32_t)(y * (double)ch / o.h), sy1 = y0 + (uint32_t)((y + 1) * (double)ch / o.h);
            if (sx1 <= sx0) {
                sx1 = sx0 + 1;
            }
            if (sy1 <= sy0) {
                sy1 = sy0 + 1;
            }
            double acc = 0;
            int n = 0;
            for (uint32_t yy = sy0; yy < sy1 && yy < src->h; yy++) {
                for (uint32_t xx = sx0; xx < sx1 && xx < src->w; xx++) {
                    acc += src->y[(size_t)yy * src->w + xx];
                    n++;
                }
            }
            double v = n > 0 ? acc / n : 128;
            v = 255.0 * pow(fmax(v, 0) / 255.0, gam) + sig * nrand();
            o.y[(size_t)y * o.w + x] = (float)fmin(255, fmax(0, rint(v)));
        }
    }
    return o;
}

/* The list length of the bench-side decode: detect.c's DECODE_LIST. */
#define WM_DECODE_LIST 8
/* Whitening windows: detect.c's MEAN_R and VAR_R when this was written
 * (private there). Any window serves the null of the tag check. */
#define WHITEN_MEAN_R 11
#define WHITEN_VAR_R  3

typedef struct tag_stats {
    int top, max, checks;
} tag_stats;

/* Bench-side decode of one trial image under every vendor key: see the
 * header comment. */
static int tag_agreement(ct_ctx *ctx, const img *im, const vfy_key *keys, int nv, tag_stats *ts)
{
    size_t n = (size_t)im->w * im->h;
    float *white = malloc(sizeof(float) * n);
    double acc[WM_NCELLS] = {0};
    int cnt[WM_NCELLS] = {0};
    float chips[WM_NCELLS], soft[WM_CODED_BITS];
    uint8_t info[WM_DECODE_LIST][WM_INFO_BITS], expect[WM_INFO_BITS];
    wm_spread sp;
    ts->top = -1;
    ts->max = -1;
    ts->checks = 0;
    if (white == NULL) {
        return -1;
    }
    if (vfy_whiten(ctx, im->y, NULL, im->w, im->h, WHITEN_MEAN_R, WHITEN_VAR_R, white) != CT_OK) {
        free(white);
        return -1;
    }
    /* Fold at the nominal period, offset 0, onto the message cells. */
    double period = wm_period_for(im->w, im->h);
    for (uint32_t y = 0; y < im->h; y++) {
        int j = (int)(fmod(y, period) / period * WM_MCELLS);
        for (uint32_t x = 0; x < im->w; x++) {
            float e = white[(size_t)y * im->w + x];
            if (isnan(e)) {
                continue;
            }
            int i = (int)(fmod(x, period) / period * WM_MCELLS);
            acc[j * WM_MCELLS + i] += e;
            cnt[j * WM_MCELLS + i]++;
        }
    }
    free(white);
    double mean = 0;
    for (int c = 0; c < WM_NCELLS; c++) {
        chips[c] = cnt[c] > 0 ? (float)(acc[c] / cnt[c]) : 0.0f;
        mean += chips[c];
    }
    mean /= WM_NCELLS;
    for (int c = 0; c < WM_NCELLS; c++) {
        chips[c] -= (float)mean;
    }
    for (int v = 0; v < nv; v++) {
        wm_spread_init(&sp, keys[v].key);
        memset(soft, 0, sizeof soft);
        for (int c = 0; c < WM_NCELLS; c++) {
            soft[sp.bit_of_cell[c]] += chips[c] * sp.pn[c];
        }
        int nl = wm_code_decode_list(soft, WM_DECODE_LIST, info);
        if (nl < 0) {
            wm_code_decode(soft, info[0]);
            nl = 1;
        }
        for (int l = 0; l < nl; l++) {
            uint32_t serial = 0;
            for (int b = 0; b < WM_SERIAL_BITS; b++) {
                serial |= (uint32_t)(info[l][b] & 1u) << b;
            }
            wm_payload_make(keys[v].key, serial, expect);
            int agree = 0;
            for (int b = WM_SERIAL_BITS; b < WM_INFO_BITS; b++) {
                agree += (info[l][b] & 1u) == expect[b];
            }
            if (v == 0 && l == 0) {
                ts->top = agree;
            }
            if (agree > ts->max) {
                ts->max = agree;
            }
            ts->checks++;
        }
    }
    return 0;
}

static img synthetic(int kind)
{
    img o;
    o.w = 96 + (uint32_t)(urand() * 640);
    o.h = 96 + (uint32_t)(urand() * 640);
    o.y = malloc(sizeof(float) * o.w * o.h);
    double level = 20 + 215 * urand(), sig = 0.5 + 20 * urand();
    double gx = (urand() - 0.5) * 0.5, gy = (urand() - 0.5) * 0.5;
    double period = 4 + 200 * urand(), amp = urand() < 0.5 ? 0 : 10 * urand();
    for (uint32_t y = 0; y < o.h; y++) {
        for (uint32_t x = 0; x < o.w; x++) {
            double v;
            if (kind == 0) {
                v = level + sig * nrand();
            } else if (kind == 1) {
                v = level + 0.3 * nrand();
            } else {
                v = level + gx * x + gy * y + amp * sin(2 * M_PI * x / period) + 0.5 * nrand();
            }
            o.y[(size_t)y * o.w + x] = (float)fmin(255, fmax(0, rint(v)));
        }
    }
    return o;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: negatives SAMPLES_DIR N_TRIALS [SEED] [N_VENDORS] [N_ISSUED]\n");
        return 2;
    }
    long ntrials = atol(argv[2]);
    rng_state = argc > 3 ? strtoull(argv[3], NULL, 10) * 2654435761ull + 1 : 88172645463325252ull;
    int nv = argc > 4 ? atoi(argv[4]) : 10;
    int nissued = argc > 5 ? atoi(argv[5]) : 500;
    if (nv < 2 || nissued < 1) {
        fprintf(stderr, "negatives: at least 2 vendors and 1 issued serial each\n");
        return 2;
    }
    ct_ctx *ctx = NULL;
    if (ct_ctx_new("/nonexistent-negatives-home", &ctx) != CT_OK) {
        return 2;
    }
    img base[64], foreign[64], sibling[64];
    int nb = load_dir(ctx, argv[1], base, 64);
    if (nb == 0) {
        fprintf(stderr, "negatives: no images in %s\n", argv[1]);
        return 2;
    }
    /* Our studio: a sync key and nv vendor keys. Another studio: its own. */
    uint8_t sync[WM_KEYBYTES], osync[WM_KEYBYTES], okey[WM_KEYBYTES];
    vfy_key *keys = calloc((size_t)nv, sizeof *keys);
    uint32_t *issued = calloc((size_t)nv * (size_t)nissued, sizeof *issued);
    if (keys == NULL || issued == NULL) {
        return 2;
    }
    randombytes_buf(sync, sizeof sync);
    randombytes_buf(osync, sizeof osync);
    randombytes_buf(okey, sizeof okey);
    for (int v = 0; v < nv; v++) {
        keys[v].vendor_id = (uint32_t)v + 1;
        keys[v].epoch = 1;
        randombytes_buf(keys[v].key, sizeof keys[v].key);
        for (int s = 0; s < nissued; s++) {
            issued[(size_t)v * nissued + s] = randombytes_random() | 1u;
        }
        keys[v].issued = issued + (size_t)v * nissued;
        keys[v].nissued = (size_t)nissued;
    }
    for (int i = 0; i < nb; i++) {
        size_t n = (size_t)base[i].w * base[i].h;
        float *d = malloc(sizeof(float) * n);
        foreign[i] = base[i];
        foreign[i].y = malloc(sizeof(float) * n);
        sibling[i] = base[i];
        sibling[i].y = malloc(sizeof(float) * n);
        wm_plane pl = {base[i].w, base[i].h, base[i].y, NULL, NULL, NULL, true, 1, NULL, NULL};
        wm_embed_params prm = {.strength = 1.0, .serial = 12345};
        if (d == NULL || foreign[i].y == NULL || sibling[i].y == NULL ||
            wm_embed(ctx, &pl, osync, okey, &prm, d) != CT_OK) {
            return 2;
        }
        for (size_t k = 0; k < n; k++) {
            foreign[i].y[k] = fminf(255, fmaxf(0, rintf(base[i].y[k] + d[k])));
        }
        /* our vendor 1, one of its issued serials */
        prm.serial = keys[0].issued[i % nissued];
        if (wm_embed(ctx, &pl, sync, keys[0].key, &prm, d) != CT_OK) {
            return 2;
        }
        for (size_t k = 0; k < n; k++) {
            sibling[i].y[k] = fminf(255, fmaxf(0, rintf(base[i].y[k] + d[k])));
        }
        free(d);
    }
    static const char *KIND[] = {"crop", "foreign", "noise", "flat", "gradient", "sibling"};
    long hits = 0;
    uint64_t total_trials = 0;
    long agree48 = 0;
    uint64_t bench_checks = 0;
    double zmax = 0;
    printf("trial,kind,width,height,identified,trials,sync_z,tag_agree_top,tag_agree_max,"
           "tag_checks,issued_tests,issued_z\n");
    for (long t = 0; t < ntrials; t++) {
        int kind = (int)(t % 6);
        int pick = (int)(urand() * nb);
        img im = kind == 0   ? attacked_crop(&base[pick])
                 : kind == 1 ? attacked_crop(&foreign[pick])
                 : kind == 5 ? attacked_crop(&sibling[pick])
                             : synthetic(kind - 2);
        vfy_input in = {im.w, im.h, im.y, NULL};
        vfy_result r;
        /* siblings: vendor 1 marked it, so only the others are asked */
        const vfy_key *ask = kind == 5 ? keys + 1 : keys;
        size_t nask = kind == 5 ? (size_t)nv - 1 : (size_t)nv;
        if (vfy_detect(ctx, &in, sync, ask, nask, &r) != CT_OK) {
            fprintf(stderr, "negatives: %s\n", ct_errmsg(ctx));
            return 2;
        }
        tag_stats ts;
        if (tag_agreement(ctx, &im, ask, (int)nask, &ts) != 0) {
            fprintf(stderr, "negatives: bench-side decode failed: %s\n", ct_errmsg(ctx));
            return 2;
        }
        hits += r.nhits > 0;
        total_trials += r.trials;
        agree48 += ts.max == WM_TAG_BITS;
        bench_checks += (uint64_t)ts.checks;
        if (r.issued_z > zmax) {
            zmax = r.issued_z;
        }
        printf("%ld,%s,%u,%u,%d,%llu,%.3f,%d,%d,%d,%llu,%.3f\n", t, KIND[kind], im.w, im.h,
               r.nhits > 0, (unsigned long long)r.trials, r.sync_z, ts.top, ts.max, ts.checks,
               (unsigned long long)r.issued_tests, r.issued_z);
        free(im.y);
        if ((t + 1) % 500 == 0) {
            fprintf(stderr, "negatives: %ld/%ld trials, %ld identified\n", t + 1, ntrials, hits);
        }
    }
    fprintf(stderr, "negatives: %ld images, %llu key trials, %ld false identifications\n", ntrials,
            (unsigned long long)total_trials, hits);
    fprintf(stderr, "negatives: bench-side decode: %llu tag checks, %ld with all 48 tag bits matching\n",
            (unsigned long long)bench_checks, agree48);
    fprintf(stderr, "negatives: issued serials: %d a vendor, best correlation over all trials %.2f sigma\n",
            nissued, zmax);
    for (int i = 0; i < nb; i++) {
        free(base[i].y);
        free(foreign[i].y);
        free(sibling[i].y);
    }
    free(keys);
    free(issued);
    ct_ctx_free(ctx);
    return hits == 0 ? 0 : 3;
}

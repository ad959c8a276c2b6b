/* verify: blind detection on synthetic planes. Synchronisation after
 * scaling, rotation, mirroring and cropping; the false-positive
 * calibration on unmarked images; tiny inputs; allocation failure. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include <celtrace/celtrace.h>

#include "verify/vfy.h"
#include "watermark/wm.h"
#include "testutil.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- deterministic randomness (splitmix64) -------------------------------- */

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

static float clamp255(double v)
{
    return (float)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* ---- a small geometric transform ------------------------------------------- */

typedef struct plane {
    uint32_t w, h;
    float *y;
} plane;

/* The suspect is the original scaled by s, rotated by deg degrees
 * (counter-clockwise on screen, y down), optionally mirrored left-right,
 * then cropped to ow x oh with its centre moved by (dx, dy) pixels from the
 * original's centre. Bilinear; a downscale is box-prefiltered first, as
 * any resizer does, so that the noise does not alias. Pixels from outside
 * the original are mid-gray. Each output pixel is rounded to a whole
 * level, as an 8-bit file would hold it. */
/* src (w x h) at (px, py), bilinear; mid-grey outside. */
static double bilinear(const float *src, uint32_t w, uint32_t h, double px, double py)
{
    double fx = floor(px), fy = floor(py);
    long ix = (long)fx, iy = (long)fy;
    if (ix < 0 || iy < 0 || ix + 1 >= (long)w || iy + 1 >= (long)h) {
        return 128.0;
    }
    double ax = px - fx, ay = py - fy;
    const float *p0 = src + (size_t)iy * w + (size_t)ix, *p1 = p0 + w;
    return (1 - ay) * ((1 - ax) * p0[0] + ax * p0[1]) + ay * ((1 - ax) * p1[0] + ax * p1[1]);
}

static plane transform(const plane *in, double s, double deg, bool mirror, uint32_t ow, uint32_t oh,
                       double dx, double dy)
{
    plane out = {ow, oh, malloc((size_t)ow * oh * sizeof(float))};
    const float *src = in->y;
    float *pre = NULL;
    if (out.y == NULL) {
        return out;
    }
    int k = s < 1.0 ? (int)lround(1.0 / s) : 1;
    if (k > 1) {
        /* box of k x k centred (k odd) or half-pixel-shifted (k even: the
         * shift is undone below) */
        pre = malloc((size_t)in->w * in->h * sizeof *pre);
        if (pre == NULL) {
            free(out.y);
            out.y = NULL;
            return out;
        }
        int lo = -(k - 1) / 2, hi = k / 2;
        for (uint32_t y = 0; y < in->h; y++) {
            for (uint32_t x = 0; x < in->w; x++) {
                double acc = 0;
                int n = 0;
                for (int j = lo; j <= hi; j++) {
                    for (int i = lo; i <= hi; i++) {
                        long xx = (long)x + i, yy = (long)y + j;
                        if (xx >= 0 && yy >= 0 && xx < (long)in->w && yy < (long)in->h) {
                            acc += in->y[(size_t)yy * in->w + (size_t)xx];
                            n++;
                        }
                    }
                }
                pre[(size_t)y * in->w + x] = (float)(acc / n);
            }
        }
        src = pre;
    }
    double shift = k > 1 && k % 2 == 0 ? -0.5 : 0.0;
    double a = deg * M_PI / 180.0, c = cos(a), sn = sin(a);
    double cxi = (in->w - 1) / 2.0, cyi = (in->h - 1) / 2.0;
    double cxo = (ow - 1) / 2.0 + dx, cyo = (oh - 1) / 2.0 + dy;
    for (uint32_t y = 0; y < oh; y++) {
        for (uint32_t x = 0; x < ow; x++) {
            /* suspect offset -> undo rotation -> undo scale -> undo mirror */
            double ux = x - cxo, uy = y - cyo;
            double rx = c * ux + sn * uy, ry = -sn * ux + c * uy;
            rx /= s;
            ry /= s;
            if (mirror) {
                rx = -rx;
            }
            double v = bilinear(src, in->w, in->h, rx + cxi + shift, ry + cyi + shift);
            out.y[(size_t)y * ow + x] = clamp255(floor(v + 0.5));
        }
    }
    free(pre);
    return out;
}

/* in stretched by sx across and sy down (bilinear, no prefilter: the
 * cases shrink by at most 0.75), cut to ow x oh from (ox, oy) of the
 * stretched picture; outside is mid-grey. */
static plane stretch(const plane *in, double sx, double sy, uint32_t ow, uint32_t oh, double ox,
                     double oy)
{
    plane out = {ow, oh, malloc((size_t)ow * oh * sizeof(float))};
    if (out.y == NULL) {
        return out;
    }
    for (uint32_t y = 0; y < oh; y++) {
        for (uint32_t x = 0; x < ow; x++) {
            double v = bilinear(in->y, in->w, in->h, (x + ox + 0.5) / sx - 0.5,
                                (y + oy + 0.5) / sy - 0.5);
            out.y[(size_t)y * ow + x] = clamp255(floor(v + 0.5));
        }
    }
    return out;
}

/* ---- keys ---------------------------------------------------------------------- */

static void make_key(vfy_key *k, uint32_t vendor, uint8_t seed)
{
    memset(k, 0, sizeof *k);
    k->vendor_id = vendor;
    k->epoch = 1;
    for (int i = 0; i < WM_KEYBYTES; i++) {
        k->key[i] = (uint8_t)(seed * 31 + i * 7 + 3);
    }
}

/* ---- synchronisation ------------------------------------------------------------ */

typedef struct geo_case {
    const char *name;
    double scale, deg;
    bool mirror;
    uint32_t ow, oh;
    double dx, dy;
} geo_case;

static void test_sync(ct_ctx *ctx)
{
    const uint32_t W = 768, H = 768;
    const size_t n = (size_t)W * H;
    const uint32_t serial = 0x5eed1234u;
    uint8_t skey[WM_KEYBYTES], skey_wrong[WM_KEYBYTES];
    vfy_key keys[3], wrong[2];
    float *orig = malloc(n * sizeof *orig), *delta = malloc(n * sizeof *delta);
    plane marked = {W, H, malloc(n * sizeof(float))};
    rng r = {2024};

    CHECK(orig != NULL && delta != NULL && marked.y != NULL);
    if (orig == NULL || delta == NULL || marked.y == NULL) {
        goto done;
    }
    for (int i = 0; i < WM_KEYBYTES; i++) {
        skey[i] = (uint8_t)(0xc0 ^ (i * 5));
        skey_wrong[i] = skey[i];
    }
    skey_wrong[17] ^= 0x10;
    make_key(&keys[0], 11, 1);
    make_key(&keys[1], 22, 2); /* the one that marked it */
    make_key(&keys[2], 33, 3);
    wrong[0] = keys[0];
    wrong[1] = keys[2];

    for (size_t i = 0; i < n; i++) {
        orig[i] = clamp255(128.0 + 8.0 * rng_gauss(&r));
    }
    wm_plane pl = {W, H, orig, NULL, NULL, NULL, true, 1, NULL, NULL};
    wm_embed_params prm = {.strength = 1.0, .serial = serial};
    CHECK_ST(wm_embed(ctx, &pl, skey, keys[1].key, &prm, delta), CT_OK);
    for (size_t i = 0; i < n; i++) {
        marked.y[i] = orig[i] + delta[i];
    }
    const double P0 = wm_period_for(W, H);

    static const geo_case cases[] = {
        {"as marked", 1.0, 0, false, 768, 768, 0, 0},
        {"crop offset", 1.0, 0, false, 560, 520, 61.3, -37.0},
        {"scale 0.5", 0.5, 0, false, 384, 384, 0, 0},
        {"scale 0.75", 0.75, 0, false, 576, 576, 0, 0},
        {"scale 1.3", 1.3, 0, false, 900, 900, 12, 5},
        {"rotate +3", 1.0, 3, false, 600, 600, 0, 0},
        {"rotate -3", 1.0, -3, false, 600, 600, 0, 0},
        {"rotate +7", 1.0, 7, false, 560, 560, 0, 0},
        {"rotate -7", 1.0, -7, false, 560, 560, 0, 0},
        {"mirror", 1.0, 0, true, 768, 768, 0, 0},
        {"mirror, rotate 5, scale 0.8, crop", 0.8, 5, true, 440, 400, 20, -15},
        /* Quarter and half turns: the spectrum cannot tell a half turn
         * from none; the fold's sync phases do. */
        {"quarter turn", 1.0, 90, false, 768, 768, 0, 0},
        {"quarter turn back, scale 0.75", 0.75, -90, false, 576, 576, 0, 0},
        {"half turn, crop", 1.0, 180, false, 600, 560, 13, -7},
        {"half turn and 4 degrees", 1.0, 184, false, 560, 560, 0, 0},
        {"flip (mirror and half turn)", 1.0, 180, true, 768, 768, 0, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const geo_case *g = &cases[c];
        double t0 = now_s();
        plane sus = transform(&marked, g->scale, g->deg, g->mirror, g->ow, g->oh, g->dx, g->dy);
        CHECK(sus.y != NULL);
        if (sus.y == NULL) {
            continue;
        }
        vfy_input in = {sus.w, sus.h, sus.y, NULL};
        vfy_result res;
        CHECK_ST(vfy_detect(ctx, &in, skey, keys, 3, &res), CT_OK);
        bool found = res.nhits == 1 && res.hits[0].vendor_id == 22 && res.hits[0].epoch == 1 &&
                     res.hits[0].serial == serial;
        double want_p = P0 * g->scale;
        /* The map's angle is that of the suspect -> tile map, the inverse
         * of the transform. */
        double want_a = -g->deg;
        printf("  %-34s %s: period %.1f (want %.1f) angle %+.2f (want %+.1f)%s sync_z %.1f "
               "msg_z %.1f trials %llu, %.2f s\n",
               g->name, found ? "found" : "MISSED", res.period, want_p, res.angle, want_a,
               res.mirrored ? " mirrored" : "", res.sync_z, res.nhits > 0 ? res.hits[0].msg_z : 0.0,
               (unsigned long long)res.trials, now_s() - t0);
        CHECK(found);
        CHECK(fabs(res.period - want_p) < 0.02 * want_p);
        CHECK(fabs(fabs(res.angle) - fabs(remainder(want_a, 360.0))) < 0.5);
        CHECK(res.mirrored == g->mirror);
        CHECK(res.trials >= 1);
        CHECK(res.false_positive_probability == (double)res.trials * ldexp(1.0, -WM_TAG_BITS));
        if (res.nhits > 0) {
            CHECK(res.hits[0].msg_z > 5.0);
        }
        /* The same suspect with only the wrong vendor keys, and with the
         * wrong studio sync key: nothing. Only on a few cases (time). */
        if (c == 0 || c == 2 || c == 9) {
            CHECK_ST(vfy_detect(ctx, &in, skey, wrong, 2, &res), CT_OK);
            CHECK(res.nhits == 0);
            CHECK(res.trials >= 2);
            /* A wrong sync key hides the geometry from the spectrum; the
             * native map (an uncropped copy) needs no sync, so the true
             * mark may still be named there, but nothing else. */
            CHECK_ST(vfy_detect(ctx, &in, skey_wrong, keys, 3, &res), CT_OK);
            CHECK(res.nhits == 0 || (res.nhits == 1 && res.hits[0].vendor_id == 22 &&
                                     res.hits[0].serial == serial));
        }
        free(sus.y);
    }

    /* Sign of the angle: +a and -a come out with opposite signs. */
    {
        double ang[2];
        for (int s = 0; s < 2; s++) {
            plane sus = transform(&marked, 1.0, s ? -7.0 : 7.0, false, 560, 560, 0, 0);
            vfy_input in = {sus.w, sus.h, sus.y, NULL};
            vfy_result res;
            ang[s] = 0;
            if (sus.y != NULL) {
                CHECK_ST(vfy_detect(ctx, &in, skey, &keys[1], 1, &res), CT_OK);
                ang[s] = res.angle;
            }
            free(sus.y);
        }
        CHECK(ang[0] * ang[1] < 0);
        CHECK(fabs(ang[0] + ang[1]) < 0.5);
    }

    /* The search of upright maps: after the best `max` come upright
     * candidates only (the map fitted to a chance peak may tilt), and a
     * plain downscale or its mirror is among them even when max is 1. */
    for (int m = 0; m < 2; m++) {
        plane sus = transform(&marked, 0.5, 0, m == 1, 384, 384, 0, 0);
        float *white = malloc((size_t)384 * 384 * sizeof *white);
        CHECK(sus.y != NULL && white != NULL);
        if (sus.y != NULL && white != NULL) {
            wm_sync sy;
            wm_sync_init(&sy, skey);
            vfy_geom g[1 + VFY_EXTRA];
            int nc = 0, nup = 0;
            bool got = false;
            CHECK_ST(vfy_whiten(ctx, sus.y, NULL, 384, 384, 11, 3, white), CT_OK);
            CHECK_ST(vfy_sync_search(ctx, white, 384, 384, &sy, 40.0, 330.0, g, 1, &nc), CT_OK);
            CHECK(nc >= 2 && nc <= 1 + VFY_EXTRA);
            for (int c = 0; c < nc; c++) {
                double det = g[c].b[0][0] * g[c].b[1][1] - g[c].b[0][1] * g[c].b[1][0];
                double per = WM_CELLS / sqrt(fabs(det));
                double deg = atan2(g[c].b[1][0], g[c].b[1][1]) * 180.0 / M_PI;
                CHECK(c == 0 || g[c].upright);
                if (g[c].upright) {
                    nup++;
                    got |= fabs(per - 0.5 * P0) < 0.02 * 0.5 * P0 && fabs(deg) < 0.5 &&
                            (det < 0) == (m == 1);
                }
            }
            CHECK(nup >= 1);
            CHECK(got);
        }
        free(white);
        free(sus.y);
    }

    /* Aspect changes beyond what the fitted map absorbs (a 16:9 picture
     * squeezed to 4:3, an anamorphic stretch, both with a crop): the
     * search of stretched upright maps finds them and the mark is named;
     * the candidate's map has the stretch (cells per pixel across over
     * down = sy / sx). */
    {
        static const double st_cases[][2] = {{0.75, 1.0}, {1.0, 0.75}, {1.33, 1.0}, {0.8, 1.1}};
        for (size_t c = 0; c < sizeof st_cases / sizeof st_cases[0]; c++) {
            double sx = st_cases[c][0], sy = st_cases[c][1];
            plane sus = stretch(&marked, sx, sy, 500, 480, 23.0, 17.0);
            float *white = malloc((size_t)500 * 480 * sizeof *white);
            CHECK(sus.y != NULL && white != NULL);
            if (sus.y != NULL && white != NULL) {
                vfy_input in = {sus.w, sus.h, sus.y, NULL};
                vfy_result res;
                CHECK_ST(vfy_detect(ctx, &in, skey, keys, 3, &res), CT_OK);
                CHECK(res.nhits == 1 && res.hits[0].vendor_id == 22 &&
                      res.hits[0].serial == serial);
                wm_sync sy2;
                wm_sync_init(&sy2, skey);
                vfy_geom g[1 + VFY_EXTRA];
                int nc = 0;
                bool got = false;
                CHECK_ST(vfy_whiten(ctx, sus.y, NULL, 500, 480, 11, 3, white), CT_OK);
                CHECK_ST(vfy_sync_search(ctx, white, 500, 480, &sy2, 40.0, 330.0, g, 1, &nc),
                         CT_OK);
                for (int k = 0; k < nc; k++) {
                    double ratio = g[k].b[0][0] / g[k].b[1][1];
                    got |= g[k].upright && fabs(ratio / (sy / sx) - 1.0) < 0.03;
                }
                CHECK(got);
            }
            free(white);
            free(sus.y);
        }
    }

    /* The unmarked original: nothing, with any key. */
    {
        vfy_input in = {W, H, orig, NULL};
        vfy_result res;
        CHECK_ST(vfy_detect(ctx, &in, skey, keys, 3, &res), CT_OK);
        CHECK(res.nhits == 0);
    }

    /* Transparent pixels carry no evidence: a weight plane that hides the
     * left third still leaves the mark in the rest; a fully transparent
     * one gives nothing. */
    {
        float *wt = malloc(n * sizeof *wt);
        CHECK(wt != NULL);
        if (wt != NULL) {
            for (size_t i = 0; i < n; i++) {
                wt[i] = (i % W) < W / 3 ? 0.0f : 1.0f;
            }
            vfy_input in = {W, H, marked.y, wt};
            vfy_result res;
            CHECK_ST(vfy_detect(ctx, &in, skey, keys, 3, &res), CT_OK);
            CHECK(res.nhits == 1 && res.hits[0].serial == serial);
            for (size_t i = 0; i < n; i++) {
                wt[i] = 0.0f;
            }
            CHECK_ST(vfy_detect(ctx, &in, skey, keys, 3, &res), CT_OK);
            CHECK(res.nhits == 0);
            free(wt);
        }
    }
done:
    free(orig);
    free(delta);
    free(marked.y);
}

/* ---- false positives ------------------------------------------------------------- */

static void fill_unmarked(rng *r, int kind, float *y, uint32_t w, uint32_t h)
{
    double base = 40 + 170 * rng_unit(r), sigma = 1 + 15 * rng_unit(r);
    double gx = (rng_unit(r) - 0.5) * 0.6, gy = (rng_unit(r) - 0.5) * 0.6;
    double fx = 0.02 + 0.3 * rng_unit(r), fy = 0.3 * rng_unit(r), amp = 5 + 40 * rng_unit(r);
    for (uint32_t yy = 0; yy < h; yy++) {
        for (uint32_t xx = 0; xx < w; xx++) {
            double v;
            switch (kind) {
            case 0: /* noise */
                v = base + sigma * rng_gauss(r);
                break;
            case 1: /* flat */
                v = floor(base);
                break;
            case 2: /* gradient, whole levels */
                v = floor(base + gx * (xx - w / 2.0) + gy * (yy - h / 2.0));
                break;
            case 3: /* gradient plus a little grain */
                v = base + gx * (xx - w / 2.0) + gy * (yy - h / 2.0) + 0.7 * rng_gauss(r);
                break;
            default: /* a grating with noise: periodic content */
                v = base + amp * cos(2 * M_PI * (fx * xx + fy * yy)) + 2.0 * rng_gauss(r);
                break;
            }
            y[(size_t)yy * w + xx] = clamp255(floor(v + 0.5));
        }
    }
}

static void test_false_positives(ct_ctx *ctx, int nimg)
{
    static const uint32_t sizes[][2] = {{256, 256}, {320, 240}, {256, 256}, {240, 320}, {512, 384}};
    uint8_t skey[WM_KEYBYTES];
    vfy_key keys[5];
    rng r = {31337};
    float *y = malloc((size_t)512 * 512 * sizeof *y);
    /* A ledger of 400 issued serials a vendor: every one is tested too. */
    enum { NISSUED = 400 };
    uint32_t *issued = malloc(5 * NISSUED * sizeof *issued);
    uint64_t trials = 0;
    int hits = 0, bad_st = 0, bad_fpp = 0, bad_trials = 0, per_kind[5] = {0};
    double zmax = 0;
    int z_over4 = 0;

    CHECK(y != NULL && issued != NULL);
    if (y == NULL || issued == NULL) {
        free(y);
        free(issued);
        return;
    }
    rng_bytes(&r, skey, sizeof skey);
    memset(keys, 0, sizeof keys);
    for (int k = 0; k < 5; k++) {
        keys[k].vendor_id = (uint32_t)(100 + k);
        keys[k].epoch = 1;
        rng_bytes(&r, keys[k].key, sizeof keys[k].key);
        for (int s = 0; s < NISSUED; s++) {
            issued[k * NISSUED + s] = (uint32_t)(rng_u64(&r) | 1u);
        }
        keys[k].issued = issued + k * NISSUED;
        keys[k].nissued = NISSUED;
    }
    for (int i = 0; i < nimg; i++) {
        /* mostly the small sizes, to keep the run short */
        int si = (i % 15 == 14) ? 4 : i % 4;
        uint32_t w = sizes[si][0], h = sizes[si][1];
        int kind = i % 5;
        fill_unmarked(&r, kind, y, w, h);
        vfy_input in = {w, h, y, NULL};
        vfy_result res;
        ct_status st = vfy_detect(ctx, &in, skey, keys, 5, &res);
        bad_st += st != CT_OK;
        hits += res.nhits;
        trials += res.trials;
        per_kind[kind] += (int)res.trials;
        /* tag checks at 2^-48 each, plus the issued tests' share (1e-11) */
        double tags = (double)res.trials * ldexp(1.0, -WM_TAG_BITS);
        bad_fpp += !(res.false_positive_probability > tags &&
                     res.false_positive_probability <= tags + 1e-10);
        /* 20 folds of the search and 8 native ones, counted beforehand */
        bad_fpp += res.issued_tests != (uint64_t)5 * NISSUED * 28;
        if (res.issued_z > zmax) {
            zmax = res.issued_z;
        }
        /* Under no mark each test is sub-Gaussian: P(z >= 4) <= e^-8 per
         * test, and an image runs up to 2000 x 16 of them. */
        z_over4 += res.issued_z >= 4.0;
        /* every decoded candidate is tried with every key */
        bad_trials += res.trials == 0 || res.trials % 5 != 0;
        if (res.nhits > 0) {
            fprintf(stderr, "false positive: image %d (kind %d, %ux%u): vendor %u serial %08x\n", i,
                    kind, w, h, res.hits[0].vendor_id, res.hits[0].serial);
        }
    }
    printf("  %d unmarked images x 5 keys: %d hits, %llu trials (noise %d, flat %d, gradient "
           "%d, grain %d, grating %d); issued serials: best z %.2f, %d images with z >= 4\n",
           nimg, hits, (unsigned long long)trials, per_kind[0], per_kind[1], per_kind[2],
           per_kind[3], per_kind[4], zmax, z_over4);
    /* The pass threshold for 2000 serials x 28 folds is 8.2 sigma. */
    CHECK(zmax < 6.5);
    CHECK(bad_st == 0);
    CHECK(hits == 0);
    CHECK(bad_fpp == 0);
    CHECK(bad_trials == 0);
    CHECK(trials >= (uint64_t)nimg * 5);
    free(y);
    free(issued);
}

/* ---- issued serials --------------------------------------------------------------- */

/* A mark too weak to decode is still named when the ledger lists its
 * serial, and only then: the same picture with the serial missing from
 * the list (other serials of the same vendor listed) names no one, and
 * another vendor's list never names that vendor. */
static void test_issued(ct_ctx *ctx)
{
    const uint32_t W = 512, H = 512;
    const size_t n = (size_t)W * H;
    const uint32_t serial = 0x0badcafeu;
    uint8_t skey[WM_KEYBYTES];
    vfy_key keys[2];
    uint32_t list_a[64], list_b[64];
    float *orig = malloc(n * sizeof *orig), *delta = malloc(n * sizeof *delta);
    float *sus = malloc(n * sizeof *sus);
    rng r = {77};
    int decoded = 0, named = 0, named_without = 0, wrong = 0, tried = 0;

    CHECK(orig != NULL && delta != NULL && sus != NULL);
    if (orig == NULL || delta == NULL || sus == NULL) {
        goto done;
    }
    rng_bytes(&r, skey, sizeof skey);
    make_key(&keys[0], 5, 41); /* marks the picture */
    make_key(&keys[1], 6, 42);
    for (int s = 0; s < 64; s++) {
        list_a[s] = (uint32_t)(rng_u64(&r) | 1u);
        list_b[s] = (uint32_t)(rng_u64(&r) | 1u);
    }
    for (size_t i = 0; i < n; i++) {
        orig[i] = clamp255(128.0 + 6.0 * rng_gauss(&r));
    }
    wm_plane pl = {W, H, orig, NULL, NULL, NULL, true, 1, NULL, NULL};
    /* Weak marks under strong noise: around the decoder's edge. */
    const double cell = WM_CELLS / (double)wm_period_for(W, H);
    const vfy_geom geom = {{{cell, 0}, {0, cell}}, 0, true};
    for (int t = 0; t < 8; t++) {
        wm_embed_params prm = {.strength = 0.08 + 0.01 * t, .serial = serial};
        CHECK_ST(wm_embed(ctx, &pl, skey, keys[0].key, &prm, delta), CT_OK);
        for (size_t i = 0; i < n; i++) {
            sus[i] = clamp255(orig[i] + delta[i] + 4.0 * rng_gauss(&r));
        }
        vfy_input in = {W, H, sus, NULL};
        vfy_result res;
        /* without a ledger: decoding only */
        keys[0].issued = NULL;
        keys[0].nissued = 0;
        keys[1].issued = NULL;
        keys[1].nissued = 0;
        CHECK_ST(vfy_try_geometry(ctx, &in, skey, keys, 2, &geom, &res), CT_OK);
        decoded += res.nhits > 0;
        /* the ledger lists the serial among others */
        list_a[37] = serial;
        keys[0].issued = list_a;
        keys[0].nissued = 64;
        keys[1].issued = list_b;
        keys[1].nissued = 64;
        CHECK_ST(vfy_try_geometry(ctx, &in, skey, keys, 2, &geom, &res), CT_OK);
        tried++;
        printf("  strength %.2f: sync z %.1f, issued z %.1f, %s\n", prm.strength, res.sync_z,
               res.issued_z, res.nhits > 0 ? (res.hits[0].issued ? "named (issued)" : "decoded") : "-");
        if (res.nhits > 0) {
            named += res.hits[0].vendor_id == 5 && res.hits[0].serial == serial;
            wrong += res.hits[0].vendor_id != 5;
            CHECK(res.false_positive_probability <= 1e-9);
        }
        /* the ledger does not list it: only a decode may name vendor 5 */
        list_a[37] = serial ^ 0x40000u;
        CHECK_ST(vfy_try_geometry(ctx, &in, skey, keys, 2, &geom, &res), CT_OK);
        for (int h = 0; h < res.nhits; h++) {
            wrong += res.hits[h].vendor_id != 5;
            named_without += res.hits[h].issued;
        }
        /* only vendor 6's list, with vendor 6's key: never a name */
        CHECK_ST(vfy_try_geometry(ctx, &in, skey, &keys[1], 1, &geom, &res), CT_OK);
        wrong += res.nhits;
    }
    printf("  weak marks: %d of %d decoded without the ledger, %d named with it\n", decoded,
           tried, named);
    CHECK(named > decoded);
    CHECK(named >= 3);
    CHECK(named_without == 0);
    CHECK(wrong == 0);
done:
    free(orig);
    free(delta);
    free(sus);
}

/* ---- small inputs ------------------------------------------------------------------ */

static void test_small(ct_ctx *ctx)
{
    static const uint32_t sizes[][2] = {{32, 32}, {1, 1}, {63, 500}, {500, 63}, {64, 64}, {97, 80}};
    uint8_t skey[WM_KEYBYTES] = {1, 2, 3};
    vfy_key k;
    float *y = malloc((size_t)500 * 64 * sizeof *y);
    rng r = {5};
    make_key(&k, 9, 9);
    CHECK(y != NULL);
    if (y == NULL) {
        return;
    }
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        uint32_t w = sizes[s][0], h = sizes[s][1];
        for (size_t i = 0; i < (size_t)w * h; i++) {
            y[i] = (float)(128 + 8 * rng_gauss(&r));
        }
        vfy_input in = {w, h, y, NULL};
        vfy_result res;
        memset(&res, 0x55, sizeof res);
        CHECK_ST(vfy_detect(ctx, &in, skey, &k, 1, &res), CT_OK);
        CHECK(res.nhits == 0);
        if (w < 64 || h < 64) {
            CHECK(res.trials == 0);
            CHECK(res.false_positive_probability == 0.0);
        }
    }
    /* No keys: the geometry is searched, nothing is decoded. */
    {
        uint32_t w = 97, h = 80;
        vfy_input in = {w, h, y, NULL};
        vfy_result res;
        CHECK_ST(vfy_detect(ctx, &in, skey, NULL, 0, &res), CT_OK);
        CHECK(res.nhits == 0);
        CHECK(res.trials == 0);
    }
    free(y);
}

/* ---- allocation failure -------------------------------------------------------------- */

static void test_faults(ct_ctx *ctx)
{
    const uint32_t w = 256, h = 224;
    const size_t n = (size_t)w * h;
    float *y = malloc(n * sizeof *y), *delta = malloc(n * sizeof *delta);
    float *wt = malloc(n * sizeof *wt);
    uint8_t skey[WM_KEYBYTES];
    vfy_key k;
    rng r = {77};
    int bad = 0, saw_nomem = 0, reached_ok = 0;

    CHECK(y != NULL && delta != NULL && wt != NULL);
    if (y == NULL || delta == NULL || wt == NULL) {
        goto done;
    }
    rng_bytes(&r, skey, sizeof skey);
    make_key(&k, 4, 4);
    for (size_t i = 0; i < n; i++) {
        y[i] = clamp255(120 + 8 * rng_gauss(&r));
        wt[i] = (i % w) < 20 ? 0.0f : 1.0f;
    }
    wm_plane pl = {w, h, y, NULL, NULL, wt, true, 1, NULL, NULL};
    wm_embed_params prm = {.strength = 1.0, .serial = 4242};
    CHECK_ST(wm_embed(ctx, &pl, skey, k.key, &prm, delta), CT_OK);
    for (size_t i = 0; i < n; i++) {
        y[i] += delta[i];
    }
    vfy_input in = {w, h, y, wt};
    vfy_result ref;
    CHECK_ST(vfy_detect(ctx, &in, skey, &k, 1, &ref), CT_OK);
    printf("  fault image: %d hit(s), trials %llu\n", ref.nhits, (unsigned long long)ref.trials);

    for (long a = 1; a <= 30; a++) {
        vfy_result res;
        ctx->fail_alloc_after = a;
        ct_status st = vfy_detect(ctx, &in, skey, &k, 1, &res);
        bool injected = ctx->fail_alloc_after == 0;
        ctx->fail_alloc_after = 0;
        if (st == CT_ERR_NOMEM) {
            saw_nomem = 1;
            if (!injected) {
                bad++;
            }
        } else if (st == CT_OK) {
            if (injected) {
                bad++;
                fprintf(stderr, "vfy_detect: allocation %ld failed, status OK\n", a);
            } else {
                reached_ok = 1;
                if (res.nhits != ref.nhits || res.trials != ref.trials) {
                    bad++;
                }
            }
        } else {
            bad++;
            fprintf(stderr, "vfy_detect with allocation %ld failing: %d (%s)\n", a, (int)st,
                    ct_errmsg(ctx));
        }
    }
    CHECK(bad == 0);
    CHECK(saw_nomem);

    /* Once the detector has all its memory it gives the same answer. */
    {
        vfy_result res;
        CHECK_ST(vfy_detect(ctx, &in, skey, &k, 1, &res), CT_OK);
        CHECK(res.nhits == ref.nhits && res.trials == ref.trials);
    }
    if (!reached_ok) {
        printf("  (vfy_detect needs more than 30 allocations here)\n");
    }

    /* The whitening on its own. */
    bad = saw_nomem = 0;
    for (long a = 1; a <= 12; a++) {
        ctx->fail_alloc_after = a;
        ct_status st = vfy_whiten(ctx, y, wt, w, h, 15, 3, delta);
        bool injected = ctx->fail_alloc_after == 0;
        ctx->fail_alloc_after = 0;
        if (st == CT_ERR_NOMEM) {
            saw_nomem = 1;
            bad += !injected;
        } else if (st == CT_OK) {
            bad += injected;
        } else {
            bad++;
        }
    }
    CHECK(bad == 0);
    CHECK(saw_nomem);
done:
    free(y);
    free(delta);
    free(wt);
}

/* ---- a small cel figure ------------------------------------------------------------- */

/* A flat-colour figure with black outlines on a transparent canvas,
 * covering about a thirtieth of it: the mark lives in the fills (capped) and
 * along the ink. The verifier's prediction must see it through the ink's
 * contrast; a plain local mean loses it in the halo of every line. */
static void test_cel_figure(ct_ctx *ctx)
{
    const uint32_t W = 1280, H = 720;
    const size_t n = (size_t)W * H;
    float *y = malloc(n * sizeof *y), *wt = malloc(n * sizeof *wt), *d = malloc(n * sizeof *d);
    float *up = malloc(n * sizeof *up), *down = malloc(n * sizeof *down);
    uint8_t skey[WM_KEYBYTES];
    vfy_key keys[2];
    CHECK(y != NULL && wt != NULL && d != NULL && up != NULL && down != NULL);
    if (y == NULL || wt == NULL || d == NULL || up == NULL || down == NULL) {
        goto done;
    }
    for (int i = 0; i < WM_KEYBYTES; i++) {
        skey[i] = (uint8_t)(0x5a ^ (i * 3));
    }
    make_key(&keys[0], 4, 4);
    make_key(&keys[1], 7, 7); /* the one that marks */
    /* Three overlapping ellipses, fills 180, 120 and 220, 2-pixel ink. */
    static const double el[3][5] = {{640, 330, 75, 120, 180},
                                    {620, 250, 45, 35, 120},
                                    {670, 430, 55, 45, 220}};
    size_t nvis = 0;
    for (uint32_t yy = 0; yy < H; yy++) {
        for (uint32_t xx = 0; xx < W; xx++) {
            size_t i = (size_t)yy * W + xx;
            y[i] = 0.0f;
            wt[i] = 0.0f;
            for (int e = 0; e < 3; e++) {
                double dx = (xx - el[e][0]) / el[e][2], dy = (yy - el[e][1]) / el[e][3];
                double rr = sqrt(dx * dx + dy * dy);
                double edge = (1.0 - rr) * fmin(el[e][2], el[e][3]); /* pixels inside */
                if (edge >= 0) {
                    y[i] = edge < 2.0 ? 0.0f : (float)el[e][4];
                    wt[i] = 1.0f;
                }
            }
            up[i] = 255.0f - y[i];
            down[i] = y[i];
            nvis += wt[i] > 0;
        }
    }
    wm_plane pl = {W, H, y, up, down, wt, true, 1, NULL, NULL};
    wm_embed_params prm = {.strength = 1.0, .serial = 0x600dcafeu};
    CHECK_ST(wm_embed(ctx, &pl, skey, keys[1].key, &prm, d), CT_OK);
    /* Written in whole levels, then a little noise on top (a re-export). */
    rng r = {77};
    for (size_t i = 0; i < n; i++) {
        d[i] = (float)clamp255(floor(y[i] + d[i] + 0.5) + 1.0 * rng_gauss(&r));
    }
    vfy_input in = {W, H, d, wt};
    vfy_result res;
    CHECK_ST(vfy_detect(ctx, &in, skey, keys, 2, &res), CT_OK);
    printf("  cel figure (%.1f%% of the canvas): %d hit(s), sync z %.1f, chips z %.1f\n",
           100.0 * (double)nvis / (double)n, res.nhits, res.sync_z,
           res.nhits > 0 ? res.hits[0].msg_z : 0.0);
    CHECK(res.nhits == 1);
    CHECK(res.nhits < 1 || (res.hits[0].vendor_id == 7 && res.hits[0].serial == prm.serial));
    /* With a plain local mean the chips reached z 14 here; the prediction
     * from like neighbours about 25. */
    CHECK(res.nhits < 1 || res.hits[0].msg_z > 18.0);
done:
    free(y);
    free(wt);
    free(d);
    free(up);
    free(down);
}

int main(int argc, char **argv)
{
    ct_ctx *ctx = NULL;
    char home[4200];
    /* --fp N: a longer false-positive run by hand. Under the sanitizers
     * (CT_SANITIZED=ON, set by ctest) a third of the images cover the same
     * code; the calibration itself is the plain build's. */
    const char *san = getenv("CT_SANITIZED");
    int nfp = san != NULL && strcmp(san, "ON") == 0 ? 100 : 300;
    if (argc > 2 && strcmp(argv[1], "--fp") == 0) {
        nfp = atoi(argv[2]);
    }

    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 2;
    }
    snprintf(home, sizeof home, "%s/home", tu_tmpdir("verify"));
    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    if (ctx == NULL) {
        return tu_done("test_verify");
    }
    double t0 = now_s(), t;
    t = now_s();
    test_small(ctx);
    printf("small: %.2f s\n", now_s() - t);
    t = now_s();
    test_faults(ctx);
    printf("faults: %.2f s\n", now_s() - t);
    t = now_s();
    test_sync(ctx);
    printf("sync: %.2f s\n", now_s() - t);
    t = now_s();
    test_cel_figure(ctx);
    printf("cel figure: %.2f s\n", now_s() - t);
    t = now_s();
    test_issued(ctx);
    printf("issued serials: %.2f s\n", now_s() - t);
    t = now_s();
    test_false_positives(ctx, nfp);
    printf("false positives: %.2f s\n", now_s() - t);
    ct_ctx_free(ctx);
    printf("test_verify: %.2f s\n", now_s() - t0);
    return tu_done("test_verify");
}

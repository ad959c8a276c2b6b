/* verify: informed detection on a registered suspect.
 *
 * With the original O known and the suspect S registered to it, the
 * picture can be taken out: R = S - (a O' + b + c lap(O')), where O' is O
 * resampled through the registration and the Laplacian term absorbs the
 * difference between our resampling filter and the one that shrank the
 * leak. What is left is the mark plus compression noise, and the expected
 * mark of each recipient, E = wm_embed(O, that record's key, serial and
 * strength) resampled the same way, is correlated with it (Cox et al.'s
 * informed detector). The embedder is called, never imitated: the expected
 * mark is exactly what embed computed for that issue.
 *
 * Null distribution, measured rather than assumed: the same statistic for
 * VFY_DECOYS patterns of decoy keys and serials (a hash of the studio's
 * sync key and the decoy's index, so a verdict is reproducible), through
 * the same wm_embed, on the same residual. A recipient whose copy this is not has a
 * key as random as a decoy's, so its statistic is one more draw of that
 * distribution (the studio-wide sync component, which every pattern
 * shares, moves the decoys' mean, not the recipients' z). The statistic is
 * a sum over about a thousand independent keyed chips, hence close to
 * normal; with its mean and spread estimated from N decoys, a new draw
 * follows (c - mean) / (sd sqrt(1 + 1/N)) ~ Student t with N - 1 degrees
 * of freedom, and that tail is the p-value reported (the prediction
 * interval: it pays for estimating the spread from few decoys). */
#include "informed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* Regularised incomplete beta I_x(a, b) by Lentz's continued fraction
 * (Numerical Recipes, 6.4); x < (a + 1) / (a + b + 2) converges directly. */
static double betacf(double a, double b, double x)
{
    const double tiny = 1e-300;
    double qab = a + b, qap = a + 1, qam = a - 1, c = 1, d = 1 - qab * x / qap;
    if (fabs(d) < tiny) {
        d = tiny;
    }
    d = 1 / d;
    double h = d;
    for (int m = 1; m <= 300; m++) {
        int m2 = 2 * m;
        double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1 + aa * d;
        d = fabs(d) < tiny ? tiny : d;
        c = 1 + aa / c;
        c = fabs(c) < tiny ? tiny : c;
        d = 1 / d;
        h *= d * c;
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1 + aa * d;
        d = fabs(d) < tiny ? tiny : d;
        c = 1 + aa / c;
        c = fabs(c) < tiny ? tiny : c;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-15) {
            break;
        }
    }
    return h;
}

/* lgamma writes the global signgam; workers verify files at once. */
static double lgam(double x)
{
    int sign;
    return lgamma_r(x, &sign);
}

static double ibeta(double a, double b, double x)
{
    if (x <= 0) {
        return 0;
    }
    if (x >= 1) {
        return 1;
    }
    double lbt = lgam(a + b) - lgam(a) - lgam(b) + a * log(x) + b * log1p(-x);
    if (x < (a + 1) / (a + b + 2)) {
        return exp(lbt) * betacf(a, b, x) / a;
    }
    return 1 - exp(lbt) * betacf(b, a, 1 - x) / b;
}

double vfy_t_tail(double t, double nu)
{
    if (!isfinite(t)) {
        return t > 0 ? 0 : 1;
    }
    double half = 0.5 * ibeta(0.5 * nu, 0.5, nu / (nu + t * t));
    return t > 0 ? half : 1 - half;
}

/* Solve the 3x3 system m x = v (Cramer); false when singular. */
static bool solve3(double m[3][3], const double v[3], double x[3])
{
    double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
                 m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
                 m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if (!(fabs(det) > 1e-12)) {
        return false;
    }
    for (int k = 0; k < 3; k++) {
        double t[3][3];
        memcpy(t, m, sizeof t);
        for (int i = 0; i < 3; i++) {
            t[i][k] = v[i];
        }
        x[k] = (t[0][0] * (t[1][1] * t[2][2] - t[1][2] * t[2][1]) -
                t[0][1] * (t[1][0] * t[2][2] - t[1][2] * t[2][0]) +
                t[0][2] * (t[1][0] * t[2][1] - t[1][1] * t[2][0])) /
               det;
    }
    return true;
}

typedef struct work {
    size_t n;       /* suspect pixels */
    float *res;     /* residual, 0 where unused */
    uint8_t *use;   /* pixels that count */
    float *delta;   /* one pattern at the original's size */
    float *reg;     /* that pattern on the suspect's grid */
    float *amp;     /* the embedder's budget on the original ... */
    double amp_strength; /* ... at this strength (0: not yet computed) */
} work;

/* The normalised correlation of one issue's expected mark with the
 * residual: <R, E'> / |E'| over the pixels used. */
static ct_status correlate(ct_ctx *ctx, const vfy_original *o, const vfy_gray *sus,
                           const uint8_t sync_key[WM_KEYBYTES], const vfy_reg *g,
                           const uint8_t key[WM_KEYBYTES], uint32_t serial, double strength,
                           work *wk, double *corr)
{
    wm_plane pl = {o->w, o->h, o->y, o->room_up, o->room_down, o->weight, o->fine, 1, NULL, NULL};
    wm_embed_params prm = {.strength = strength, .serial = serial};
    ct_status st = CT_OK;
    /* The budget depends on the original and the strength only: computed
     * once, every pattern after it costs a quarter of a whole embed. */
    if (wk->amp_strength != strength) {
        st = wm_mask(ctx, &pl, strength, wk->amp);
        if (st != CT_OK) {
            return st;
        }
        wk->amp_strength = strength;
    }
    st = wm_embed_amp(ctx, &pl, wk->amp, sync_key, key, &prm, wk->delta);
    if (st != CT_OK) {
        return st;
    }
    if (o->weight != NULL) {
        /* the residual is of images flattened onto white: a half
         * transparent pixel shows half its change */
        size_t no = (size_t)o->w * o->h;
        for (size_t i = 0; i < no; i++) {
            wk->delta[i] *= o->weight[i];
        }
    }
    st = vfy_warp(ctx, wk->delta, o->w, o->h, g, sus->w, sus->h, wk->reg, NULL);
    if (st != CT_OK) {
        return st;
    }
    double acc = 0, e2 = 0;
    for (size_t i = 0; i < wk->n; i++) {
        if (wk->use[i]) {
            acc += (double)wk->res[i] * wk->reg[i];
            e2 += (double)wk->reg[i] * wk->reg[i];
        }
    }
    *corr = e2 > 0 ? acc / sqrt(e2) : 0;
    return CT_OK;
}

/* R = S - (a O' + b + c lap O') over the pixels inside the original, then
 * clipped at 3 robust deviations: JPEG's ringing at strong edges is far
 * louder than the mark and would otherwise dominate both the recipients'
 * and the decoys' sums. */
static ct_status residual(ct_ctx *ctx, const vfy_original *o, const vfy_gray *sus,
                          const vfy_reg *g, work *wk, vfy_informed_stats *stats)
{
    uint32_t w = sus->w, h = sus->h;
    float *og = ct_mallocarray(ctx, wk->n, sizeof *og);
    float *lap = ct_mallocarray(ctx, wk->n, sizeof *lap);
    ct_status st = CT_OK;
    if (og == NULL || lap == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    st = vfy_warp(ctx, o->flat, o->w, o->h, g, w, h, og, wk->use);
    if (st != CT_OK) {
        goto done;
    }
    for (uint32_t y = 0; y < h; y++) {
        for (uint32_t x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            uint32_t xl = x > 0 ? x - 1 : x, xr = x + 1 < w ? x + 1 : x;
            uint32_t yu = y > 0 ? y - 1 : y, yd = y + 1 < h ? y + 1 : y;
            lap[i] = og[(size_t)y * w + xl] + og[(size_t)y * w + xr] + og[(size_t)yu * w + x] +
                     og[(size_t)yd * w + x] - 4 * og[i];
        }
    }
    double m[3][3] = {{0}}, v[3] = {0}, coef[3] = {1, 0, 0};
    size_t used = 0;
    for (size_t i = 0; i < wk->n; i++) {
        if (!wk->use[i]) {
            continue;
        }
        double f[3] = {og[i], 1.0, lap[i]};
        for (int a = 0; a < 3; a++) {
            for (int b = 0; b < 3; b++) {
                m[a][b] += f[a] * f[b];
            }
            v[a] += f[a] * sus->y[i];
        }
        used++;
    }
    if (used < 256 || !solve3(m, v, coef)) {
        coef[0] = 1;
        coef[1] = coef[2] = 0;
    }
    double s2 = 0;
    for (size_t i = 0; i < wk->n; i++) {
        if (wk->use[i]) {
            wk->res[i] = (float)(sus->y[i] - (coef[0] * og[i] + coef[1] + coef[2] * lap[i]));
            s2 += (double)wk->res[i] * wk->res[i];
        } else {
            wk->res[i] = 0;
        }
    }
    /* robust spread: the mean absolute residual (x 1.25 for a normal) */
    double sa = 0;
    for (size_t i = 0; i < wk->n; i++) {
        sa += fabs(wk->res[i]);
    }
    float lim = used > 0 ? (float)(3.0 * 1.25 * sa / (double)used) : 0.0f;
    if (lim > 0) {
        for (size_t i = 0; i < wk->n; i++) {
            wk->res[i] = wk->res[i] > lim ? lim : (wk->res[i] < -lim ? -lim : wk->res[i]);
        }
    }
    (void)s2;
    stats->fit_gain = coef[0];
    stats->pixels = used;
done:
    free(og);
    free(lap);
    return st;
}

ct_status vfy_informed(ct_ctx *ctx, const vfy_original *o, const vfy_gray *sus,
                       const uint8_t sync_key[WM_KEYBYTES], const vfy_reg *g,
                       vfy_recipient *rc, size_t nrc, vfy_informed_stats *stats)
{
    ct_status st = CT_OK;
    work wk = {0};
    double dc[VFY_DECOYS];
    uint8_t dkey[WM_KEYBYTES];

    memset(stats, 0, sizeof *stats);
    for (size_t r = 0; r < nrc; r++) {
        rc[r].corr = 0;
        rc[r].z = 0;
        rc[r].p = 1;
    }
    if (!ct_mul(&wk.n, sus->w, sus->h)) {
        return ct_fail(ctx, CT_ERR_LIMIT, "image too large");
    }
    wk.res = ct_mallocarray(ctx, wk.n, sizeof *wk.res);
    wk.use = ct_mallocarray(ctx, wk.n, 1);
    wk.reg = ct_mallocarray(ctx, wk.n, sizeof *wk.reg);
    wk.delta = ct_mallocarray(ctx, (size_t)o->w * o->h, sizeof *wk.delta);
    wk.amp = ct_mallocarray(ctx, (size_t)o->w * o->h, sizeof *wk.amp);
    if (wk.res == NULL || wk.use == NULL || wk.reg == NULL || wk.delta == NULL || wk.amp == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    st = residual(ctx, o, sus, g, &wk, stats);
    if (st != CT_OK || stats->pixels < 256 || nrc == 0) {
        goto done;
    }
    double strength = rc[0].strength;
    for (int d = 0; d < VFY_DECOYS; d++) {
        /* Decoy keys and serials derived from the studio's sync key and the
         * decoy's index, not drawn at random: the same file gives the same
         * verdict on every run, as evidence must. They are as unrelated to
         * any vendor's key as random ones (a keyed hash). */
        uint8_t seed[WM_KEYBYTES + 16];
        memcpy(seed, "celtrace-decoy:", 15); /* domain, then the index */
        seed[15] = (uint8_t)d;
        memcpy(seed + 16, sync_key, WM_KEYBYTES);
        uint8_t hb[WM_KEYBYTES + 4];
        crypto_generichash(hb, sizeof hb, seed, sizeof seed, NULL, 0);
        memcpy(dkey, hb, WM_KEYBYTES);
        uint32_t serial = ((uint32_t)hb[WM_KEYBYTES] << 24 | (uint32_t)hb[WM_KEYBYTES + 1] << 16 |
                           (uint32_t)hb[WM_KEYBYTES + 2] << 8 | hb[WM_KEYBYTES + 3]) | 1u;
        sodium_memzero(seed, sizeof seed);
        sodium_memzero(hb, sizeof hb);
        st = correlate(ctx, o, sus, sync_key, g, dkey, serial, strength, &wk, &dc[d]);
        if (st != CT_OK) {
            goto done;
        }
    }
    double mean = 0, var = 0;
    for (int d = 0; d < VFY_DECOYS; d++) {
        mean += dc[d];
    }
    mean /= VFY_DECOYS;
    for (int d = 0; d < VFY_DECOYS; d++) {
        var += (dc[d] - mean) * (dc[d] - mean);
    }
    double sd = sqrt(var / (VFY_DECOYS - 1));
    stats->decoys = VFY_DECOYS;
    stats->mean = mean;
    stats->sd = sd;
    for (size_t r = 0; r < nrc; r++) {
        st = correlate(ctx, o, sus, sync_key, g, rc[r].key, rc[r].serial, rc[r].strength, &wk,
                       &rc[r].corr);
        if (st != CT_OK) {
            goto done;
        }
        rc[r].z = sd > 0 ? (rc[r].corr - mean) / sd : 0;
        double t = rc[r].z / sqrt(1.0 + 1.0 / VFY_DECOYS);
        rc[r].p = sd > 0 ? vfy_t_tail(t, VFY_DECOYS - 1) : 1.0;
    }
done:
    sodium_memzero(dkey, sizeof dkey);
    free(wk.res);
    free(wk.use);
    free(wk.reg);
    free(wk.delta);
    free(wk.amp);
    return st;
}

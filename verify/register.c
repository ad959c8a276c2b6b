/* verify: registration of a suspect to a known original.
 *
 * A leak may be the original shrunk to a fifth, a 15 % crop at any place,
 * mirrored, re-encoded at JPEG 15. A 64-bit dHash sees none of the crops,
 * so the geometry is searched directly (after Lewis, "Fast normalized
 * cross-correlation", 1995):
 *  1. coarse: the original at about 256 pixels on its long side, the
 *     suspect resampled to that scale for each step of a ladder of scales
 *     (3 % apart, 0.15x..2x), both contrast-normalised (local mean removed,
 *     divided by the local deviation, so ink lines and flat fills weigh
 *     alike and levels or gamma do not matter). The normalised
 *     cross-correlation at every offset comes from one FFT pair per scale;
 *     the plain and the mirrored suspect ride in the real and imaginary
 *     parts of the same transform.
 *  2. fine: the best few (scale, offset, mirror) are refined by a pattern
 *     search on the NCC of the original warped onto the suspect's own grid
 *     (at most 384, then 512 pixels on the long side), to a fraction of an
 *     original pixel: the mark's chips are about 7 original pixels wide and
 *     the informed correlation needs them aligned.
 * FFTs are libavutil's av_tx (no planner state to lock, unlike FFTW's). */
#include "informed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <libavutil/mem.h>
#include <libavutil/tx.h>

#define COARSE_SIDE 256
#define FINE_SIDE   384
#define FINAL_SIDE  512
#define LADDER      1.03
#define MIN_TPL     16   /* template sides at the coarse level, pixels */
#define NCAND       5
#define FEAT_EPS    3.0f /* levels: flat areas are not blown up into noise */
#define PYR_LEVELS  6

/* ---- separable resampling ------------------------------------------------ */

typedef struct axis {
    int n, taps;
    int *idx;   /* n * taps source indices (clamped) */
    float *w;   /* n * taps weights, summing to 1 */
    uint8_t *ok;
    int lo, hi; /* source indices used */
} axis;

static void axis_free(axis *a)
{
    free(a->idx);
    free(a->w);
    free(a->ok);
    memset(a, 0, sizeof *a);
}

/* Output sample i sits at source index coordinate b + a i (source sample j
 * is centred on j). A triangle of half-width max(1, |a|) averages the
 * source over the output sample's footprint, so shrinking never aliases. */
static ct_status axis_make(ct_ctx *ctx, int n, int nsrc, double a, double b, axis *ax)
{
    double r = fabs(a) > 1.0 ? fabs(a) : 1.0;
    memset(ax, 0, sizeof *ax);
    ax->n = n;
    ax->taps = 2 * (int)ceil(r) + 1;
    ax->idx = ct_mallocarray(ctx, (size_t)n * ax->taps, sizeof *ax->idx);
    ax->w = ct_mallocarray(ctx, (size_t)n * ax->taps, sizeof *ax->w);
    ax->ok = ct_mallocarray(ctx, (size_t)n, 1);
    if (ax->idx == NULL || ax->w == NULL || ax->ok == NULL) {
        axis_free(ax);
        return CT_ERR_NOMEM;
    }
    ax->lo = nsrc - 1;
    ax->hi = 0;
    for (int i = 0; i < n; i++) {
        double c = b + a * i;
        long j0 = (long)ceil(c - r);
        double sum = 0;
        int *id = ax->idx + (size_t)i * ax->taps;
        float *w = ax->w + (size_t)i * ax->taps;
        for (int k = 0; k < ax->taps; k++) {
            long j = j0 + k;
            double t = 1.0 - fabs((double)j - c) / r;
            if (t < 0) {
                t = 0;
            }
            long jc = j < 0 ? 0 : (j >= nsrc ? nsrc - 1 : j);
            id[k] = (int)jc;
            w[k] = (float)t;
            sum += t;
            if (t > 0 && jc < ax->lo) {
                ax->lo = (int)jc;
            }
            if (t > 0 && jc > ax->hi) {
                ax->hi = (int)jc;
            }
        }
        if (sum <= 0) { /* c lies far outside: take the nearest edge */
            id[0] = c < 0 ? 0 : nsrc - 1;
            w[0] = 1.0f;
            sum = 1.0;
            for (int k = 1; k < ax->taps; k++) {
                w[k] = 0;
                id[k] = id[0];
            }
            ax->lo = id[0] < ax->lo ? id[0] : ax->lo;
            ax->hi = id[0] > ax->hi ? id[0] : ax->hi;
        }
        for (int k = 0; k < ax->taps; k++) {
            w[k] = (float)(w[k] / sum);
        }
        ax->ok[i] = c >= -0.5 && c <= nsrc - 0.5;
    }
    if (ax->lo > ax->hi) {
        ax->lo = ax->hi = 0;
    }
    return CT_OK;
}

ct_status vfy_warp(ct_ctx *ctx, const float *src, uint32_t sw, uint32_t sh, const vfy_reg *g,
                   uint32_t dw, uint32_t dh, float *out, uint8_t *valid)
{
    ct_status st;
    axis ax = {0}, ay = {0};
    float *tmp = NULL;
    double inv = 1.0 / g->scale;
    /* Source index coordinate of grid pixel i: ox + (i + 0.5) / s - 0.5, or
     * mirrored ox + (dw - i - 0.5) / s - 0.5. */
    if (g->mirrored) {
        st = axis_make(ctx, (int)dw, (int)sw, -inv, g->ox + (dw - 0.5) * inv - 0.5, &ax);
    } else {
        st = axis_make(ctx, (int)dw, (int)sw, inv, g->ox + 0.5 * inv - 0.5, &ax);
    }
    if (st == CT_OK) {
        st = axis_make(ctx, (int)dh, (int)sh, inv, g->oy + 0.5 * inv - 0.5, &ay);
    }
    if (st != CT_OK) {
        goto done;
    }
    int rows = ay.hi - ay.lo + 1;
    tmp = ct_mallocarray(ctx, (size_t)rows * dw, sizeof *tmp);
    if (tmp == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    for (int r = 0; r < rows; r++) {
        const float *s = src + (size_t)(ay.lo + r) * sw;
        float *t = tmp + (size_t)r * dw;
        for (uint32_t x = 0; x < dw; x++) {
            const int *id = ax.idx + (size_t)x * ax.taps;
            const float *w = ax.w + (size_t)x * ax.taps;
            float acc = 0;
            for (int k = 0; k < ax.taps; k++) {
                acc += w[k] * s[id[k]];
            }
            t[x] = acc;
        }
    }
    for (uint32_t y = 0; y < dh; y++) {
        const int *id = ay.idx + (size_t)y * ay.taps;
        const float *w = ay.w + (size_t)y * ay.taps;
        float *o = out + (size_t)y * dw;
        for (uint32_t x = 0; x < dw; x++) {
            o[x] = 0;
        }
        for (int k = 0; k < ay.taps; k++) {
            if (w[k] == 0) {
                continue;
            }
            const float *t = tmp + (size_t)(id[k] - ay.lo) * dw;
            for (uint32_t x = 0; x < dw; x++) {
                o[x] += w[k] * t[x];
            }
        }
        if (valid != NULL) {
            for (uint32_t x = 0; x < dw; x++) {
                valid[(size_t)y * dw + x] = ax.ok[x] && ay.ok[y];
            }
        }
    }
done:
    axis_free(&ax);
    axis_free(&ay);
    free(tmp);
    return st;
}

/* ---- contrast normalisation ---------------------------------------------- */

/* Box mean over (2r+1)^2, the window cut at the borders. Both passes run
 * along rows (the vertical one keeps a running sum per column), so the
 * cache sees memory in order. tmp holds w*h floats; out may be in. */
static void box_mean(const float *in, uint32_t w, uint32_t h, int r, float *out, float *tmp,
                     double *col)
{
    for (uint32_t y = 0; y < h; y++) {
        const float *s = in + (size_t)y * w;
        float *t = tmp + (size_t)y * w;
        double acc = 0;
        long lo = 0, hi = -1; /* window [lo, hi] */
        for (uint32_t x = 0; x < w; x++) {
            long nlo = (long)x - r < 0 ? 0 : (long)x - r;
            long nhi = (long)x + r >= (long)w ? (long)w - 1 : (long)x + r;
            while (hi < nhi) {
                acc += s[++hi];
            }
            while (lo < nlo) {
                acc -= s[lo++];
            }
            t[x] = (float)(acc / (double)(hi - lo + 1));
        }
    }
    for (uint32_t x = 0; x < w; x++) {
        col[x] = 0;
    }
    long lo = 0, hi = -1;
    for (uint32_t y = 0; y < h; y++) {
        long nlo = (long)y - r < 0 ? 0 : (long)y - r;
        long nhi = (long)y + r >= (long)h ? (long)h - 1 : (long)y + r;
        while (hi < nhi) {
            const float *t = tmp + (size_t)(++hi) * w;
            for (uint32_t x = 0; x < w; x++) {
                col[x] += t[x];
            }
        }
        while (lo < nlo) {
            const float *t = tmp + (size_t)(lo++) * w;
            for (uint32_t x = 0; x < w; x++) {
                col[x] -= t[x];
            }
        }
        double inv = 1.0 / (double)(hi - lo + 1);
        float *o = out + (size_t)y * w;
        for (uint32_t x = 0; x < w; x++) {
            o[x] = (float)(col[x] * inv);
        }
    }
}

/* (y - local mean) / (local deviation + eps), in place into out. */
static ct_status features(ct_ctx *ctx, const float *in, uint32_t w, uint32_t h, float *out)
{
    size_t n = (size_t)w * h;
    float *m = ct_mallocarray(ctx, n, sizeof *m);
    float *t = ct_mallocarray(ctx, n, sizeof *t);
    double *col = ct_mallocarray(ctx, w, sizeof *col);
    if (m == NULL || t == NULL || col == NULL) {
        free(m);
        free(t);
        free(col);
        return CT_ERR_NOMEM;
    }
    box_mean(in, w, h, 2, m, t, col);
    for (size_t i = 0; i < n; i++) {
        out[i] = in[i] - m[i];
        m[i] = out[i] * out[i];
    }
    box_mean(m, w, h, 4, m, t, col);
    for (size_t i = 0; i < n; i++) {
        /* running sums can leave a hair below zero */
        out[i] /= sqrtf(m[i] > 0 ? m[i] : 0) + FEAT_EPS;
    }
    free(m);
    free(t);
    free(col);
    return CT_OK;
}

/* ---- 2-D complex FFT through av_tx ---------------------------------------- */

typedef struct fft2 {
    int nx, ny;
    AVTXContext *tx[4]; /* x fwd, y fwd, x inv, y inv */
    av_tx_fn fn[4];
    AVComplexFloat *line, *line2;
} fft2;

static void fft2_free(fft2 *f)
{
    for (int i = 0; i < 4; i++) {
        av_tx_uninit(&f->tx[i]);
    }
    av_freep(&f->line);
    av_freep(&f->line2);
}

static ct_status fft2_init(ct_ctx *ctx, int nx, int ny, fft2 *f)
{
    float scale = 1.0f;
    memset(f, 0, sizeof *f);
    f->nx = nx;
    f->ny = ny;
    int m = nx > ny ? nx : ny;
    f->line = av_malloc((size_t)m * sizeof *f->line);
    f->line2 = av_malloc((size_t)m * sizeof *f->line2);
    if (f->line == NULL || f->line2 == NULL ||
        av_tx_init(&f->tx[0], &f->fn[0], AV_TX_FLOAT_FFT, 0, nx, &scale, 0) < 0 ||
        av_tx_init(&f->tx[1], &f->fn[1], AV_TX_FLOAT_FFT, 0, ny, &scale, 0) < 0 ||
        av_tx_init(&f->tx[2], &f->fn[2], AV_TX_FLOAT_FFT, 1, nx, &scale, 0) < 0 ||
        av_tx_init(&f->tx[3], &f->fn[3], AV_TX_FLOAT_FFT, 1, ny, &scale, 0) < 0) {
        fft2_free(f);
        return ct_fail(ctx, CT_ERR_NOMEM, "cannot set up the registration FFT");
    }
    return CT_OK;
}

/* Unnormalised transform of d (ny rows of nx), in place. */
static void fft2_run(fft2 *f, AVComplexFloat *d, int inv)
{
    int fx = inv ? 2 : 0, fy = inv ? 3 : 1;
    for (int y = 0; y < f->ny; y++) {
        memcpy(f->line, d + (size_t)y * f->nx, (size_t)f->nx * sizeof *f->line);
        f->fn[fx](f->tx[fx], f->line2, f->line, sizeof(AVComplexFloat));
        memcpy(d + (size_t)y * f->nx, f->line2, (size_t)f->nx * sizeof *f->line);
    }
    for (int x = 0; x < f->nx; x++) {
        for (int y = 0; y < f->ny; y++) {
            f->line[y] = d[(size_t)y * f->nx + x];
        }
        f->fn[fy](f->tx[fy], f->line2, f->line, sizeof(AVComplexFloat));
        for (int y = 0; y < f->ny; y++) {
            d[(size_t)y * f->nx + x] = f->line2[y];
        }
    }
}

static int pow2_at_least(uint32_t v)
{
    int n = 16;
    while ((uint32_t)n < v) {
        n *= 2;
    }
    return n;
}

/* ---- search ---------------------------------------------------------------- */

typedef struct pyr {
    int n;
    uint32_t w[PYR_LEVELS], h[PYR_LEVELS];
    double f[PYR_LEVELS]; /* level pixels per original pixel */
    const float *y[PYR_LEVELS];
    float *own[PYR_LEVELS];
} pyr;

static void pyr_free(pyr *p)
{
    for (int i = 0; i < PYR_LEVELS; i++) {
        free(p->own[i]);
    }
    memset(p, 0, sizeof *p);
}

static ct_status pyr_make(ct_ctx *ctx, const vfy_gray *o, pyr *p)
{
    memset(p, 0, sizeof *p);
    p->w[0] = o->w;
    p->h[0] = o->h;
    p->f[0] = 1.0;
    p->y[0] = o->y;
    p->n = 1;
    while (p->n < PYR_LEVELS && p->w[p->n - 1] >= 64 && p->h[p->n - 1] >= 64) {
        int k = p->n;
        double f = ldexp(1.0, -k);
        p->w[k] = (uint32_t)lround(o->w * f);
        p->h[k] = (uint32_t)lround(o->h * f);
        p->f[k] = f;
        p->own[k] = ct_mallocarray(ctx, (size_t)p->w[k] * p->h[k], sizeof *p->own[k]);
        if (p->own[k] == NULL) {
            return CT_ERR_NOMEM;
        }
        vfy_reg g = {0.5, 0, 0, false, 0, 0};
        ct_status st = vfy_warp(ctx, p->y[k - 1], p->w[k - 1], p->h[k - 1], &g, p->w[k], p->h[k],
                                p->own[k], NULL);
        if (st != CT_OK) {
            return st;
        }
        p->y[k] = p->own[k];
        p->n++;
    }
    return CT_OK;
}

/* The suspect at one resolution, with its features. */
typedef struct slevel {
    uint32_t w, h;
    double d; /* level pixels per suspect pixel */
    float *feat;
} slevel;

/* Scratch for evaluating one map at one suspect level. */
typedef struct evalbuf {
    float *warped, *feat;
    uint8_t *valid;
} evalbuf;

static double ncc_masked(const float *a, const float *b, const uint8_t *valid, size_t n,
                         size_t *used)
{
    double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!valid[i]) {
            continue;
        }
        double x = a[i], y = b[i];
        sa += x;
        sb += y;
        saa += x * x;
        sbb += y * y;
        sab += x * y;
        k++;
    }
    *used = k;
    if (k < 64) {
        return -1;
    }
    double va = saa - sa * sa / k, vb = sbb - sb * sb / k, cab = sab - sa * sb / k;
    if (va <= 1e-9 * k || vb <= 1e-9 * k) {
        return -1;
    }
    return cab / sqrt(va * vb);
}

/* NCC of the suspect level against the original warped through g (a map
 * of the full-size suspect). A map that puts most of the suspect outside
 * the original scores -1. */
static ct_status eval_map(ct_ctx *ctx, const pyr *p, const slevel *sl, const vfy_reg *g,
                          evalbuf *eb, double *score)
{
    double s = g->scale * sl->d; /* level pixels per original pixel */
    int k = 0;
    while (k + 1 < p->n && p->f[k + 1] >= s * 0.999) {
        k++;
    }
    vfy_reg gk = {s / p->f[k], g->ox * p->f[k], g->oy * p->f[k], g->mirrored, 0, 0};
    ct_status st = vfy_warp(ctx, p->y[k], p->w[k], p->h[k], &gk, sl->w, sl->h, eb->warped,
                            eb->valid);
    if (st != CT_OK) {
        return st;
    }
    st = features(ctx, eb->warped, sl->w, sl->h, eb->feat);
    if (st != CT_OK) {
        return st;
    }
    size_t n = (size_t)sl->w * sl->h, used = 0;
    double c = ncc_masked(sl->feat, eb->feat, eb->valid, n, &used);
    *score = used * 10 >= n * 9 ? c : -1;
    return CT_OK;
}

/* Pattern search over (log scale, ox, oy) from g, steps halving down to
 * a tenth of a level pixel. */
static ct_status refine(ct_ctx *ctx, const pyr *p, const slevel *sl, vfy_reg *g, double dls,
                        double dofs, int max_eval, evalbuf *eb)
{
    /* dls == 0: offsets only */
    double best;
    ct_status st = eval_map(ctx, p, sl, g, eb, &best);
    if (st != CT_OK) {
        return st;
    }
    double min_o = 0.1 / (g->scale * sl->d);
    int evals = 1;
    while (evals < max_eval && (dofs > min_o || dls > 0.0004)) {
        bool moved = false;
        for (int prm = dls > 0 ? 0 : 1; prm < 3 && evals < max_eval; prm++) {
            for (int sgn = -1; sgn <= 1 && evals < max_eval; sgn += 2) {
                vfy_reg t = *g;
                if (prm == 0) {
                    /* scale about the suspect's centre, so the offset
                     * does not have to chase it */
                    double cx = g->ox + 0.5 * sl->w / sl->d / g->scale;
                    double cy = g->oy + 0.5 * sl->h / sl->d / g->scale;
                    t.scale = g->scale * exp(sgn * dls);
                    t.ox = cx - 0.5 * sl->w / sl->d / t.scale;
                    t.oy = cy - 0.5 * sl->h / sl->d / t.scale;
                } else if (prm == 1) {
                    t.ox += sgn * dofs;
                } else {
                    t.oy += sgn * dofs;
                }
                double sc;
                st = eval_map(ctx, p, sl, &t, eb, &sc);
                evals++;
                if (st != CT_OK) {
                    return st;
                }
                if (sc > best) {
                    best = sc;
                    *g = t;
                    moved = true;
                    break;
                }
            }
        }
        if (!moved) {
            dls *= 0.5;
            dofs *= 0.5;
        }
    }
    g->score = best;
    return CT_OK;
}

static ct_status slevel_make(ct_ctx *ctx, const vfy_gray *sus, int side, slevel *sl)
{
    uint32_t m = sus->w > sus->h ? sus->w : sus->h;
    double d = m > (uint32_t)side ? (double)side / m : 1.0;
    memset(sl, 0, sizeof *sl);
    sl->w = (uint32_t)lround(sus->w * d);
    sl->h = (uint32_t)lround(sus->h * d);
    if (sl->w < 8 || sl->h < 8) {
        return CT_OK;
    }
    sl->d = (double)sl->w / sus->w;
    float *tmp = ct_mallocarray(ctx, (size_t)sl->w * sl->h, sizeof *tmp);
    sl->feat = ct_mallocarray(ctx, (size_t)sl->w * sl->h, sizeof *sl->feat);
    if (tmp == NULL || sl->feat == NULL) {
        free(tmp);
        return CT_ERR_NOMEM;
    }
    vfy_reg g = {sl->d, 0, 0, false, 0, 0};
    ct_status st = vfy_warp(ctx, sus->y, sus->w, sus->h, &g, sl->w, sl->h, tmp, NULL);
    if (st == CT_OK) {
        st = features(ctx, tmp, sl->w, sl->h, sl->feat);
    }
    free(tmp);
    return st;
}

typedef struct cand {
    vfy_reg g;
} cand;

static void keep_cand(cand *c, int *nc, const vfy_reg *g, double tol_o)
{
    /* one candidate per basin: a near duplicate of a better one is dropped,
     * a better one replaces its near duplicates */
    for (int i = 0; i < *nc; i++) {
        if (c[i].g.mirrored == g->mirrored && fabs(log(c[i].g.scale / g->scale)) < 0.07 &&
            fabs(c[i].g.ox - g->ox) < tol_o && fabs(c[i].g.oy - g->oy) < tol_o) {
            if (g->coarse > c[i].g.coarse) {
                c[i].g = *g;
            }
            return;
        }
    }
    if (*nc < NCAND) {
        c[(*nc)++].g = *g;
        return;
    }
    int worst = 0;
    for (int i = 1; i < *nc; i++) {
        if (c[i].g.coarse < c[worst].g.coarse) {
            worst = i;
        }
    }
    if (g->coarse > c[worst].g.coarse) {
        c[worst].g = *g;
    }
}

/* Coarse search: the best NCAND maps by NCC at about COARSE_SIDE. */
static ct_status coarse_search(ct_ctx *ctx, const pyr *p, const vfy_gray *sus, cand *cands,
                               int *ncand)
{
    ct_status st = CT_OK;
    fft2 f = {0};
    float *oc = NULL, *fo = NULL, *tpl = NULL, *tf = NULL;
    double *i1 = NULL, *i2 = NULL;
    AVComplexFloat *fi = NULL, *z = NULL;
    const vfy_gray o = {p->w[0], p->h[0], p->y[0]};
    uint32_t mo = o.w > o.h ? o.w : o.h;
    double c = mo > COARSE_SIDE ? (double)COARSE_SIDE / mo : 1.0;
    uint32_t wc = (uint32_t)lround(o.w * c), hc = (uint32_t)lround(o.h * c);

    *ncand = 0;
    if (wc < MIN_TPL || hc < MIN_TPL) {
        return CT_OK;
    }
    c = (double)wc / o.w;
    int nx = pow2_at_least(wc), ny = pow2_at_least(hc);
    size_t nn = (size_t)nx * ny, nc = (size_t)wc * hc;
    oc = ct_mallocarray(ctx, nc, sizeof *oc);
    fo = ct_mallocarray(ctx, nc, sizeof *fo);
    i1 = ct_calloc(ctx, (size_t)(wc + 1) * (hc + 1), sizeof *i1);
    i2 = ct_calloc(ctx, (size_t)(wc + 1) * (hc + 1), sizeof *i2);
    fi = av_malloc(nn * sizeof *fi);
    z = av_malloc(nn * sizeof *z);
    /* the largest template: the suspect at the smallest scale */
    tpl = ct_mallocarray(ctx, (size_t)(wc + wc / 16 + 2) * (hc + hc / 16 + 2), sizeof *tpl);
    tf = ct_mallocarray(ctx, (size_t)(wc + wc / 16 + 2) * (hc + hc / 16 + 2), sizeof *tf);
    if (oc == NULL || fo == NULL || i1 == NULL || i2 == NULL || fi == NULL || z == NULL ||
        tpl == NULL || tf == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "out of memory for registration");
        goto done;
    }
    /* The original at coarse scale, from the pyramid level just finer. */
    int k = 0;
    while (k + 1 < p->n && p->f[k + 1] >= c * 0.999) {
        k++;
    }
    vfy_reg gk = {c / p->f[k], 0, 0, false, 0, 0};
    st = vfy_warp(ctx, p->y[k], p->w[k], p->h[k], &gk, wc, hc, oc, NULL);
    if (st == CT_OK) {
        st = features(ctx, oc, wc, hc, fo);
    }
    if (st == CT_OK) {
        st = fft2_init(ctx, nx, ny, &f);
    }
    if (st != CT_OK) {
        goto done;
    }
    for (uint32_t y = 0; y < hc; y++) {
        for (uint32_t x = 0; x < wc; x++) {
            double v = fo[(size_t)y * wc + x];
            size_t a = (size_t)(y + 1) * (wc + 1) + x + 1;
            i1[a] = v + i1[a - 1] + i1[a - wc - 1] - i1[a - wc - 2];
            i2[a] = v * v + i2[a - 1] + i2[a - wc - 1] - i2[a - wc - 2];
        }
    }
    memset(fi, 0, nn * sizeof *fi);
    for (uint32_t y = 0; y < hc; y++) {
        for (uint32_t x = 0; x < wc; x++) {
            fi[(size_t)y * nx + x].re = fo[(size_t)y * wc + x];
        }
    }
    fft2_run(&f, fi, 0);

    double smin = VFY_REG_SMIN, smax = VFY_REG_SMAX;
    /* the suspect's footprint must fit in the original (4 % slack for
     * rounding), and the template must keep MIN_TPL pixels */
    smin = fmax(smin, fmax(sus->w / (1.04 * o.w), sus->h / (1.04 * o.h)));
    smax = fmin(smax, fmin(sus->w * c / MIN_TPL, sus->h * c / MIN_TPL));
    for (double s = smin; s <= smax * 1.0001; s *= LADDER) {
        uint32_t tw = (uint32_t)lround(sus->w * c / s), th = (uint32_t)lround(sus->h * c / s);
        if (tw < MIN_TPL || th < MIN_TPL || tw > wc + wc / 16 + 2 || th > hc + hc / 16 + 2) {
            continue;
        }
        vfy_reg gs = {(double)tw / sus->w, 0, 0, false, 0, 0};
        st = vfy_warp(ctx, sus->y, sus->w, sus->h, &gs, tw, th, tpl, NULL);
        if (st == CT_OK) {
            st = features(ctx, tpl, tw, th, tf);
        }
        if (st != CT_OK) {
            goto done;
        }
        /* a template a little larger than the original loses its border */
        uint32_t x0 = tw > wc ? (tw - wc + 1) / 2 : 0, y0 = th > hc ? (th - hc + 1) / 2 : 0;
        uint32_t cw = tw > wc ? wc : tw, ch = th > hc ? hc : th;
        double m1 = 0, m2 = 0;
        for (uint32_t y = 0; y < ch; y++) {
            for (uint32_t x = 0; x < cw; x++) {
                m1 += tf[(size_t)(y + y0) * tw + x + x0];
                m2 += tf[(size_t)(y + y0) * tw + (tw - 1 - (x + x0))];
            }
        }
        double n = (double)cw * ch;
        m1 /= n;
        m2 /= n;
        double e1 = 0, e2 = 0;
        memset(z, 0, nn * sizeof *z);
        for (uint32_t y = 0; y < ch; y++) {
            for (uint32_t x = 0; x < cw; x++) {
                float a = (float)(tf[(size_t)(y + y0) * tw + x + x0] - m1);
                float b = (float)(tf[(size_t)(y + y0) * tw + (tw - 1 - (x + x0))] - m2);
                z[(size_t)y * nx + x].re = a;
                z[(size_t)y * nx + x].im = b;
                e1 += (double)a * a;
                e2 += (double)b * b;
            }
        }
        if (e1 <= 1e-6 || e2 <= 1e-6) {
            continue;
        }
        fft2_run(&f, z, 0);
        /* conj(Z) * FI: its inverse is corr(plain) - i corr(mirrored) */
        for (size_t i = 0; i < nn; i++) {
            float ar = z[i].re, ai = -z[i].im, br = fi[i].re, bi = fi[i].im;
            z[i].re = ar * br - ai * bi;
            z[i].im = ar * bi + ai * br;
        }
        fft2_run(&f, z, 1);
        double norm = 1.0 / (double)nn;
        vfy_reg best[2];
        best[0].coarse = best[1].coarse = -2;
        for (uint32_t dy = 0; dy + ch <= hc; dy++) {
            for (uint32_t dx = 0; dx + cw <= wc; dx++) {
                size_t a = (size_t)dy * (wc + 1) + dx, b = a + cw, cc = a + (size_t)ch * (wc + 1),
                       d = cc + cw;
                double s1 = i1[d] - i1[b] - i1[cc] + i1[a];
                double s2 = i2[d] - i2[b] - i2[cc] + i2[a];
                double var = s2 - s1 * s1 / n;
                if (var <= 1e-6 * n) {
                    continue;
                }
                double sv = sqrt(var);
                double v1 = z[(size_t)dy * nx + dx].re * norm / (sqrt(e1) * sv);
                double v2 = -z[(size_t)dy * nx + dx].im * norm / (sqrt(e2) * sv);
                for (int m = 0; m < 2; m++) {
                    double v = m == 0 ? v1 : v2;
                    if (v > best[m].coarse) {
                        best[m].coarse = v;
                        best[m].ox = dx;
                        best[m].oy = dy;
                    }
                }
            }
        }
        for (int m = 0; m < 2; m++) {
            if (best[m].coarse <= -2) {
                continue;
            }
            /* template pixel t (unclipped) is coarse pixel t - x0 + dx; the
             * template holds the suspect at gs.scale template px per px */
            vfy_reg g;
            g.scale = c / gs.scale;
            g.ox = (best[m].ox - x0) / c;
            g.oy = (best[m].oy - y0) / c;
            g.mirrored = m == 1;
            if (g.mirrored) {
                /* the flipped template mirrors about tw, the map about w_s */
                g.ox += (tw - sus->w * gs.scale) / c;
            }
            g.coarse = best[m].coarse;
            g.score = -1;
            keep_cand(cands, ncand, &g, 4.0 / c);
        }
    }
done:
    fft2_free(&f);
    free(oc);
    free(fo);
    free(i1);
    free(i2);
    av_free(fi);
    av_free(z);
    free(tpl);
    free(tf);
    return st;
}

ct_status vfy_register(ct_ctx *ctx, const vfy_gray *orig, const vfy_gray *sus, vfy_reg *out)
{
    ct_status st;
    pyr p = {0};
    slevel fine = {0}, fin = {0};
    evalbuf eb = {0};
    cand cands[NCAND];
    int ncand = 0;

    memset(out, 0, sizeof *out);
    out->score = -1;
    out->coarse = -1;
    out->scale = 1;
    if (orig->w < 32 || orig->h < 32 || sus->w < 16 || sus->h < 16) {
        return CT_OK;
    }
    st = pyr_make(ctx, orig, &p);
    if (st == CT_OK) {
        st = coarse_search(ctx, &p, sus, cands, &ncand);
    }
    if (st != CT_OK || ncand == 0) {
        goto done;
    }
    st = slevel_make(ctx, sus, FINE_SIDE, &fine);
    if (st == CT_OK) {
        st = slevel_make(ctx, sus, FINAL_SIDE, &fin);
    }
    if (st != CT_OK || fine.feat == NULL || fin.feat == NULL) {
        goto done;
    }
    size_t nmax = (size_t)fin.w * fin.h;
    eb.warped = ct_mallocarray(ctx, nmax, sizeof *eb.warped);
    eb.feat = ct_mallocarray(ctx, nmax, sizeof *eb.feat);
    eb.valid = ct_mallocarray(ctx, nmax, 1);
    if (eb.warped == NULL || eb.feat == NULL || eb.valid == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    uint32_t mo = orig->w > orig->h ? orig->w : orig->h;
    double coarse_px = mo > COARSE_SIDE ? (double)mo / COARSE_SIDE : 1.0;
    int best = -1;
    double top = -1;
    for (int i = 0; i < ncand; i++) {
        top = fmax(top, cands[i].g.coarse);
    }
    for (int i = 0; i < ncand; i++) {
        /* a candidate far below the best coarse peak is not worth a
         * refinement (the true map's coarse NCC is rarely under 0.4 of
         * the top; measured) */
        if (cands[i].g.coarse < 0.5 * top) {
            continue;
        }
        /* The ladder's 3 % steps leave the scale up to 1.5 % off, where
         * the offset's basin is narrow: scan the scale in 0.75 % steps,
         * placing the offset for each, then refine all three from the best. */
        vfy_reg start = cands[i].g;
        double cx = start.ox + 0.5 * sus->w / start.scale, cy = start.oy + 0.5 * sus->h / start.scale;
        for (int k = -2; k <= 2; k++) {
            vfy_reg t = start;
            t.scale = start.scale * exp(0.0075 * k);
            t.ox = cx - 0.5 * sus->w / t.scale;
            t.oy = cy - 0.5 * sus->h / t.scale;
            st = refine(ctx, &p, &fine, &t, 0, 0.5 * coarse_px, 16, &eb);
            if (st != CT_OK) {
                goto done;
            }
            if (k == -2 || t.score > cands[i].g.score) {
                cands[i].g = t;
            }
        }
        st = refine(ctx, &p, &fine, &cands[i].g, 0.004, 0.25 * coarse_px, 60, &eb);
        if (st != CT_OK) {
            goto done;
        }
        if (best < 0 || cands[i].g.score > cands[best].g.score) {
            best = i;
        }
    }
    if (best < 0) {
        goto done;
    }
    *out = cands[best].g;
    if (out->score > 0) {
        /* the last stage at the finer level, from a fine-level step */
        st = refine(ctx, &p, &fin, out, 0.002, 0.5 / (out->scale * fine.d), 40, &eb);
    }
done:
    pyr_free(&p);
    free(fine.feat);
    free(fin.feat);
    free(eb.warped);
    free(eb.feat);
    free(eb.valid);
    return st;
}

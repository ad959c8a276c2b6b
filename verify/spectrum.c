/* verify: the geometry search in the Fourier domain.
 *
 * The sync signal is a sum of sinusoids at integer frequencies of the
 * tile, so a marked image's power spectrum has peaks at F R(-a) g_k / P
 * (period P, angle a, mirror F, template frequencies g_k), whatever the
 * crop. The whitened spectrum is searched over (P, a, mirror) for the
 * hypothesis whose predicted peaks carry the most power (a first-order
 * template match, not the autocorrelation, which breaks first); the best
 * few are refined and their 2x2 map fitted from the peaks' centroids by
 * least squares, which also absorbs aspect changes of a few per cent. The
 * upright maps (angle 0, mirrored or not) are also searched on their own:
 * most leaks are not rotated, and a weak mark's peaks that lose to chance
 * over the whole angle range often win among upright maps alone. Larger
 * aspect changes (a 16:9 picture squeezed to 4:3, an anamorphic export)
 * move the outer peaks out of the fit's reach, so upright maps stretched
 * by up to ASPECT_MAX in either direction are searched as a third family,
 * with a short list of its own. */
#include "vfy.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <fftw3.h>

/* FFTW's planner is not thread safe; plans are made under this lock. It is
 * the library's only static state and holds no data. */
static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;

#define WHITEN_R 6     /* half-size of the whitening window, bins */
#define CLIP     16.0f /* one content peak may not outvote the template */
#define MAXF(a, b) ((a) > (b) ? (a) : (b))

typedef struct spec {
    int W, H, Wh;
    float *sw; /* whitened power, H rows of Wh */
    float *mx; /* 3x3 max of sw */
} spec;

static void spec_free(spec *s)
{
    free(s->sw);
    free(s->mx);
}

static inline float spec_at(const spec *s, const float *a, double bx, double by)
{
    if (bx < 0) {
        bx = -bx;
        by = -by;
    }
    long ix = (long)(bx + 0.5), iy = (long)floor(by + 0.5);
    if (ix >= s->Wh) {
        return 0.0f;
    }
    iy %= s->H;
    if (iy < 0) {
        iy += s->H;
    }
    return a[(size_t)iy * s->Wh + (size_t)ix];
}

/* Bilinear read of sw (for refinement). */
static float spec_interp(const spec *s, double bx, double by)
{
    if (bx < 0) {
        bx = -bx;
        by = -by;
    }
    double fx = floor(bx), fy = floor(by);
    double ax = bx - fx, ay = by - fy;
    float v00 = spec_at(s, s->sw, fx, fy), v10 = spec_at(s, s->sw, fx + 1, fy);
    float v01 = spec_at(s, s->sw, fx, fy + 1), v11 = spec_at(s, s->sw, fx + 1, fy + 1);
    return (float)((1 - ay) * ((1 - ax) * v00 + ax * v10) + ay * ((1 - ax) * v01 + ax * v11));
}


static ct_status spec_make(ct_ctx *ctx, const float *white, uint32_t w, uint32_t h, spec *s)
{
    ct_status st = CT_OK;
    float *in = NULL, *pw = NULL, *tmp = NULL;
    fftwf_complex *out = NULL;
    fftwf_plan plan = NULL;
    int W = (int)w, H = (int)h, Wh = W / 2 + 1;
    size_t n = (size_t)W * H, nh = (size_t)H * Wh;

    memset(s, 0, sizeof *s);
    in = fftwf_malloc(n * sizeof *in);
    out = fftwf_malloc(nh * sizeof *out);
    pw = ct_mallocarray(ctx, nh, sizeof *pw);
    tmp = ct_mallocarray(ctx, nh, sizeof *tmp);
    s->sw = ct_mallocarray(ctx, nh, sizeof *s->sw);
    s->mx = ct_mallocarray(ctx, nh, sizeof *s->mx);
    if (in == NULL || out == NULL || pw == NULL || tmp == NULL || s->sw == NULL || s->mx == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "out of memory for the spectrum");
        goto done;
    }
    s->W = W;
    s->H = H;
    s->Wh = Wh;
    /* The image comes whitened (whiten.c: edges and lines no longer flood
     * the spectrum; transparent pixels are NaN and count as zero); a Hann
     * window keeps the border from smearing power over every bin. */
    for (int y = 0; y < H; y++) {
        float wy = 0.5f - 0.5f * cosf(2.0f * (float)M_PI * (y + 0.5f) / H);
        for (int x = 0; x < W; x++) {
            float wx = 0.5f - 0.5f * cosf(2.0f * (float)M_PI * (x + 0.5f) / W);
            float v = white[(size_t)y * W + x];
            in[(size_t)y * W + x] = isnan(v) ? 0.0f : v * wx * wy;
        }
    }
    pthread_mutex_lock(&plan_lock);
    plan = fftwf_plan_dft_r2c_2d(H, W, in, out, FFTW_ESTIMATE);
    pthread_mutex_unlock(&plan_lock);
    if (plan == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "cannot plan the FFT");
        goto done;
    }
    fftwf_execute(plan);
    for (size_t i = 0; i < nh; i++) {
        pw[i] = out[i][0] * out[i][0] + out[i][1] * out[i][1];
    }
    /* Whitening: divide by the local mean power (box of 2R+1 bins; x
     * clamped, y periodic as the FFT is). */
    for (int y = 0; y < H; y++) {
        const float *row = pw + (size_t)y * Wh;
        double acc = 0;
        int lo = 0, hi = -1;
        for (int x = 0; x < Wh; x++) {
            int nlo = x - WHITEN_R < 0 ? 0 : x - WHITEN_R;
            int nhi = x + WHITEN_R >= Wh ? Wh - 1 : x + WHITEN_R;
            while (hi < nhi) {
                acc += row[++hi];
            }
            while (lo < nlo) {
                acc -= row[lo++];
            }
            tmp[(size_t)y * Wh + x] = (float)(acc / (hi - lo + 1));
        }
    }
    for (int x = 0; x < Wh; x++) {
        double acc = 0;
        for (int k = -WHITEN_R; k <= WHITEN_R; k++) {
            acc += tmp[(size_t)((k + H) % H) * Wh + x];
        }
        for (int y = 0; y < H; y++) {
            float m = (float)(acc / (2 * WHITEN_R + 1));
            size_t i = (size_t)y * Wh + x;
            float v = m > 0 ? pw[i] / m : 0.0f;
            s->sw[i] = v > CLIP ? CLIP : v;
            acc += tmp[(size_t)((y + WHITEN_R + 1) % H) * Wh + x];
            acc -= tmp[(size_t)((y - WHITEN_R + H) % H) * Wh + x];
        }
    }
    /* Near DC, content dominates whatever the whitening: not evidence. */
    for (int y = -3; y <= 3; y++) {
        for (int x = 0; x <= 3 && x < Wh; x++) {
            s->sw[(size_t)((y + H) % H) * Wh + x] = 0;
        }
    }
    /* 3x3 max, so a coarse step of one bin never steps over a peak. */
    for (int y = 0; y < H; y++) {
        const float *r0 = s->sw + (size_t)((y - 1 + H) % H) * Wh;
        const float *r1 = s->sw + (size_t)y * Wh;
        const float *r2 = s->sw + (size_t)((y + 1) % H) * Wh;
        for (int x = 0; x < Wh; x++) {
            int xa = x > 0 ? x - 1 : x, xb = x + 1 < Wh ? x + 1 : x;
            float m = MAXF(r0[xa], MAXF(r0[x], r0[xb]));
            m = MAXF(m, MAXF(r1[xa], MAXF(r1[x], r1[xb])));
            m = MAXF(m, MAXF(r2[xa], MAXF(r2[x], r2[xb])));
            s->mx[(size_t)y * Wh + x] = m;
        }
    }
done:
    if (plan != NULL) {
        pthread_mutex_lock(&plan_lock);
        fftwf_destroy_plan(plan);
        pthread_mutex_unlock(&plan_lock);
    }
    fftwf_free(in);
    fftwf_free(out);
    free(pw);
    free(tmp);
    if (st != CT_OK) {
        spec_free(s);
    }
    return st;
}

/* The families of maps searched. */
enum { FAM_ANY, FAM_UPRIGHT, FAM_ASPECT };

typedef struct hyp {
    double logp, ang;
    double la; /* log of the aspect change: width over height scale */
    int mirror;
    double score;
    int fam; /* upright and aspect maps are always handed on */
} hyp;

/* The pixel -> cell map of a hypothesis (P, angle, mirror, aspect): ax,
 * ay = exp(-la / 2), exp(la / 2), the picture stretched by 1/ax across
 * and 1/ay down about P's geometric mean. */
static void map_from(double P, double ang, int mirror, double la, double b[2][2])
{
    /* cell = (64/P) R(ang) F diag(ax, ay) pixel */
    double k = WM_CELLS / P, c = cos(ang), sn = sin(ang), f = mirror ? -1 : 1;
    double ax = exp(-0.5 * la), ay = 1.0 / ax;
    b[0][0] = k * c * f * ax;
    b[0][1] = -k * sn * ay;
    b[1][0] = k * sn * f * ax;
    b[1][1] = k * c * ay;
}

/* Predicted bin of template frequency k under the map b: f = B^T g / 64. */
static inline void predict(const spec *s, const wm_sync *sy, int k, const double b[2][2],
                           double *bx, double *by)
{
    *bx = (b[0][0] * sy->p[k] + b[1][0] * sy->q[k]) / WM_CELLS * s->W;
    *by = (b[0][1] * sy->p[k] + b[1][1] * sy->q[k]) / WM_CELLS * s->H;
}

static double score_at(const spec *s, const wm_sync *sy, const float *arr, double P, double ang,
                       int mirror, double la, bool interp)
{
    double b[2][2], acc = 0;
    map_from(P, ang, mirror, la, b);
    for (int k = 0; k < WM_SYNC_K; k++) {
        double bx, by;
        predict(s, sy, k, b, &bx, &by);
        acc += interp ? spec_interp(s, bx, by) : spec_at(s, arr, bx, by);
    }
    return acc / WM_SYNC_K;
}

#define MAX_ANGLE (10.5 * M_PI / 180.0)
#define TOPN      12
#define TOPU      VFY_UPRIGHT
#define TOPA      VFY_ASPECT
/* Aspect changes searched: up to this factor either way (4:3 from 16:9
 * is 0.75); up to ASPECT_FIT the upright search and the fit cover it. */
#define ASPECT_MAX 1.45
#define ASPECT_FIT 1.04

static void keep_top(hyp *top, int *n, int cap, const hyp *h, double dl, double da)
{
    /* Non-maximum suppression: one entry per neighbourhood (angle and
     * aspect steps are da and 2 da). */
    for (int i = 0; i < *n; i++) {
        if (top[i].mirror == h->mirror && fabs(top[i].logp - h->logp) < 4 * dl &&
            fabs(top[i].ang - h->ang) < 4 * da && fabs(top[i].la - h->la) < 8 * da) {
            if (h->score > top[i].score) {
                top[i] = *h;
            }
            return;
        }
    }
    if (*n < cap) {
        top[(*n)++] = *h;
        return;
    }
    int worst = 0;
    for (int i = 1; i < *n; i++) {
        if (top[i].score < top[worst].score) {
            worst = i;
        }
    }
    if (h->score > top[worst].score) {
        top[worst] = *h;
    }
}

/* Fit the 2x2 frequency map from the peaks near their predicted places:
 * f_k ~ M g_k, with M = B^T / 64 and B the pixel -> cell map. */
static bool fit_map(const spec *s, const wm_sync *sy, double P, double ang, int mirror,
                    double la, double b[2][2])
{
    double m0[2][2];
    map_from(P, ang, mirror, la, m0);
    double sgg[2][2] = {{0, 0}, {0, 0}}, sfg[2][2] = {{0, 0}, {0, 0}};
    int used = 0;
    for (int k = 0; k < WM_SYNC_K; k++) {
        double bx, by;
        predict(s, sy, k, m0, &bx, &by);
        double sign = 1;
        if (bx < 0) {
            bx = -bx;
            by = -by;
            sign = -1;
        }
        long ix = lround(bx), iy = lround(by);
        double wsum = 0, mx = 0, my = 0, peak = 0;
        for (long dy = -2; dy <= 2; dy++) {
            for (long dx = -2; dx <= 2; dx++) {
                float v = spec_at(s, s->sw, (double)(ix + dx), (double)(iy + dy));
                peak = fmax(peak, v);
                double e = v - 1.5; /* above the whitened floor */
                if (e > 0) {
                    wsum += e;
                    mx += e * (double)(ix + dx);
                    my += e * (double)(iy + dy);
                }
            }
        }
        if (peak < 5.0 || wsum <= 0) {
            continue;
        }
        double fx = sign * (mx / wsum) / s->W, fy = sign * (my / wsum) / s->H;
        double g[2] = {sy->p[k], sy->q[k]}, f[2] = {fx, fy};
        double wt = peak;
        for (int i = 0; i < 2; i++) {
            for (int j = 0; j < 2; j++) {
                sgg[i][j] += wt * g[i] * g[j];
                sfg[i][j] += wt * f[i] * g[j];
            }
        }
        used++;
    }
    if (used < 8) {
        return false;
    }
    double det = sgg[0][0] * sgg[1][1] - sgg[0][1] * sgg[1][0];
    if (fabs(det) < 1e-9) {
        return false;
    }
    double inv[2][2] = {{sgg[1][1] / det, -sgg[0][1] / det}, {-sgg[1][0] / det, sgg[0][0] / det}};
    double m[2][2];
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 2; j++) {
            m[i][j] = sfg[i][0] * inv[0][j] + sfg[i][1] * inv[1][j];
        }
    }
    /* B = 64 M^T */
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 2; j++) {
            b[i][j] = WM_CELLS * m[j][i];
        }
    }
    return true;
}


ct_status vfy_sync_search(ct_ctx *ctx, const float *white, uint32_t w, uint32_t h,
                          const wm_sync *sync, double pmin, double pmax, vfy_geom *cands, int max,
                          int *ncands)
{
    spec s;
    hyp top[TOPN + TOPU + TOPA], upr[TOPU], asp[TOPA];
    int ntop = 0, nup = 0, nasp = 0;
    *ncands = 0;
    ct_status st = spec_make(ctx, white, w, h, &s);
    if (st != CT_OK) {
        return st;
    }
    double big = (double)(s.W > s.H ? s.W : s.H);
    const double la_max = log(ASPECT_MAX), la_fit = log(ASPECT_FIT);
    /* The outermost peak moves about one bin per step (of angle; an
     * aspect step of twice that moves it as far). The upright maps are
     * also kept in a list of their own: a few hundred hypotheses instead
     * of some 10^5, so their best faces far fewer chance peaks; the
     * stretched ones in another, as many as the rotated ones. */
    for (double lp = log(pmax); lp >= log(pmin);) {
        double P = exp(lp);
        double step = P / (WM_SYNC_RMAX * big);
        for (int m = 0; m < 2; m++) {
            for (double a = -MAX_ANGLE; a <= MAX_ANGLE; a += step) {
                hyp hh = {lp, a, 0.0, m, score_at(&s, sync, s.mx, P, a, m, 0.0, false), FAM_ANY};
                if (ntop < TOPN || hh.score > top[ntop - 1].score - 1e9) {
                    keep_top(top, &ntop, TOPN, &hh, step, step);
                }
            }
            /* Upright, or turned a quarter (a portrait export, a viewer's
             * rotate button); half turns have the same spectrum, and the
             * fold tells them apart (detect.c). */
            for (int q = 0; q < 2; q++) {
                double a = q * M_PI / 2;
                hyp hu = {lp, a, 0.0, m, score_at(&s, sync, s.mx, P, a, m, 0.0, false),
                          FAM_UPRIGHT};
                keep_top(upr, &nup, TOPU, &hu, step, step);
            }
            for (double la = la_fit; la <= la_max; la += 2 * step) {
                for (int sg = -1; sg <= 1; sg += 2) {
                    hyp ha = {lp, 0.0, sg * la, m,
                              score_at(&s, sync, s.mx, P, 0.0, m, sg * la, false), FAM_ASPECT};
                    keep_top(asp, &nasp, TOPA, &ha, step, step);
                }
            }
        }
        lp -= step;
    }
    memcpy(top + ntop, upr, (size_t)nup * sizeof *upr);
    ntop += nup;
    memcpy(top + ntop, asp, (size_t)nasp * sizeof *asp);
    ntop += nasp;
    /* Refine on the unfiltered spectrum, then fit the map from the peaks:
     * in period and angle, or for a stretched map in period and aspect. */
    for (int i = 0; i < ntop; i++) {
        double P = exp(top[i].logp);
        double step = P / (WM_SYNC_RMAX * big);
        bool stretched = top[i].fam == FAM_ASPECT;
        hyp best = top[i];
        best.score = -1;
        for (int di = -6; di <= 6; di++) {
            for (int dj = -6; dj <= 6; dj++) {
                double lp = top[i].logp + di * step / 4;
                double a = stretched ? top[i].ang : top[i].ang + dj * step / 4;
                double la = stretched ? top[i].la + dj * step / 2 : top[i].la;
                double sc = score_at(&s, sync, s.sw, exp(lp), a, top[i].mirror, la, true);
                if (sc > best.score) {
                    best.logp = lp;
                    best.ang = a;
                    best.la = la;
                    best.score = sc;
                }
            }
        }
        top[i] = best;
    }
    /* Refinement can walk two entries onto one peak: keep the better
     * (handed on if either was). */
    for (int i = 0; i < ntop; i++) {
        for (int j = i + 1; j < ntop; j++) {
            double step = exp(top[i].logp) / (WM_SYNC_RMAX * big);
            if (top[i].mirror == top[j].mirror && fabs(top[i].logp - top[j].logp) < 2 * step &&
                fabs(top[i].ang - top[j].ang) < 2 * step &&
                fabs(top[i].la - top[j].la) < 4 * step) {
                int fam = top[i].fam != FAM_ANY ? top[i].fam : top[j].fam;
                if (top[j].score > top[i].score) {
                    top[i] = top[j];
                }
                top[i].fam = fam;
                top[j] = top[--ntop];
                j--;
            }
        }
    }
    /* Best first. */
    for (int i = 0; i < ntop; i++) {
        for (int j = i + 1; j < ntop; j++) {
            if (top[j].score > top[i].score) {
                hyp t = top[i];
                top[i] = top[j];
                top[j] = t;
            }
        }
    }
    /* The best `max` of the whole search, then the upright and stretched
     * ones not among them. */
    int ngot = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < ntop; i++) {
            bool take = pass == 0 ? (top[i].fam == FAM_ANY && ngot < max) : top[i].fam != FAM_ANY;
            if (!take) {
                continue;
            }
            ngot += pass == 0;
            vfy_geom *g = &cands[(*ncands)++];
            double P = exp(top[i].logp);
            if (!fit_map(&s, sync, P, top[i].ang, top[i].mirror, top[i].la, g->b)) {
                map_from(P, top[i].ang, top[i].mirror, top[i].la, g->b);
            }
            g->score = top[i].score;
            g->upright = top[i].fam != FAM_ANY;
        }
    }
    spec_free(&s);
    return CT_OK;
}

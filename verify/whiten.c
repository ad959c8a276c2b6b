/* verify: the whitening both the geometry search and the folding use.
 *
 * A matched filter weighs each pixel by the mark it can carry over the
 * noise it has: e = r * A / (s^2 + s0^2), where r is the pixel minus its
 * local mean (a wide window, so the sync band passes), s^2 the local
 * variance of r (content noise), and A the embedder's own budget for that
 * pixel, recomputed from the suspect with wm_mask (the same rule). Ink
 * lines and edges (large s, small A/s^2) then weigh almost nothing and the
 * flat fills of a cel, where the mark is clean, weigh most. */
#include "vfy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Floor of the noise: rounding to whole levels and mild compression. */
#define S0_SQ 0.5f

/* Box mean over (2r+1)^2, windows clamped at the borders. Separable running
 * sums: a row pass, then a pass that adds and drops whole rows, so every
 * loop walks memory in order. `col` holds w doubles, `tmp` w*h floats. */
static void box_filter(const float *src, uint32_t w, uint32_t h, int r, double *col, float *tmp,
                       float *dst, bool square)
{
    for (uint32_t y = 0; y < h; y++) {
        const float *in = src + (size_t)y * w;
        float *o = tmp + (size_t)y * w;
        double acc = 0;
        long lo = 0, hi = -1;
        for (uint32_t x = 0; x < w; x++) {
            long nlo = (long)x - r < 0 ? 0 : (long)x - r;
            long nhi = (long)x + r >= (long)w ? (long)w - 1 : (long)x + r;
            while (hi < nhi) {
                hi++;
                acc += square ? (double)in[hi] * in[hi] : in[hi];
            }
            while (lo < nlo) {
                acc -= square ? (double)in[lo] * in[lo] : in[lo];
                lo++;
            }
            o[x] = (float)(acc / (double)(hi - lo + 1));
        }
    }
    memset(col, 0, (size_t)w * sizeof *col);
    long lo = 0, hi = -1;
    for (uint32_t y = 0; y < h; y++) {
        long nlo = (long)y - r < 0 ? 0 : (long)y - r;
        long nhi = (long)y + r >= (long)h ? (long)h - 1 : (long)y + r;
        while (hi < nhi) {
            hi++;
            const float *row = tmp + (size_t)hi * w;
            for (uint32_t x = 0; x < w; x++) {
                col[x] += row[x];
            }
        }
        while (lo < nlo) {
            const float *row = tmp + (size_t)lo * w;
            for (uint32_t x = 0; x < w; x++) {
                col[x] -= row[x];
            }
            lo++;
        }
        float *o = dst + (size_t)y * w;
        double k = 1.0 / (double)(hi - lo + 1);
        for (uint32_t x = 0; x < w; x++) {
            o[x] = (float)(col[x] * k);
        }
    }
}

ct_status vfy_whiten(ct_ctx *ctx, const float *img, const float *weight, uint32_t w, uint32_t h,
                     int mean_r, int var_r, float *out)
{
    size_t n = (size_t)w * h;
    double *ii = ct_mallocarray(ctx, (size_t)w, sizeof *ii);
    float *tmp = ct_mallocarray(ctx, n, sizeof *tmp);
    float *m = ct_mallocarray(ctx, n, sizeof *m);
    float *amp = ct_mallocarray(ctx, n, sizeof *amp);
    float *q = ct_mallocarray(ctx, n, sizeof *q);
    ct_status st = CT_OK;
    if (ii == NULL || tmp == NULL || m == NULL || amp == NULL || q == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    wm_plane pl = {w, h, img, NULL, NULL, weight, true};
    st = wm_mask(ctx, &pl, 1.0, amp);
    if (st != CT_OK) {
        goto done;
    }
    /* The local mean is weighted by 1/(local variance): an ink line next to
     * a fill barely moves the fill's mean, so the fill's residual keeps only
     * the mark instead of a halo of the line. */
    box_filter(img, w, h, 1, ii, tmp, m, false);
    box_filter(img, w, h, 1, ii, tmp, q, true);
    for (size_t i = 0; i < n; i++) {
        float v = fmaxf(q[i] - m[i] * m[i], 0.0f);
        q[i] = 1.0f / (v + S0_SQ);
        out[i] = img[i] * q[i];
    }
    box_filter(out, w, h, mean_r, ii, tmp, m, false);
    box_filter(q, w, h, mean_r, ii, tmp, out, false);
    for (size_t i = 0; i < n; i++) {
        m[i] = m[i] / out[i];
    }
    for (size_t i = 0; i < n; i++) {
        out[i] = img[i] - m[i];
    }
    box_filter(out, w, h, var_r, ii, tmp, m, true);
    for (size_t i = 0; i < n; i++) {
        float e = out[i] * amp[i] / (fmaxf(m[i], 0.0f) + S0_SQ);
        /* Bound any one pixel's say (a few times a clean fill's). */
        e = e > 2.0f ? 2.0f : (e < -2.0f ? -2.0f : e);
        if (weight != NULL && weight[i] < 0.5f) {
            e = NAN;
        }
        out[i] = e;
    }
done:
    free(ii);
    free(m);
    free(amp);
    free(q);
    free(tmp);
    return st;
}

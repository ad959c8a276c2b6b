/* verify: the whitening both the geometry search and the folding use.
 *
 * A matched filter weighs each pixel by the mark it can carry over the
 * noise it has: e = r * A / (s^2 + s0^2), where r is the pixel minus a
 * prediction of the unmarked picture there, s^2 the local variance of r
 * (what the prediction misses), and A the embedder's own budget for that
 * pixel, recomputed from the suspect with wm_mask (the same rule).
 *
 * The prediction is a range-weighted (bilateral) mean over a sparse ring
 * of neighbours: only neighbours of about the same level count. Ink, fill
 * and paper are each predicted from themselves, so the edges between them
 * leave almost no residual, and the mark carried by lines, by the fills
 * beside them and by small figures is seen instead of being drowned by the
 * line's own contrast (measured: a small cel figure's chip evidence went
 * from z 10 to 21 with nothing else changed). */
#include "vfy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Floor of the noise: rounding to whole levels and mild compression. */
#define S0_SQ 0.5f
/* Pixels less opaque than this carry no evidence (their luma is whatever
 * the canvas held). Resizing spreads thin lines into faint alpha whose
 * luma still carries the full mark (alpha-weighted filters), so the bar is
 * low: measured on line art on a transparent canvas shrunk to a quarter,
 * the chip evidence went from nothing at 0.5 to z 26 at 0.1. */
#define VIS_MIN 0.1f

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

/* Range kernel: a biweight (1 - d^2 / RANGE_CUT^2)^2, zero past RANGE_CUT
 * levels; close to a Gaussian of sigma 4 levels and, unlike it, a few
 * multiplies that vectorise. */
#define RANGE_CUT 10.0f
/* Ring radii (pixels) and taps per ring: 8 directions, each ring turned a
 * little against the last so the taps do not line up. */
static const int RING_R[] = {2, 4, 7, 11};
#define NRING ((int)(sizeof RING_R / sizeof RING_R[0]))
#define MAX_TAPS (8 * NRING)

/* One output row at a time, one tap at a time along the row: every inner
 * loop is a straight pass over contiguous floats. sw and sv hold w floats;
 * vis (w floats, or NULL without alpha) is 1 where a pixel counts. */
static void predict(const float *restrict img, const float *restrict vis, uint32_t w, uint32_t h,
                    int mean_r, float *restrict sw, float *restrict sv, float *restrict pred)
{
    int dx[MAX_TAPS], dy[MAX_TAPS], nt = 0;
    for (int r = 0; r < NRING; r++) {
        if (RING_R[r] > mean_r && r > 0) {
            break;
        }
        for (int a = 0; a < 8; a++) {
            double th = a * M_PI / 4.0 + r * 0.39;
            dx[nt] = (int)lround(RING_R[r] * cos(th));
            dy[nt] = (int)lround(RING_R[r] * sin(th));
            nt++;
        }
    }
    const float inv = 1.0f / (RANGE_CUT * RANGE_CUT);
    for (uint32_t y = 0; y < h; y++) {
        const float *restrict c = img + (size_t)y * w;
        for (uint32_t x = 0; x < w; x++) {
            sw[x] = 1.0f;
            sv[x] = c[x];
        }
        for (int t = 0; t < nt; t++) {
            long yy = (long)y + dy[t];
            if (yy < 0 || yy >= (long)h) {
                continue;
            }
            long x0 = dx[t] < 0 ? -dx[t] : 0, x1 = dx[t] > 0 ? (long)w - dx[t] : (long)w;
            const float *restrict q = img + (size_t)yy * w + dx[t];
            if (vis != NULL) {
                const float *restrict v = vis + (size_t)yy * w + dx[t];
                for (long x = x0; x < x1; x++) {
                    float d = q[x] - c[x], k = 1.0f - d * d * inv;
                    k = 0.5f * (k + fabsf(k)); /* max(k, 0) without a branch */
                    k = k * k * v[x];
                    sw[x] += k;
                    sv[x] += k * q[x];
                }
            } else {
                for (long x = x0; x < x1; x++) {
                    float d = q[x] - c[x], k = 1.0f - d * d * inv;
                    k = 0.5f * (k + fabsf(k));
                    k = k * k;
                    sw[x] += k;
                    sv[x] += k * q[x];
                }
            }
        }
        float *o = pred + (size_t)y * w;
        for (uint32_t x = 0; x < w; x++) {
            o[x] = sv[x] / sw[x];
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
    float *rows = ct_mallocarray(ctx, 2 * (size_t)w, sizeof *rows);
    ct_status st = CT_OK;
    if (ii == NULL || tmp == NULL || m == NULL || amp == NULL || rows == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    wm_plane pl = {w, h, img, NULL, NULL, weight, true, 1, NULL, NULL};
    st = wm_mask(ctx, &pl, 1.0, amp);
    if (st != CT_OK) {
        goto done;
    }
    if (weight != NULL) {
        for (size_t i = 0; i < n; i++) {
            tmp[i] = weight[i] >= VIS_MIN ? 1.0f : 0.0f;
        }
    }
    predict(img, weight != NULL ? tmp : NULL, w, h, mean_r, rows, rows + w, m);
    for (size_t i = 0; i < n; i++) {
        out[i] = img[i] - m[i];
    }
    box_filter(out, w, h, var_r, ii, tmp, m, true);
    for (size_t i = 0; i < n; i++) {
        float e = out[i] * amp[i] / (fmaxf(m[i], 0.0f) + S0_SQ);
        /* Bound any one pixel's say (a few times a clean fill's). */
        e = e > 2.0f ? 2.0f : (e < -2.0f ? -2.0f : e);
        if (weight != NULL && weight[i] < VIS_MIN) {
            e = NAN;
        }
        out[i] = e;
    }
done:
    free(ii);
    free(m);
    free(amp);
    free(tmp);
    free(rows);
    return st;
}

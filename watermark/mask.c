/* watermark: the perceptual budget, in luma levels per pixel.
 *
 * Contrast masking after SSIM: a change of RMS a in a window of local
 * standard deviation s keeps SSIM's structure term near
 * (2 s^2 + C2) / (2 s^2 + a^2 + C2). Setting a^2 = KAPPA (2 s^2 + C2) holds
 * that term at 1/(1+KAPPA) (about 0.99) everywhere: more mark in texture,
 * paper grain and along lines, less in smooth areas.
 *
 * Flat fills: where the original varies by at most a level over 9x9
 * pixels the eye sees any texture, so the budget there is a hard, small
 * cap, reached gradually as the 9x9 range grows, so smooth gradients are
 * treated almost like fills. The local deviation uses only a 3x3 window,
 * so a line lends its budget to at most one pixel on either side of it and
 * never mottles the fill beside it. */
#include "wm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KAPPA   0.012f
#define C2      58.5225f /* (0.03 * 255)^2, SSIM's constant */
#define A_MAX   4.0f
#define A_FLAT  0.45f
#define FLAT_RANGE 1.0f
#define RAMP_RANGE 4.0f

/* Running max and min over windows of 2r+1 along a line of n samples
 * (van Herk / Gil-Werman: three comparisons per sample whatever r). */
static void run_minmax(const float *in, size_t stride, size_t n, int r, float *mx, float *mn,
                       float *g, float *hbuf, float *g2, float *h2)
{
    size_t win = (size_t)(2 * r + 1);
    for (size_t i = 0; i < n; i++) {
        float v = in[i * stride];
        if (i % win == 0) {
            g[i] = v;
            g2[i] = v;
        } else {
            g[i] = fmaxf(g[i - 1], v);
            g2[i] = fminf(g2[i - 1], v);
        }
    }
    for (size_t k = n; k-- > 0;) {
        float v = in[k * stride];
        if (k == n - 1 || (k + 1) % win == 0) {
            hbuf[k] = v;
            h2[k] = v;
        } else {
            hbuf[k] = fmaxf(hbuf[k + 1], v);
            h2[k] = fminf(h2[k + 1], v);
        }
    }
    for (size_t i = 0; i < n; i++) {
        size_t lo = i >= (size_t)r ? i - (size_t)r : 0;
        size_t hi = i + (size_t)r < n ? i + (size_t)r : n - 1;
        /* [lo, hi] spans at most two blocks: suffix max of lo's block and
         * prefix max up to hi. */
        if (lo / win == hi / win) {
            float a = in[lo * stride], b = a;
            for (size_t k = lo; k <= hi; k++) {
                a = fmaxf(a, in[k * stride]);
                b = fminf(b, in[k * stride]);
            }
            mx[i] = a;
            mn[i] = b;
        } else {
            mx[i] = fmaxf(hbuf[lo], g[hi]);
            mn[i] = fminf(h2[lo], g2[hi]);
        }
    }
}

ct_status wm_mask(ct_ctx *ctx, const wm_plane *pl, double strength, float *amp)
{
    ct_status st = CT_OK;
    uint32_t w = pl->w, h = pl->h;
    size_t npix = (size_t)w * h;
    size_t line = w > h ? w : h;
    float *rmax = ct_mallocarray(ctx, npix, sizeof *rmax);
    float *rmin = ct_mallocarray(ctx, npix, sizeof *rmin);
    float *tmp = ct_mallocarray(ctx, line * 8, sizeof *tmp);
    const float *y = pl->y;

    if (rmax == NULL || rmin == NULL || tmp == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    float *g = tmp, *hb = tmp + line, *g2 = tmp + 2 * line, *h2 = tmp + 3 * line;
    float *cmx = tmp + 4 * line, *cmn = tmp + 5 * line, *c2 = tmp + 6 * line, *c3 = tmp + 7 * line;
    /* 9x9 range: rows, then columns of the row results. */
    for (uint32_t r = 0; r < h; r++) {
        run_minmax(y + (size_t)r * w, 1, w, 4, rmax + (size_t)r * w, rmin + (size_t)r * w, g, hb,
                   g2, h2);
    }
    for (uint32_t c = 0; c < w; c++) {
        run_minmax(rmax + c, w, h, 4, cmx, c2, g, hb, g2, h2);
        run_minmax(rmin + c, w, h, 4, c3, cmn, g, hb, g2, h2);
        for (uint32_t r = 0; r < h; r++) {
            rmax[(size_t)r * w + c] = cmx[r] - cmn[r]; /* now the range */
        }
    }
    float sflat = (float)(A_FLAT * strength), smax = (float)(A_MAX * strength);
    float sk = (float)(strength * strength) * KAPPA;
    for (uint32_t r = 0; r < h; r++) {
        uint32_t r0 = r > 0 ? r - 1 : r, r1 = r + 1 < h ? r + 1 : r;
        for (uint32_t c = 0; c < w; c++) {
            uint32_t c0 = c > 0 ? c - 1 : c, c1 = c + 1 < w ? c + 1 : c;
            float s1 = 0, s2 = 0;
            int n = 0;
            for (uint32_t rr = r0; rr <= r1; rr++) {
                const float *row = y + (size_t)rr * w;
                for (uint32_t cc = c0; cc <= c1; cc++) {
                    s1 += row[cc];
                    s2 += row[cc] * row[cc];
                    n++;
                }
            }
            float mean = s1 / n;
            float var = fmaxf(s2 / n - mean * mean, 0.0f);
            float a = sqrtf(sk * (2.0f * var + C2));
            if (a > smax) {
                a = smax;
            }
            float range = rmax[(size_t)r * w + c];
            float t = (range - FLAT_RANGE) / (RAMP_RANGE - FLAT_RANGE);
            t = t < 0 ? 0 : (t > 1 ? 1 : t);
            float capped = sflat + (a - sflat) * t;
            if (capped < a) {
                a = capped;
            }
            if (pl->weight != NULL && pl->weight[(size_t)r * w + c] <= 0.0f) {
                a = 0;
            }
            amp[(size_t)r * w + c] = a;
        }
    }
done:
    free(rmax);
    free(rmin);
    free(tmp);
    return st;
}

void wm_quality(const wm_plane *pl, const float *delta, double *psnr, double *ssim)
{
    uint32_t w = pl->w, h = pl->h;
    double se = 0;
    size_t n = 0;
    for (size_t i = 0; i < (size_t)w * h; i++) {
        if (pl->weight != NULL && pl->weight[i] <= 0.0f) {
            continue;
        }
        se += (double)delta[i] * delta[i];
        n++;
    }
    *psnr = se == 0 || n == 0 ? 99.0 : 10.0 * log10(255.0 * 255.0 / (se / n));
    /* Mean SSIM over 8x8 windows with stride 4 (Wang et al. use an 11x11
     * Gaussian; this is the common fast approximation). */
    const double c1 = 6.5025, c2 = 58.5225;
    double acc = 0;
    size_t nw = 0;
    for (uint32_t by = 0; by + 8 <= h; by += 4) {
        for (uint32_t bx = 0; bx + 8 <= w; bx += 4) {
            double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
            int vis = 0;
            for (uint32_t yy = by; yy < by + 8; yy++) {
                for (uint32_t xx = bx; xx < bx + 8; xx++) {
                    size_t i = (size_t)yy * w + xx;
                    if (pl->weight == NULL || pl->weight[i] > 0.0f) {
                        vis++;
                    }
                    double a = pl->y[i], b = pl->y[i] + delta[i];
                    sx += a;
                    sy += b;
                    sxx += a * a;
                    syy += b * b;
                    sxy += a * b;
                }
            }
            if (vis == 0) {
                continue;
            }
            double mx = sx / 64, my = sy / 64;
            double vx = sxx / 64 - mx * mx, vy = syy / 64 - my * my, cxy = sxy / 64 - mx * my;
            acc += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
            nw++;
        }
    }
    *ssim = nw == 0 ? 1.0 : acc / nw;
}

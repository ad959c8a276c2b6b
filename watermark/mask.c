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
 * treated almost like fills; a pixel whose own 3x3 neighbourhood varies by
 * at most a level keeps the cap whatever lies further off. The local
 * deviation uses only a 3x3 window, so a line lends its budget to at most
 * one pixel on either side of it and never mottles the fill beside it. */
#include "wm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KAPPA   0.03f
#define C2      58.5225f /* (0.03 * 255)^2, SSIM's constant */
#define A_MAX   4.0f
/* In flat areas: dithered whole levels (gray, JPEG) reach an RMS of about
 * sqrt(0.8 A), so A stays at 0.45 to keep under 0.7; output that holds
 * fractional luma (16-bit, RGB split over channels) adds no dither. */
#define A_FLAT      0.45f
#define A_FLAT_FINE 0.6f
#define FLAT_RANGE 1.0f
#define RAMP_RANGE 4.0f
#define BACKDROP   128.0f
#define ALPHA_GAIN_MIN 0.5f

/* Plain comparisons: fmaxf/fminf are NaN-aware library calls here. */
#define MAXF(a, b) ((a) > (b) ? (a) : (b))
#define MINF(a, b) ((a) < (b) ? (a) : (b))

/* 3x3 max and min in place of src -> dst (borders clamped). Four rounds
 * give the 9x9 max and min; every loop runs along rows, so the compiler
 * vectorises it and the cache is happy (a column pass is not). */
static void minmax3(const float *mx_in, const float *mn_in, float *mx_out, float *mn_out,
                    float *tmx, float *tmn, uint32_t w, uint32_t h)
{
    for (uint32_t y = 0; y < h; y++) {
        const float *a = mx_in + (size_t)y * w, *b = mn_in + (size_t)y * w;
        float *o = tmx + (size_t)y * w, *p = tmn + (size_t)y * w;
        o[0] = MAXF(a[0], a[w > 1 ? 1 : 0]);
        p[0] = MINF(b[0], b[w > 1 ? 1 : 0]);
        for (uint32_t x = 1; x + 1 < w; x++) {
            o[x] = MAXF(MAXF(a[x - 1], a[x]), a[x + 1]);
            p[x] = MINF(MINF(b[x - 1], b[x]), b[x + 1]);
        }
        if (w > 1) {
            o[w - 1] = MAXF(a[w - 2], a[w - 1]);
            p[w - 1] = MINF(b[w - 2], b[w - 1]);
        }
    }
    for (uint32_t y = 0; y < h; y++) {
        const float *u = tmx + (size_t)(y > 0 ? y - 1 : y) * w, *c = tmx + (size_t)y * w;
        const float *d = tmx + (size_t)(y + 1 < h ? y + 1 : y) * w;
        const float *u2 = tmn + (size_t)(y > 0 ? y - 1 : y) * w, *c2 = tmn + (size_t)y * w;
        const float *d2 = tmn + (size_t)(y + 1 < h ? y + 1 : y) * w;
        float *o = mx_out + (size_t)y * w, *p = mn_out + (size_t)y * w;
        for (uint32_t x = 0; x < w; x++) {
            o[x] = MAXF(MAXF(u[x], c[x]), d[x]);
            p[x] = MINF(MINF(u2[x], c2[x]), d2[x]);
        }
    }
}

double wm_flat_cap(bool fine)
{
    return fine ? A_FLAT_FINE : A_FLAT;
}

ct_status wm_mask(ct_ctx *ctx, const wm_plane *pl, double strength, float *amp)
{
    ct_status st = CT_OK;
    uint32_t w = pl->w, h = pl->h;
    size_t npix = (size_t)w * h;
    float *rmax = ct_mallocarray(ctx, npix, sizeof *rmax);
    float *rmin = ct_mallocarray(ctx, npix, sizeof *rmin);
    float *tmx = ct_mallocarray(ctx, npix, sizeof *tmx);
    float *tmn = ct_mallocarray(ctx, npix, sizeof *tmn);
    const float *y = pl->y;
    float *seen = NULL;

    if (rmax == NULL || rmin == NULL || tmx == NULL || tmn == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    /* With alpha, what is seen is the colour laid over whatever lies
     * behind: ink lines drawn as black with an anti-aliased alpha are flat
     * in luma and lines only once composited. Mask what is seen, over a
     * mid-grey backdrop (it gives both dark and light figures their edges). */
    if (pl->weight != NULL) {
        seen = ct_mallocarray(ctx, npix, sizeof *seen);
        if (seen == NULL) {
            st = CT_ERR_NOMEM;
            goto done;
        }
        for (size_t i = 0; i < npix; i++) {
            float a = pl->weight[i];
            seen[i] = a * y[i] + (1.0f - a) * BACKDROP;
        }
        y = seen;
    }
    /* 9x9 range: four rounds of 3x3. */
    minmax3(y, y, rmax, rmin, tmx, tmn, w, h);
    for (size_t i = 0; i < npix; i++) {
        amp[i] = rmax[i] - rmin[i]; /* 3x3 range, until amp is written */
    }
    for (int round = 1; round < 4; round++) {
        minmax3(rmax, rmin, rmax, rmin, tmx, tmn, w, h);
    }
    for (size_t i = 0; i < npix; i++) {
        rmax[i] -= rmin[i]; /* now the range */
    }
    /* 3x3 mean and variance, separably (edge pixels repeated), into tmx
     * (sum) and tmn (sum of squares). */
    for (uint32_t r = 0; r < h; r++) {
        const float *a = y + (size_t)r * w;
        float *o1 = rmin + (size_t)r * w; /* rmin is free now: row sums */
        float *o2 = tmn + (size_t)r * w;
        for (uint32_t c = 0; c < w; c++) {
            float l = a[c > 0 ? c - 1 : c], m = a[c], rr = a[c + 1 < w ? c + 1 : c];
            o1[c] = l + m + rr;
            o2[c] = l * l + m * m + rr * rr;
        }
    }
    float sflat = (float)((pl->fine ? A_FLAT_FINE : A_FLAT) * strength), smax = (float)(A_MAX * strength);
    float sk = (float)(strength * strength) * KAPPA;
    for (uint32_t r = 0; r < h; r++) {
        const size_t u = (size_t)(r > 0 ? r - 1 : r) * w, c0 = (size_t)r * w;
        const size_t d = (size_t)(r + 1 < h ? r + 1 : r) * w;
        for (uint32_t c = 0; c < w; c++) {
            float s1 = rmin[u + c] + rmin[c0 + c] + rmin[d + c];
            float s2 = tmn[u + c] + tmn[c0 + c] + tmn[d + c];
            float mean = s1 * (1.0f / 9);
            float var = MAXF(s2 * (1.0f / 9) - mean * mean, 0.0f);
            float a = sqrtf(sk * (2.0f * var + C2));
            a = MINF(a, smax);
            float t = (rmax[c0 + c] - FLAT_RANGE) * (1.0f / (RAMP_RANGE - FLAT_RANGE));
            t = MINF(MAXF(t, 0.0f), 1.0f);
            a = MINF(a, sflat + (a - sflat) * t);
            /* A pixel whose own 3x3 neighbourhood is flat is fill, however
             * near a line: the line lends nothing beyond its neighbours. */
            if (amp[c0 + c] <= FLAT_RANGE) {
                a = MINF(a, sflat);
            }
            tmx[c0 + c] = a;
        }
    }
    /* A partly transparent pixel shows alpha times its change: give it
     * the budget of what is seen, up to twice over. */
    for (size_t i = 0; i < npix; i++) {
        float a = pl->weight != NULL ? pl->weight[i] : 1.0f;
        amp[i] = a <= 0.0f ? 0.0f : tmx[i] / MAXF(a, ALPHA_GAIN_MIN);
    }
done:
    free(seen);
    free(rmax);
    free(rmin);
    free(tmx);
    free(tmn);
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
        double ds = (pl->weight != NULL ? pl->weight[i] : 1.0f) * delta[i];
        se += ds * ds;
        n++;
    }
    *psnr = se == 0 || n == 0 ? 99.0 : 10.0 * log10(255.0 * 255.0 / (se / n));
    /* Mean SSIM over 8x8 windows with stride 8 (Wang et al. use an 11x11
     * Gaussian; this is the common fast approximation). */
    const double c1 = 6.5025, c2 = 58.5225;
    double acc = 0;
    size_t nw = 0;
    for (uint32_t by = 0; by + 8 <= h; by += 8) {
        for (uint32_t bx = 0; bx + 8 <= w; bx += 8) {
            double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
            int vis = 0;
            for (uint32_t yy = by; yy < by + 8; yy++) {
                for (uint32_t xx = bx; xx < bx + 8; xx++) {
                    size_t i = (size_t)yy * w + xx;
                    if (pl->weight == NULL || pl->weight[i] > 0.0f) {
                        vis++;
                    }
                    /* What is seen: over the mask's backdrop with alpha. */
                    double al = pl->weight != NULL ? pl->weight[i] : 1.0;
                    double a = al * pl->y[i] + (1.0 - al) * BACKDROP;
                    double b = a + al * delta[i];
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

/* media: the picture's global translation from one video frame to the
 * next, for a mark that follows a camera pan.
 *
 * Why: a mark fixed to the frame is, on a panning shot, a new pattern in
 * every frame for the encoder: motion compensation moves the picture and
 * the residual must put the mark back. On the kid clip (x264 medium,
 * CRF 17) the fixed mark cost x264 2.2x the CPU and 3.6x the bytes of the
 * unmarked clip; moved with the pan, about 1.5x and 1.3x, and every attack
 * of issue 6 still identifies the vendor (each frame carries the whole
 * tile, only placed elsewhere). What is left is the mark's own detail,
 * which the encoder must keep at CRF 17 (a synthetic pattern of half the
 * mark's RMS, moved the same way, cost 1.1x).
 *
 * How: block-mean pyramids of the luma at 1/2 and 1/8 of the size; the
 * mean absolute difference searched over whole shifts at 1/8 (about +-48
 * pixels), refined at 1/2 by descent and at full size around that; the
 * fraction by reweighted least squares on the gradients (lk_fraction). A
 * shift is reported only when it matches the frames clearly better than
 * no shift (or, within about a level-1 pixel, when the fraction leans
 * clearly one way): a still shot, a scene cut or a picture where nothing
 * dominant moves keeps the mark where it is (dx = dy = 0 exactly, so a
 * still shot never drifts).
 *
 * The verifier runs the same estimator on the leak (med_video_scan) and
 * moves each frame back by its pan before adding frames up, so it must
 * agree on a downscaled, recompressed copy: on the kid clip re-encoded
 * at CRF 35 the summed pans stay within 0.84 px of the embedder's over
 * 192 frames (the V fit used before for the fraction drifted 29 px). */
#include "media/media.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define L1 2u       /* fine level: 1/2 */
#define L2 8u       /* coarse level: 1/8 */
#define R2 6        /* coarse search, level-2 pixels each way */
#define R1 3        /* fine search around the coarse result, level-1 pixels */
#define ROW_STEP 4u /* fine level: every 4th row is enough */
/* A shift must bring the difference below this share of the difference
 * at no shift, or there is no clear global motion. */
#define CLEAR_GAIN 0.8
/* A shift of less than a level-1 pixel counts from this fraction of one. */
#define FRAC_MIN 0.15

struct med_motion {
    uint32_t w, h;       /* frames (level 0) */
    uint32_t w1, h1;     /* level 1 */
    uint32_t w2, h2;     /* level 2 */
    float *a0, *a1, *a2; /* the previous frame's levels */
    float *b0, *b1, *b2; /* this frame's */
    float *t;            /* a row of level-1 column sums */
    bool have_prev;
};

ct_status med_motion_new(ct_ctx *ctx, uint32_t w, uint32_t h, med_motion **out)
{
    *out = NULL;
    med_motion *m = ct_calloc(ctx, 1, sizeof *m);
    if (m == NULL) {
        return CT_ERR_NOMEM;
    }
    m->w = w;
    m->h = h;
    m->w1 = w / L1;
    m->h1 = h / L1;
    m->w2 = w / L2;
    m->h2 = h / L2;
    /* Too small to say anything: the estimator always answers 0. */
    if (m->w2 >= 4 * R2 && m->h2 >= 4 * R2) {
        size_t n0 = (size_t)w * h, n1 = (size_t)m->w1 * m->h1, n2 = (size_t)m->w2 * m->h2;
        m->a0 = ct_mallocarray(ctx, n0, sizeof *m->a0);
        m->b0 = ct_mallocarray(ctx, n0, sizeof *m->b0);
        m->a1 = ct_mallocarray(ctx, n1, sizeof *m->a1);
        m->b1 = ct_mallocarray(ctx, n1, sizeof *m->b1);
        m->a2 = ct_mallocarray(ctx, n2, sizeof *m->a2);
        m->b2 = ct_mallocarray(ctx, n2, sizeof *m->b2);
        m->t = ct_mallocarray(ctx, m->w1, sizeof *m->t);
        if (m->t == NULL || m->a0 == NULL || m->b0 == NULL || m->a1 == NULL || m->b1 == NULL || m->a2 == NULL ||
            m->b2 == NULL) {
            med_motion_free(m);
            return CT_ERR_NOMEM;
        }
    }
    *out = m;
    return CT_OK;
}

void med_motion_free(med_motion *m)
{
    if (m != NULL) {
        free(m->a0);
        free(m->b0);
        free(m->a1);
        free(m->b1);
        free(m->a2);
        free(m->b2);
        free(m->t);
        free(m);
    }
}

/* Rows of the pyramid, each loop in vector lanes (CT_SIMD_CLONES): at
 * 1080p the levels were a fifth of the estimator's time. */
CT_SIMD_CLONES
static void row_from8(float *restrict o, const uint8_t *restrict s, uint32_t n)
{
    for (uint32_t x = 0; x < n; x++) {
        o[x] = (float)s[x];
    }
}

CT_SIMD_CLONES
static void row_from16(float *restrict o, const uint16_t *restrict s, uint32_t n, float k)
{
    for (uint32_t x = 0; x < n; x++) {
        o[x] = (float)s[x] * k;
    }
}

/* o[x] = the mean of the 2x2 block at (2x, 0) of the rows s0, s1. */
CT_SIMD_CLONES
static void row_halve(float *restrict o, const float *restrict s0, const float *restrict s1,
                      uint32_t n)
{
    for (uint32_t x = 0; x < n; x++) {
        o[x] = (s0[2 * x] + s0[2 * x + 1] + s1[2 * x] + s1[2 * x + 1]) * 0.25f;
    }
}

/* o[x] = the mean of the 4x4 block at (4x, 0) of the rows s, s + w, ...;
 * t (n * 4 floats) holds the column sums. */
CT_SIMD_CLONES
static void row_quarter(float *restrict o, const float *restrict s, size_t w, float *restrict t,
                        uint32_t n)
{
    const float *s1 = s + w, *s2 = s1 + w, *s3 = s2 + w;
    for (uint32_t x = 0; x < 4 * n; x++) {
        t[x] = s[x] + s1[x] + s2[x] + s3[x];
    }
    for (uint32_t x = 0; x < n; x++) {
        o[x] = (t[4 * x] + t[4 * x + 1] + t[4 * x + 2] + t[4 * x + 3]) * (1.0f / 16.0f);
    }
}

/* Level 0 (the luma in 8-bit levels) of a plane of 8-bit (depth 8) or
 * 16-bit samples; level 1 (2x2 means of it); then level 2 (4x4 means of
 * level 1). */
static void build_levels(med_motion *m, const uint8_t *y, ptrdiff_t stride, int depth)
{
    const float k = depth == 8 ? 1.0f : 1.0f / (float)(1 << (depth - 8));
    for (uint32_t r = 0; r < m->h; r++) {
        float *o = m->b0 + (size_t)r * m->w;
        const uint8_t *s0 = y + (ptrdiff_t)r * stride;
        if (depth == 8) {
            row_from8(o, s0, m->w);
        } else {
            row_from16(o, (const uint16_t *)s0, m->w, k);
        }
    }
    for (uint32_t r = 0; r < m->h1; r++) {
        const float *s0 = m->b0 + (size_t)(2 * r) * m->w;
        row_halve(m->b1 + (size_t)r * m->w1, s0, s0 + m->w, m->w1);
    }
    _Static_assert(L2 / L1 == 4, "row_quarter takes 4x4 blocks");
    const uint32_t f = L2 / L1;
    for (uint32_t r = 0; r < m->h2; r++) {
        row_quarter(m->b2 + (size_t)r * m->w2, m->b1 + (size_t)(f * r) * m->w1, m->w1, m->t,
                    m->w2);
    }
}

typedef float mv8 __attribute__((vector_size(32)));
typedef int32_t mv8i __attribute__((vector_size(32)));

/* Mean |cur(p + d) - prev(p)| over the pixels p (every `step`-th row) of
 * the window that stays inside both for any shift up to `margin`: the
 * picture moved by d from prev to cur. Eight lanes at a time (a float
 * sum in one chain does not vectorise). */
CT_SIMD_CLONES
static double mad(const float *prev, const float *cur, uint32_t w, uint32_t h, int dx, int dy,
                  uint32_t margin, uint32_t step)
{
    double t = 0;
    size_t n = 0;
    const uint32_t x0 = margin, x1 = w - margin;
    for (uint32_t r = margin; r < h - margin; r += step) {
        const float *a = prev + (size_t)r * w;
        const float *b = cur + (size_t)((long)r + dy) * w + dx;
        mv8 acc = {0};
        uint32_t x = x0;
        for (; x + 8 <= x1; x += 8) {
            mv8 va, vb;
            memcpy(&va, a + x, sizeof va);
            memcpy(&vb, b + x, sizeof vb);
            const mv8i nosign = {0}; /* |d|: the sign bit cleared */
            acc += (mv8)((mv8i)(vb - va) & ~(nosign + INT32_MIN));
        }
        float s = 0;
        for (; x < x1; x++) {
            s += fabsf(b[x] - a[x]);
        }
        for (int l = 0; l < 8; l++) {
            s += acc[l];
        }
        t += s;
        n += x1 - x0;
    }
    return n > 0 ? t / (double)n : 0.0;
}

/* The 3x3 of whole shifts around (cx, cy) into s, and which of them is
 * the smallest (bi, bj in -1..1). */
static void mad3x3(const float *prev, const float *cur, uint32_t w, uint32_t h, int cx, int cy,
                   uint32_t margin, uint32_t step, double s[3][3], int *bi, int *bj)
{
    *bi = 0;
    *bj = 0;
    for (int j = -1; j <= 1; j++) {
        for (int i = -1; i <= 1; i++) {
            s[j + 1][i + 1] = mad(prev, cur, w, h, cx + i, cy + j, margin, step);
        }
    }
    for (int j = -1; j <= 1; j++) {
        for (int i = -1; i <= 1; i++) {
            if (s[j + 1][i + 1] < s[*bj + 1][*bi + 1]) {
                *bi = i;
                *bj = j;
            }
        }
    }
}

/* The minimum of a V (two lines of equal and opposite slope) through
 * (-1, l), (0, c), (1, r), wherever it lies within a step of 0. */
static double vee(double l, double c, double r)
{
    double den = 2.0 * ((l > r ? l : r) - c);
    if (!(den > 1e-12)) {
        return 0.0;
    }
    double v = (l - r) / den;
    return v > 1.0 ? 1.0 : v < -1.0 ? -1.0 : v;
}

/* The same within half a step; 0 when c is not a minimum (the shape of a
 * mean absolute difference near its minimum). */
static double vertex(double l, double c, double r)
{
    if (c > l || c > r) {
        return 0.0;
    }
    double v = vee(l, c, r);
    return v > 0.5 ? 0.5 : v < -0.5 ? -0.5 : v;
}

#define ROW_STEP0 8u
#define LK_ITER   5     /* one least-squares pass, then reweighted ones */
#define LK_SOFT   1.0f  /* levels: residuals below this count about equally */

/* One row's sums for lk_fraction (gx gx, gx gy, gy gy, gx dt, gy dt,
 * each weighted) over x0..x1 of the rows a (previous frame) and b (this
 * one, at the whole shift), with the rows above and below at -w, +w.
 * Eight lanes, summed in the same order on every clone. */
CT_SIMD_CLONES
static void lk_row(const float *a, const float *b, size_t w, uint32_t x0, uint32_t x1, float fu,
                   float fv, bool first, float out[5])
{
    const float *au = a - w, *ad = a + w, *bu = b - w, *bd = b + w; /* rows above, below */
    mv8 axx = {0}, axy = {0}, ayy = {0}, axt = {0}, ayt = {0};
    const mv8 q = {0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f};
    const mv8 one = q * 4.0f, soft = one * LK_SOFT, vu = one * fu, vv = one * fv;
    const mv8i nosign = {0};
    uint32_t x = x0;
    for (; x + 8 <= x1; x += 8) {
        mv8 al, ar, bl, br, vau, vad, vbu, vbd, va, vb;
        memcpy(&al, a + x - 1, sizeof al);
        memcpy(&ar, a + x + 1, sizeof ar);
        memcpy(&bl, b + x - 1, sizeof bl);
        memcpy(&br, b + x + 1, sizeof br);
        memcpy(&vau, au + x, sizeof vau);
        memcpy(&vad, ad + x, sizeof vad);
        memcpy(&vbu, bu + x, sizeof vbu);
        memcpy(&vbd, bd + x, sizeof vbd);
        memcpy(&va, a + x, sizeof va);
        memcpy(&vb, b + x, sizeof vb);
        mv8 gx = q * (ar - al + br - bl);
        mv8 gy = q * (vad - vau + vbd - vbu);
        mv8 dt = va - vb;
        /* Least absolute deviations by reweighting: a pixel that the
         * current shift explains badly (what moves on its own, the
         * foreground) weighs little. */
        mv8 k = one;
        if (!first) {
            mv8 res = dt - gx * vu - gy * vv;
            k = one / ((mv8)((mv8i)res & ~(nosign + INT32_MIN)) + soft);
        }
        mv8 kx = k * gx, ky = k * gy;
        axx += kx * gx;
        axy += kx * gy;
        ayy += ky * gy;
        axt += kx * dt;
        ayt += ky * dt;
    }
    float sxx = 0, sxy = 0, syy = 0, sxt = 0, syt = 0;
    for (int l = 0; l < 8; l++) {
        sxx += axx[l];
        sxy += axy[l];
        syy += ayy[l];
        sxt += axt[l];
        syt += ayt[l];
    }
    for (; x < x1; x++) {
        float gx = 0.25f * (a[x + 1] - a[x - 1] + b[x + 1] - b[x - 1]);
        float gy = 0.25f * (ad[x] - au[x] + bd[x] - bu[x]);
        float dt = a[x] - b[x];
        float k = first ? 1.0f : 1.0f / (fabsf(dt - gx * fu - gy * fv) + LK_SOFT);
        sxx += k * gx * gx;
        sxy += k * gx * gy;
        syy += k * gy * gy;
        sxt += k * gx * dt;
        syt += k * gy * dt;
    }
    out[0] = sxx;
    out[1] = sxy;
    out[2] = syy;
    out[3] = sxt;
    out[4] = syt;
}

/* The fraction (fx, fy) of the shift beyond the whole pixels (cx, cy), by
 * symmetric Lucas-Kanade at level 0: cur(p + c + f) = prev(p) taken to
 * first order around the mean of both frames' gradients (second-order
 * accurate, so no bias toward or away from the whole pixel), in least
 * squares over every ROW_STEP0-th row. A V through the mean absolute
 * differences was biased by the picture's sharpness: a blurred or
 * downscaled copy (a leak) gave 20 % short of the true pan, which adds up
 * over the frames. False when the picture has no texture in both
 * directions. */
static bool lk_fraction(const med_motion *m, int cx, int cy, uint32_t margin, double *fx,
                        double *fy)
{
    const uint32_t w = m->w, h = m->h;
    if ((uint32_t)abs(cx) + 1 >= margin || (uint32_t)abs(cy) + 1 >= margin) {
        return false;
    }
    double u = 0, v = 0;
    for (int it = 0; it < LK_ITER; it++) {
        double sxx = 0, sxy = 0, syy = 0, sxt = 0, syt = 0;
        for (uint32_t r = margin; r < h - margin; r += ROW_STEP0) {
            const float *a = m->a0 + (size_t)r * w;
            const float *b = m->b0 + (size_t)((long)r + cy) * w + cx;
            float g[5];
            lk_row(a, b, w, margin, w - margin, (float)u, (float)v, it == 0, g);
            sxx += g[0];
            sxy += g[1];
            syy += g[2];
            sxt += g[3];
            syt += g[4];
        }
        double det = sxx * syy - sxy * sxy, tr = sxx + syy;
        if (!(tr > 0) || !(det > 1e-3 * tr * tr)) {
            return false;
        }
        u = (syy * sxt - sxy * syt) / det;
        v = (sxx * syt - sxy * sxt) / det;
        /* Past half a pixel the whole-pixel minimum would have been
         * elsewhere. */
        if (!(fabs(u) <= 0.75 && fabs(v) <= 0.75)) {
            return false;
        }
    }
    *fx = u;
    *fy = v;
    return true;
}

/* The estimate (ex, ey) made exact at level 0: the 3x3 of whole pixels
 * around it (every ROW_STEP0-th row), a step toward a better neighbour if
 * need be, and the fraction (lk_fraction, or the V when that has no
 * answer); the level-1 estimate stands if the minimum is not found within
 * a pixel of it. */
static void refine0(const med_motion *m, double ex, double ey, uint32_t margin, double *dx,
                    double *dy)
{
    int cx = (int)lrint(ex), cy = (int)lrint(ey);
    *dx = ex;
    *dy = ey;
    for (int step = 0; step < 2; step++) {
        double s[3][3];
        int bi, bj;
        mad3x3(m->a0, m->b0, m->w, m->h, cx, cy, margin, ROW_STEP0, s, &bi, &bj);
        if (bi == 0 && bj == 0) {
            double fx, fy;
            if (!lk_fraction(m, cx, cy, margin, &fx, &fy)) {
                fx = vertex(s[1][0], s[1][1], s[1][2]);
                fy = vertex(s[0][1], s[1][1], s[2][1]);
            }
            *dx = cx + fx;
            *dy = cy + fy;
            return;
        }
        cx += bi;
        cy += bj;
    }
}

void med_motion_push(med_motion *m, const uint8_t *y, ptrdiff_t stride, int depth, double *dx,
                     double *dy)
{
    *dx = 0;
    *dy = 0;
    if (m->a1 == NULL) {
        return;
    }
    build_levels(m, y, stride, depth);
    if (m->have_prev) {
        /* Coarse: whole level-2 pixels. */
        const uint32_t mg2 = R2 + 1;
        double best = INFINITY;
        int cx = 0, cy = 0;
        for (int j = -R2; j <= R2; j++) {
            for (int i = -R2; i <= R2; i++) {
                double s = mad(m->a2, m->b2, m->w2, m->h2, i, j, mg2, 2);
                if (s < best) {
                    best = s;
                    cx = i;
                    cy = j;
                }
            }
        }
        /* Fine: whole level-1 pixels, descending from the coarse result
         * to the best of each 3x3 (at most R1 steps away), then the
         * fraction from the last 3x3. */
        const int f = (int)(L2 / L1);
        const uint32_t mg1 = (uint32_t)(f * R2 + R1 + 2);
        const int sx0 = f * cx, sy0 = f * cy;
        int gx = sx0, gy = sy0;
        double s1[3][3] = {{0}};
        bool settled = false;
        for (int step = 0; step <= R1 && !settled; step++) {
            int bi, bj;
            mad3x3(m->a1, m->b1, m->w1, m->h1, gx, gy, mg1, ROW_STEP, s1, &bi, &bj);
            settled = bi == 0 && bj == 0;
            if (!settled && abs(gx + bi - sx0) < R1 && abs(gy + bj - sy0) < R1) {
                gx += bi;
                gy += bj;
            } else if (!settled) {
                break; /* walking out of the window: no clear answer */
            }
        }
        bool moved = false;
        double ex = 0, ey = 0; /* the level-1 estimate, level-1 pixels */
        if (settled && (gx != 0 || gy != 0)) {
            double s0 = mad(m->a1, m->b1, m->w1, m->h1, 0, 0, mg1, ROW_STEP);
            moved = s1[1][1] < CLEAR_GAIN * s0;
            ex = gx + vertex(s1[1][0], s1[1][1], s1[1][2]);
            ey = gy + vertex(s1[0][1], s1[1][1], s1[2][1]);
            if (!moved && abs(gx) <= 1 && abs(gy) <= 1) {
                /* Just over half a level-1 pixel: the whole pixel hardly
                 * beats none, which alone does not say "still". The V
                 * through the 3x3 around none places the minimum within
                 * a pixel of it; clearly off none, it moved. */
                int bi, bj;
                mad3x3(m->a1, m->b1, m->w1, m->h1, 0, 0, mg1, ROW_STEP, s1, &bi, &bj);
                ex = vee(s1[1][0], s1[1][1], s1[1][2]);
                ey = vee(s1[0][1], s1[1][1], s1[2][1]);
                moved = fabs(ex) >= FRAC_MIN || fabs(ey) >= FRAC_MIN;
            }
        } else if (settled) {
            /* Less than a level-1 pixel: only a fraction that leans
             * clearly to one side (a still picture's neighbours match it
             * about equally well on both sides). */
            ex = vertex(s1[1][0], s1[1][1], s1[1][2]);
            ey = vertex(s1[0][1], s1[1][1], s1[2][1]);
            moved = fabs(ex) >= FRAC_MIN || fabs(ey) >= FRAC_MIN;
        }
        if (moved) {
            refine0(m, (double)L1 * ex, (double)L1 * ey, (uint32_t)L1 * mg1, dx, dy);
        }
    }
    /* This frame is the next one's previous. */
    float *t = m->a0;
    m->a0 = m->b0;
    m->b0 = t;
    t = m->a1;
    m->a1 = m->b1;
    m->b1 = t;
    t = m->a2;
    m->a2 = m->b2;
    m->b2 = t;
    m->have_prev = true;
}

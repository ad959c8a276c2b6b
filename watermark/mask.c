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

/* Per input row, what the output rows around it need: the 3- and 9-wide
 * max and min along the row, and the 3-wide sum and sum of squares; then,
 * once its neighbours are in, the max and min of the 9-wide ones over the
 * row and the two beside it (V3). */
enum { R_MX3, R_MN3, R_MX9, R_MN9, R_S1, R_S2, R_V3X, R_V3N, R_NARR };
/* Rows kept: the 9 an output row's 9x9 window spans. */
#define RING 9

double wm_flat_cap(bool fine)
{
    return fine ? A_FLAT_FINE : A_FLAT;
}

static inline uint32_t clampu(long v, uint32_t n)
{
    return v < 0 ? 0u : (v >= (long)n ? n - 1 : (uint32_t)v);
}

/* Fill the ring slot of input row j. `a` is the row as seen; windows are
 * clamped at the borders (a border pixel counts once: max, min and the
 * sums over a window that runs off the image repeat the edge pixel, as the
 * 3x3 sums always did). */
CT_SIMD_CLONES
static void row_stats(const float *restrict a, uint32_t w, float *restrict slot)
{
    float *restrict mx3 = slot + (size_t)R_MX3 * w, *restrict mn3 = slot + (size_t)R_MN3 * w;
    float *restrict mx9 = slot + (size_t)R_MX9 * w, *restrict mn9 = slot + (size_t)R_MN9 * w;
    float *restrict s1 = slot + (size_t)R_S1 * w, *restrict s2 = slot + (size_t)R_S2 * w;
    /* Borders with clamped neighbours, the inside in a straight loop the
     * compiler vectorises. */
    for (uint32_t c = 0; c < w; c += (c == 0 && w > 2) ? w - 2 : 1) {
        float l = a[c > 0 ? c - 1 : c], m = a[c], r = a[c + 1 < w ? c + 1 : c];
        mx3[c] = MAXF(MAXF(l, m), r);
        mn3[c] = MINF(MINF(l, m), r);
        s1[c] = l + m + r;
        s2[c] = l * l + m * m + r * r;
    }
    for (uint32_t c = 1; c + 1 < w; c++) {
        float l = a[c - 1], m = a[c], r = a[c + 1];
        mx3[c] = MAXF(MAXF(l, m), r);
        mn3[c] = MINF(MINF(l, m), r);
        s1[c] = l + m + r;
        s2[c] = l * l + m * m + r * r;
    }
    /* Three 3-windows 3 apart cover the 9-window; near a border the
     * clamped centre still covers exactly the part inside the image. */
    for (uint32_t c = 0; c < w; c++) {
        if (c == 3 && w > 7) {
            for (; c + 4 < w; c++) {
                mx9[c] = MAXF(MAXF(mx3[c - 3], mx3[c]), mx3[c + 3]);
                mn9[c] = MINF(MINF(mn3[c - 3], mn3[c]), mn3[c + 3]);
            }
        }
        uint32_t lo = clampu((long)c - 3, w), hi = clampu((long)c + 3, w);
        mx9[c] = MAXF(MAXF(mx3[lo], mx3[c]), mx3[hi]);
        mn9[c] = MINF(MINF(mn3[lo], mn3[c]), mn3[hi]);
    }
}

/* out = the larger (or smaller) of a, b and c, element by element; out
 * never overlaps them (restrict: the loop vectorises). */
static inline __attribute__((always_inline)) void rows3(const float *restrict a,
                                                        const float *restrict b,
                                                        const float *restrict c,
                                                        float *restrict out, uint32_t w, bool max)
{
    if (max) {
        for (uint32_t i = 0; i < w; i++) {
            out[i] = MAXF(MAXF(a[i], b[i]), c[i]);
        }
    } else {
        for (uint32_t i = 0; i < w; i++) {
            out[i] = MINF(MINF(a[i], b[i]), c[i]);
        }
    }
}

/* The budget of one output row from its rows' statistics. */
CT_SIMD_CLONES
static void row_budget(const float *restrict x3u, const float *restrict x3c,
                       const float *restrict x3d, const float *restrict n3u,
                       const float *restrict n3c, const float *restrict n3d,
                       const float *restrict s1u, const float *restrict s1c,
                       const float *restrict s1d, const float *restrict s2u,
                       const float *restrict s2c, const float *restrict s2d,
                       const float *restrict vmx, const float *restrict vmn,
                       const float *restrict wt, float *restrict out, uint32_t w, float sk,
                       float smax, float sflat)
{
    for (uint32_t c = 0; c < w; c++) {
        float range3 = MAXF(MAXF(x3u[c], x3c[c]), x3d[c]) - MINF(MINF(n3u[c], n3c[c]), n3d[c]);
        float range9 = vmx[c] - vmn[c];
        float s1 = s1u[c] + s1c[c] + s1d[c];
        float s2 = s2u[c] + s2c[c] + s2d[c];
        float mean = s1 * (1.0f / 9);
        float var = s2 * (1.0f / 9) - mean * mean;
        /* sqrt(sk (2 max(var, 0) + C2)), to the bit, in a form GCC
         * vectorises (with -fno-math-errno, see CMakeLists.txt). */
        float a = sqrtf(MAXF(sk * (2.0f * var + C2), sk * C2));
        a = MINF(a, smax);
        float t = (range9 - FLAT_RANGE) * (1.0f / (RAMP_RANGE - FLAT_RANGE));
        t = MINF(MAXF(t, 0.0f), 1.0f);
        a = MINF(a, sflat + (a - sflat) * t);
        /* A pixel whose own 3x3 neighbourhood is flat is fill, however
         * near a line: the line lends nothing beyond its neighbours. */
        a = range3 <= FLAT_RANGE ? MINF(a, sflat) : a;
        out[c] = a;
    }
    /* A partly transparent pixel shows alpha times its change: give it
     * the budget of what is seen, up to twice over. */
    if (wt != NULL) {
        /* Divided everywhere, then zeroed where nothing is seen: in one
         * loop GCC keeps the division behind a branch per pixel, which
         * does not vectorise. */
        for (uint32_t c = 0; c < w; c++) {
            out[c] = out[c] / MAXF(wt[c], ALPHA_GAIN_MIN);
        }
        for (uint32_t c = 0; c < w; c++) {
            out[c] = wt[c] <= 0.0f ? 0.0f : out[c];
        }
    }
}

typedef struct mask_job {
    const wm_plane *pl;
    float *amp;
    wm_ceiling *ceil; /* NULL: no sums */
    float *buf; /* per band: ring, then vmx/vmn (2w), then seen (w) */
    size_t band_floats;
    float sk, smax, sflat;
} mask_job;

/* Output rows [r0, r1) of one band. */
CT_SIMD_CLONES
static void mask_band(void *arg, unsigned band)
{
    const mask_job *jb = arg;
    const wm_plane *pl = jb->pl;
    const uint32_t w = pl->w, h = pl->h;
    const uint32_t r0 = (uint32_t)((uint64_t)h * band / WM_BANDS);
    const uint32_t r1 = (uint32_t)((uint64_t)h * (band + 1) / WM_BANDS);
    float *ring = jb->buf + jb->band_floats * band;
    float *vmx = ring + (size_t)RING * R_NARR * w, *vmn = vmx + w, *seen = vmn + w;
    long done = (long)r0 - 5; /* last input row whose statistics are in the ring */
    long vdone = (long)r0 - 4; /* last input row whose V3 is in the ring */
    double sum[4] = {0};        /* the ceiling's, over this band's rows */

    for (uint32_t r = r0; r < r1; r++) {
        long j = done + 1 > 0 ? done + 1 : 0;
        for (; j <= (long)r + 4 && j < (long)h; j++) {
            const float *a = pl->y + (size_t)j * w;
            /* With alpha, what is seen is the colour laid over whatever
             * lies behind: ink lines drawn as black with an anti-aliased
             * alpha are flat in luma and lines only once composited. Mask
             * what is seen, over a mid-grey backdrop (it gives both dark
             * and light figures their edges). */
            if (pl->weight != NULL) {
                const float *wt = pl->weight + (size_t)j * w;
                for (uint32_t c = 0; c < w; c++) {
                    seen[c] = wt[c] * a[c] + (1.0f - wt[c]) * BACKDROP;
                }
                a = seen;
            }
            row_stats(a, w, ring + (size_t)(j % RING) * R_NARR * w);
        }
        done = j - 1;
#define SLOT(j, k) (ring + ((size_t)((j) % RING) * R_NARR + (k)) * w)
        /* 9x9 range: the 9-wide rows r-4..r+4 (clamped), as the rows
         * r-1..r+1 of three V3 rows 3 apart, the way row_stats makes the
         * 9-wide ones: each 9-wide row is read by two of its neighbours'
         * V3 instead of by nine output rows. Rows past the image's edge
         * take the edge row's V3: it still covers the rows inside. */
        for (long v = vdone + 1 > 0 ? vdone + 1 : 0; v <= (long)r + 3 && v < (long)h; v++) {
            const uint32_t vp = clampu(v - 1, h), vn = clampu(v + 1, h);
            rows3(SLOT(vp, R_MX9), SLOT(v, R_MX9), SLOT(vn, R_MX9), SLOT(v, R_V3X), w, true);
            rows3(SLOT(vp, R_MN9), SLOT(v, R_MN9), SLOT(vn, R_MN9), SLOT(v, R_V3N), w, false);
            vdone = v;
        }
        const uint32_t ju = clampu((long)r - 3, h), jd = clampu((long)r + 3, h);
        rows3(SLOT(ju, R_V3X), SLOT(r, R_V3X), SLOT(jd, R_V3X), vmx, w, true);
        rows3(SLOT(ju, R_V3N), SLOT(r, R_V3N), SLOT(jd, R_V3N), vmn, w, false);
        const uint32_t u = clampu((long)r - 1, h), dn = clampu((long)r + 1, h);
        row_budget(SLOT(u, R_MX3), SLOT(r, R_MX3), SLOT(dn, R_MX3), SLOT(u, R_MN3),
                   SLOT(r, R_MN3), SLOT(dn, R_MN3), SLOT(u, R_S1), SLOT(r, R_S1), SLOT(dn, R_S1),
                   SLOT(u, R_S2), SLOT(r, R_S2), SLOT(dn, R_S2), vmx, vmn,
                   pl->weight != NULL ? pl->weight + (size_t)r * w : NULL,
                   jb->amp + (size_t)r * w, w, jb->sk, jb->smax, jb->sflat);
#undef SLOT
        if (jb->ceil != NULL) {
            wm_ceiling_row(pl->weight != NULL ? pl->weight + (size_t)r * w : NULL,
                           jb->amp + (size_t)r * w, jb->ceil->tile, jb->ceil->P, r, w,
                           jb->ceil->fcap, sum);
        }
    }
    if (jb->ceil != NULL) {
        memcpy(jb->ceil->sum[band], sum, sizeof sum);
    }
}

/* One pass over the rows with a ring of per-row statistics: the budget
 * reads the plane once and writes amp once. (Four whole-plane rounds of
 * 3x3 max and min moved some 250 MB for a 1080p frame and were the
 * embedder's slowest stage; the result is the same to the bit.) Row bands
 * run on pl->threads threads; each band reads the 4 rows past its ends
 * itself, so the bands agree to the bit with one pass. */
ct_status wm_mask(ct_ctx *ctx, const wm_plane *pl, double strength, float *amp)
{
    return wm_mask_ceiling(ctx, pl, strength, amp, NULL);
}

ct_status wm_mask_ceiling(ct_ctx *ctx, const wm_plane *pl, double strength, float *amp,
                          wm_ceiling *c)
{
    const size_t band_floats = ((size_t)RING * R_NARR + 3) * pl->w;
    mask_job jb = {pl, amp, c, NULL, band_floats, 0, 0, 0};
    jb.buf = ct_mallocarray(ctx, WM_BANDS, band_floats * sizeof *jb.buf);
    if (jb.buf == NULL) {
        return CT_ERR_NOMEM;
    }
    jb.sflat = (float)((pl->fine ? A_FLAT_FINE : A_FLAT) * strength);
    jb.smax = (float)(A_MAX * strength);
    jb.sk = (float)(strength * strength) * KAPPA;
    ct_parallel(WM_BANDS, pl->threads, mask_band, &jb);
    free(jb.buf);
    return CT_OK;
}

typedef struct quality_job {
    const wm_plane *pl;
    const float *delta;
    double se[WM_BANDS], acc[WM_BANDS];
    size_t n[WM_BANDS], nw[WM_BANDS];
} quality_job;

/* One 8x8 window's sums in float lanes, one lane a column (GCC vector
 * extensions: the lanes stay in registers): the seen original a, its seen
 * change d = al delta, and whether each pixel is seen. b = a + d is never
 * formed: its moments follow from these, and the small d terms keep their
 * own precision instead of being cancelled out of b^2. */
typedef float qv8 __attribute__((vector_size(32)));
enum { Q_A, Q_AA, Q_D, Q_DD, Q_AD, Q_VIS, Q_N };

static inline __attribute__((always_inline)) void qwin_sum(const float *y, const float *delta,
                                                           const float *wt, size_t w,
                                                           qv8 q[Q_N])
{
    const qv8 zero = {0}, one = zero + 1.0f;
    qv8 sa = zero, saa = zero, sd = zero, sdd = zero, sad = zero, vis = zero;
    for (int r = 0; r < 8; r++) {
        const size_t o = (size_t)r * w;
        qv8 a, d, al = one;
        memcpy(&a, y + o, sizeof a);
        memcpy(&d, delta + o, sizeof d);
        if (wt != NULL) {
            memcpy(&al, wt + o, sizeof al);
            a = al * a + (one - al) * BACKDROP;
            d = al * d;
            /* a vector compare is -1 where true */
            vis -= __builtin_convertvector(al > zero, qv8);
        } else {
            vis += one;
        }
        sa += a;
        saa += a * a;
        sd += d;
        sdd += d * d;
        sad += a * d;
    }
    q[Q_A] = sa;
    q[Q_AA] = saa;
    q[Q_D] = sd;
    q[Q_DD] = sdd;
    q[Q_AD] = sad;
    q[Q_VIS] = vis;
}

/* The window's SSIM from its sums (in double): with b = a + d,
 * var b = var a + 2 cov(a,d) + var d and cov(a,b) = var a + cov(a,d).
 * Also hands back the window's seen change energy and seen count. */
static double qwin_ssim(const qv8 q[Q_N], double *sdd, double *vis)
{
    const double c1 = 6.5025, c2 = 58.5225;
    double t[Q_N] = {0};
    for (int k = 0; k < Q_N; k++) {
        for (int c = 0; c < 8; c++) {
            t[k] += q[k][c];
        }
    }
    *sdd = t[Q_DD];
    *vis = t[Q_VIS];
    if (t[Q_VIS] == 0) {
        return 0.0; /* nothing seen: the caller skips the window */
    }
    double ma = t[Q_A] / 64, md = t[Q_D] / 64, mb = ma + md;
    double va = fmax(t[Q_AA] / 64 - ma * ma, 0.0), vd = fmax(t[Q_DD] / 64 - md * md, 0.0);
    double cad = t[Q_AD] / 64 - ma * md;
    double vb = va + 2 * cad + vd, cab = va + cad;
    return ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
}

/* The seen change and count of the pixels outside every whole window:
 * the columns past the last whole one, over rows [r0, r1). */
static void quality_rest(const wm_plane *pl, const float *delta, uint32_t x0, uint32_t r0,
                         uint32_t r1, double *se, double *n)
{
    const float *wt = pl->weight;
    for (uint32_t r = r0; r < r1; r++) {
        for (uint32_t x = x0; x < pl->w; x++) {
            const size_t i = (size_t)r * pl->w + x;
            double al = wt != NULL ? wt[i] : 1.0;
            double d = al * delta[i];
            *se += d * d;
            *n += al > 0.0 ? 1.0 : 0.0;
        }
    }
}

/* One band of whole 8-row blocks; the last band also takes the rows past
 * the last whole block, for the PSNR, whose sums come out of the windows'
 * (an unseen pixel's d is 0). Mean SSIM over 8x8 windows with stride 8
 * (Wang et al. use an 11x11 Gaussian; this is the common fast
 * approximation). */
CT_SIMD_CLONES
static void quality_band(void *arg, unsigned band)
{
    quality_job *jb = arg;
    const wm_plane *pl = jb->pl;
    const float *delta = jb->delta, *wt = pl->weight;
    const uint32_t w = pl->w, h = pl->h, nbr = h / 8, wx = w / 8 * 8;
    const uint32_t b0 = (uint32_t)((uint64_t)nbr * band / WM_BANDS);
    const uint32_t b1 = (uint32_t)((uint64_t)nbr * (band + 1) / WM_BANDS);
    double se = 0, nd = 0, acc = 0;
    size_t nw = 0;
    for (uint32_t by = 8 * b0; by < 8 * b1; by += 8) {
        for (uint32_t bx = 0; bx < wx; bx += 8) {
            const size_t i = (size_t)by * w + bx;
            qv8 q[Q_N];
            if (wt != NULL) {
                qwin_sum(pl->y + i, delta + i, wt + i, w, q);
            } else {
                qwin_sum(pl->y + i, delta + i, NULL, w, q);
            }
            double sdd, vis;
            double s = qwin_ssim(q, &sdd, &vis);
            se += sdd;
            nd += vis;
            if (vis > 0) {
                acc += s;
                nw++;
            }
        }
    }
    quality_rest(pl, delta, wx, 8 * b0, 8 * b1, &se, &nd);
    if (band + 1 == WM_BANDS) {
        quality_rest(pl, delta, 0, 8 * nbr, h, &se, &nd);
    }
    jb->se[band] = se;
    jb->n[band] = (size_t)nd;
    jb->acc[band] = acc;
    jb->nw[band] = nw;
}

void wm_quality(const wm_plane *pl, const float *delta, double *psnr, double *ssim)
{
    quality_job jb = {pl, delta, {0}, {0}, {0}, {0}};
    ct_parallel(WM_BANDS, pl->threads, quality_band, &jb);
    double se = 0, acc = 0;
    size_t n = 0, nw = 0;
    for (unsigned b = 0; b < WM_BANDS; b++) {
        se += jb.se[b];
        n += jb.n[b];
        acc += jb.acc[b];
        nw += jb.nw[b];
    }
    *psnr = se == 0 || n == 0 ? 99.0 : 10.0 * log10(255.0 * 255.0 / (se / n));
    *ssim = nw == 0 ? 1.0 : acc / nw;
}

/* watermark: embedding. Renders one period of the tile, multiplies it by
 * the perceptual budget and keeps every pixel inside its channel range.
 * The result is a continuous luma change; media/ realises it in whole
 * levels (error diffusion), so sub-level marks in flat areas survive as a
 * fine dither whose local mean follows the mark. */
#include "wm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* Render P x P pixels of the tile: pixel x maps to cell coordinate
 * u = (x - shx) * WM_CELLS / P, the tile moved by (shx, shy) pixels (the
 * tile is periodic, so out still repeats every P pixels). The sync sum is
 * separable (cos(a+b) = cos a cos b - sin a sin b), which keeps this at
 * 2*K multiplies per pixel. */
CT_SIMD_CLONES
static ct_status render_tile(ct_ctx *ctx, const int8_t chips[WM_NCELLS], const wm_sync *s, int P,
                             double shx, double shy, float *out)
{
    /* Along x the cosines and sines are kept k-major (K rows of P), so the
     * sum over k runs for a whole row of pixels at once, each pixel adding
     * its terms in k order as before (vector lanes across pixels, not a
     * reassociated sum). Per column and per row: the chip cells and the
     * bilinear weights, worked out once instead of per pixel. */
    size_t n = (size_t)P * WM_SYNC_K;
    float *cx = ct_mallocarray(ctx, n, sizeof *cx);
    float *sx = ct_mallocarray(ctx, n, sizeof *sx);
    float *cy = ct_mallocarray(ctx, n, sizeof *cy);
    float *sy = ct_mallocarray(ctx, n, sizeof *sy);
    float *wa = ct_mallocarray(ctx, (size_t)P, sizeof *wa);
    int *ci = ct_mallocarray(ctx, (size_t)P, sizeof *ci);
    ct_status st = CT_OK;
    if (cx == NULL || sx == NULL || cy == NULL || sy == NULL || wa == NULL || ci == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    /* Within one period, so the cell coordinates below stay small. */
    shx = isfinite(shx) ? fmod(shx, P) : 0.0;
    shy = isfinite(shy) ? fmod(shy, P) : 0.0;
    shx = shx < 0 ? shx + P : shx;
    shy = shy < 0 ? shy + P : shy;
    double scale = (double)WM_CELLS / P;
    float norm = (float)(WM_ALPHA_SYNC / sqrt(WM_SYNC_K / 2.0));
    for (int i = 0; i < P; i++) {
        double u = (i - shx) * scale, v = (i - shy) * scale;
        for (int k = 0; k < WM_SYNC_K; k++) {
            double ax = 2.0 * M_PI * s->p[k] * u / WM_CELLS + s->phase[k];
            double ay = 2.0 * M_PI * s->q[k] * v / WM_CELLS;
            cx[(size_t)k * P + i] = (float)cos(ax);
            sx[(size_t)k * P + i] = (float)sin(ax);
            cy[(size_t)i * WM_SYNC_K + k] = (float)cos(ay);
            sy[(size_t)i * WM_SYNC_K + k] = (float)sin(ay);
        }
    }
    /* Chips: bilinear between message cell centres. */
    double mscale = (double)WM_MCELLS / P;
    for (int x = 0; x < P; x++) {
        double u = (x - shx) * mscale;
        double fu = floor(u);
        wa[x] = (float)(u - fu);
        ci[x] = (int)fu & (WM_MCELLS - 1);
    }
    for (int y = 0; y < P; y++) {
        const float *cyr = cy + (size_t)y * WM_SYNC_K, *syr = sy + (size_t)y * WM_SYNC_K;
        float *o = out + (size_t)y * P;
        for (int x = 0; x < P; x++) {
            o[x] = 0.0f;
        }
        for (int k = 0; k < WM_SYNC_K; k++) {
            const float *cxk = cx + (size_t)k * P, *sxk = sx + (size_t)k * P;
            const float c = cyr[k], sn = syr[k];
            for (int x = 0; x < P; x++) {
                o[x] += cxk[x] * c - sxk[x] * sn;
            }
        }
        for (int x = 0; x < P; x++) {
            o[x] *= norm;
        }
        double v = (y - shy) * mscale;
        double fv = floor(v);
        float b = (float)(v - fv);
        int j0 = (int)fv & (WM_MCELLS - 1), j1 = (j0 + 1) & (WM_MCELLS - 1);
        const int8_t *r0 = chips + j0 * WM_MCELLS, *r1 = chips + j1 * WM_MCELLS;
        for (int x = 0; x < P; x++) {
            float a = wa[x];
            int i0 = ci[x], i1 = (i0 + 1) & (WM_MCELLS - 1);
            float c = (1 - b) * ((1 - a) * r0[i0] + a * r0[i1]) + b * ((1 - a) * r1[i0] + a * r1[i1]);
            o[x] += WM_ALPHA_MSG * c;
        }
    }
done:
    free(cx);
    free(sx);
    free(cy);
    free(sy);
    free(wa);
    free(ci);
    return st;
}

/* d = A t, kept inside [-down, up]. Where the budget A reaches past a
 * limit (white paper, black ink) the swing is moved off it rather than cut
 * in half: the mark keeps its full swing around a slightly shifted level,
 * a constant offset the eye does not see as texture and the detector's
 * local mean removes. */
static inline float wm_clip_shift(float d, float A, float up, float down)
{
    /* Branch-free, so the loop calling it vectorises; no NaN reaches it
     * (A and the rooms are finite or +inf), where MIN equals fminf. */
    float lo = A - down < up - A ? A - down : up - A;
    float hi = A - up < down - A ? A - up : down - A;
    float c = A > 0.0f && down < A && up > A ? lo : 0.0f;
    c = A > 0.0f && up < A && down > A ? -hi : c;
    d += c;
    d = d > up ? up : d;
    d = d < -down ? -down : d;
    return d;
}

/* Partial sums per run of the tile (at most a tile period of pixels, each
 * term a few levels squared: float keeps 7 digits of it). */
#define LANES 8

/* The global ceiling: whatever the mask allows, the luma PSNR of a marked
 * image stays at or above this (textured paintings would otherwise take
 * the whole budget everywhere). */
#define PSNR_FLOOR_DB 42.5


/* The per-pixel passes of wm_embed_amp, by row bands (WM_BANDS, fixed:
 * the sums are added band by band in order, so the result does not depend
 * on the thread count). Pass 0 sums for the PSNR ceiling, pass 1 makes
 * the change. */
typedef struct amp_job {
    const wm_plane *pl;
    const float *amp;
    float *delta;
    float *rooms_buf; /* pl->rooms: 2 w floats a band, NULL otherwise */
    const float *tile;
    int P;
    int pass;
    float fcap, k;
    double sum[WM_BANDS][4];
} amp_job;

/* One pixel's terms of the ceiling: seen energy of the capped part (f),
 * of the excess (e), their cross term, and 1 if the pixel is seen; into
 * lane l of the four accumulator rows. */
static inline void ceiling_terms(float a, float tile, float am, float fcap,
                                 float acc[4][LANES], int l)
{
    float on = a > 0.0f ? 1.0f : 0.0f;
    float t = tile * a;
    float f = (am < fcap ? am : fcap) * t, e = am * t - f;
    acc[0][l] += on * f * f;
    acc[1][l] += on * f * e;
    acc[2][l] += on * e * e;
    acc[3][l] += on;
}

/* LANES floats as one vector (GCC vector extension). Loads and stores go
 * through memcpy: a vector return value would change the ABI between the
 * AVX2 and the default clone. */
typedef float vlane __attribute__((vector_size(LANES * sizeof(float))));
typedef int vlanei __attribute__((vector_size(LANES * sizeof(float))));
#define VL_LOAD(dst, p) memcpy(&(dst), (p), sizeof(vlane))
#define VL_STORE(p, src) memcpy((p), &(src), sizeof(vlane))

/* The loops of the two passes, each written once and always inlined where
 * it is called with a plane NULL or known present: a test on a NULL plane
 * left inside the loop becomes a masked load per pixel (video frames have
 * no rooms; it cost a fifth of a video embed's CPU). The sums keep one
 * vector register per term, lane l taking pixels l, l + LANES, ... (the
 * rest of the run goes to lane 0): the same additions in the same order
 * as ceiling_terms lane by lane, without the compiler spilling the
 * accumulators to memory on every pixel. */
static inline __attribute__((always_inline)) void sums_loop(const float *wt, const float *amp,
                                                            const float *trow, size_t i0,
                                                            uint32_t n, float fcap,
                                                            float acc[4][LANES])
{
    const vlane zero = {0}, one = zero + 1.0f, cap = zero + fcap;
    vlane s0, s1, s2, s3;
    VL_LOAD(s0, acc[0]);
    VL_LOAD(s1, acc[1]);
    VL_LOAD(s2, acc[2]);
    VL_LOAD(s3, acc[3]);
    uint32_t j = 0;
    for (; j + LANES <= n; j += LANES) {
        vlane a = one, t, am;
        if (wt != NULL) {
            VL_LOAD(a, wt + i0 + j);
        }
        VL_LOAD(t, trow + j);
        VL_LOAD(am, amp + i0 + j);
        const vlane on = (vlane)((vlanei)one & (a > zero));
        t = t * a;
        const vlanei lt = am < cap;
        const vlane f = (vlane)(((vlanei)am & lt) | ((vlanei)cap & ~lt)) * t;
        const vlane e = am * t - f;
        s0 += on * f * f;
        s1 += on * f * e;
        s2 += on * e * e;
        s3 += on;
    }
    VL_STORE(acc[0], s0);
    VL_STORE(acc[1], s1);
    VL_STORE(acc[2], s2);
    VL_STORE(acc[3], s3);
    for (; j < n; j++) {
        ceiling_terms(wt != NULL ? wt[i0 + j] : 1.0f, trow[j], amp[i0 + j], fcap, acc, 0);
    }
}

/* up and down (NULL: no limit) start at the run's first pixel. */
static inline __attribute__((always_inline)) void apply_loop(const float *up, const float *down,
                                                             const float *amp, const float *trow,
                                                             float *delta, size_t i0, uint32_t n,
                                                             float fcap, float kf)
{
    for (uint32_t j = 0; j < n; j++) {
        size_t i = i0 + j;
        float f = amp[i] < fcap ? amp[i] : fcap;
        float A = f + kf * (amp[i] - f);
        delta[i] = wm_clip_shift(A * trow[j], A, up != NULL ? up[j] : INFINITY,
                                 down != NULL ? down[j] : INFINITY);
    }
}

static inline __attribute__((always_inline)) void energy_loop(const float *wt, const float *delta,
                                                              size_t i0, uint32_t n,
                                                              float acc[LANES])
{
    vlane s;
    VL_LOAD(s, acc);
    uint32_t j = 0;
    for (; j + LANES <= n; j += LANES) {
        vlane d;
        VL_LOAD(d, delta + i0 + j);
        if (wt != NULL) {
            vlane a;
            VL_LOAD(a, wt + i0 + j);
            d = a * d;
        }
        s += d * d;
    }
    VL_STORE(acc, s);
    for (; j < n; j++) {
        float d = (wt != NULL ? wt[i0 + j] : 1.0f) * delta[i0 + j];
        acc[0] += d * d;
    }
}

/* Pass 0 over a run of n pixels from i0 (tile row trow): LANES float
 * accumulators of each term, a row of lanes per term so they vectorise;
 * the run's totals go to the double sums. */
CT_SIMD_CLONES
static void run_sums(const float *wt, const float *amp, const float *trow, size_t i0, uint32_t n,
                     float fcap, double *sum)
{
    float acc[4][LANES] = {{0}};
    if (wt != NULL) {
        sums_loop(wt, amp, trow, i0, n, fcap, acc);
    } else {
        sums_loop(NULL, amp, trow, i0, n, fcap, acc);
    }
    for (int l = 0; l < LANES; l++) {
        for (int q = 0; q < 4; q++) {
            sum[q] += acc[q][l];
        }
    }
}

void wm_ceiling_row(const float *wt, const float *amp, const float *tile, int P, uint32_t y,
                    uint32_t w, float fcap, double sum[4])
{
    const uint32_t p = (uint32_t)P;
    const float *trow = tile + (size_t)(y % p) * p;
    for (uint32_t x0 = 0; x0 < w; x0 += p) {
        const uint32_t run = w - x0 < p ? w - x0 : p;
        run_sums(wt, amp, trow, x0, run, fcap, sum);
    }
}

/* Pass 1: the change itself, A t kept inside the rooms (up and down from
 * the run's first pixel, or NULL), and its seen energy. */
CT_SIMD_CLONES
static void run_apply(const amp_job *jb, size_t i0, const float *up, const float *down,
                      const float *trow, uint32_t n, double *sum)
{
    const float *wt = jb->pl->weight;
    if (up != NULL && down != NULL) {
        apply_loop(up, down, jb->amp, trow, jb->delta, i0, n, jb->fcap, jb->k);
    } else if (up == NULL && down == NULL) {
        apply_loop(NULL, NULL, jb->amp, trow, jb->delta, i0, n, jb->fcap, jb->k);
    } else {
        apply_loop(up, down, jb->amp, trow, jb->delta, i0, n, jb->fcap, jb->k);
    }
    float acc[LANES] = {0};
    if (wt != NULL) {
        energy_loop(wt, jb->delta, i0, n, acc);
    } else {
        energy_loop(NULL, jb->delta, i0, n, acc);
    }
    for (int l = 0; l < LANES; l++) {
        sum[0] += acc[l];
    }
}

/* Rows walk the tile in runs of at most P pixels: no division per pixel. */
static void amp_band(void *arg, unsigned band)
{
    amp_job *jb = arg;
    const uint32_t w = jb->pl->w, h = jb->pl->h, P = (uint32_t)jb->P;
    const uint32_t r0 = (uint32_t)((uint64_t)h * band / WM_BANDS);
    const uint32_t r1 = (uint32_t)((uint64_t)h * (band + 1) / WM_BANDS);
    double sum[4] = {0};
    const float *wt = jb->pl->weight;
    for (uint32_t y = r0; y < r1; y++) {
        if (jb->pass == 0) {
            wm_ceiling_row(wt != NULL ? wt + (size_t)y * w : NULL, jb->amp + (size_t)y * w,
                           jb->tile, jb->P, y, w, jb->fcap, sum);
            continue;
        }
        const wm_plane *pl = jb->pl;
        const float *up = pl->room_up != NULL ? pl->room_up + (size_t)y * w : NULL;
        const float *down = pl->room_down != NULL ? pl->room_down + (size_t)y * w : NULL;
        if (up == NULL && down == NULL && pl->rooms != NULL) {
            float *ur = jb->rooms_buf + (size_t)band * 2 * w, *dr = ur + w;
            pl->rooms(pl->rooms_src, y, 0, w, ur, dr);
            up = ur;
            down = dr;
        }
        const float *trow = jb->tile + (size_t)(y % P) * P;
        for (uint32_t x0 = 0; x0 < w; x0 += P) {
            const uint32_t run = w - x0 < P ? w - x0 : P;
            run_apply(jb, (size_t)y * w + x0, up != NULL ? up + x0 : NULL,
                      down != NULL ? down + x0 : NULL, trow, run, sum);
        }
    }
    memcpy(jb->sum[band], sum, sizeof sum);
}

/* The tile of this payload for a plane of pl's size (P x P floats into
 * *tile, which the caller frees). */
static ct_status make_tile(ct_ctx *ctx, const wm_plane *pl, const uint8_t sync_key[WM_KEYBYTES],
                           const uint8_t vendor_key[WM_KEYBYTES], const wm_embed_params *prm,
                           float **tile, int *P)
{
    ct_status st = CT_OK;
    wm_sync sync;
    wm_spread *sp = NULL;
    uint8_t info[WM_INFO_BITS], coded[WM_CODED_BITS];
    int8_t chips[WM_NCELLS];

    *P = wm_period_for(pl->w, pl->h);
    sp = ct_malloc(ctx, sizeof *sp);
    *tile = ct_mallocarray(ctx, (size_t)*P * *P, sizeof **tile);
    if (sp == NULL || *tile == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    wm_sync_init(&sync, sync_key);
    wm_spread_init(sp, vendor_key);
    wm_payload_make(vendor_key, prm->serial, info);
    wm_code_encode(info, coded);
    wm_chips(sp, coded, chips);
    st = render_tile(ctx, chips, &sync, *P, prm->shift_x, prm->shift_y, *tile);
done:
    if (st != CT_OK) {
        free(*tile);
        *tile = NULL;
    }
    sodium_memzero(info, sizeof info);
    free(sp);
    return st;
}

/* The flat-fill cap the ceiling keeps whole. */
static float ceiling_fcap(const wm_plane *pl, const wm_embed_params *prm)
{
    return (float)(wm_flat_cap(pl->fine) * prm->strength);
}

/* PSNR ceiling, as water-filling: the part of each pixel's budget up to
 * the flat-fill cap is cheap and always kept; only the excess (texture,
 * lines) shrinks, by the factor k that brings the RMS of the seen change
 * over the visible pixels to the ceiling. The transparent canvas of a cel
 * must not dilute the figure that matters. sums are pass 0's, band by
 * band (wm_ceiling_row); this is pass 1 and the last scale. */
static ct_status apply_ceiling(ct_ctx *ctx, const wm_plane *pl, const float *amp,
                               const float *tile, int P, float fcap,
                               const double sums[WM_BANDS][4], float *delta)
{
    const size_t npix = (size_t)pl->w * pl->h;
    double cap = 255.0 * pow(10.0, -PSNR_FLOOR_DB / 20.0);
    if (!pl->fine) {
        /* Rounding adds about 1/12 level^2 of its own; leave room for it. */
        cap = sqrt(fmax(cap * cap - 1.0 / 12.0, 0.25));
    }
    double s_ff = 0, s_fe = 0, s_ee = 0, nv = 0;
    for (unsigned bnd = 0; bnd < WM_BANDS; bnd++) {
        s_ff += sums[bnd][0];
        s_fe += sums[bnd][1];
        s_ee += sums[bnd][2];
        nv += sums[bnd][3];
    }
    const size_t nvis = (size_t)nv;
    double k = 1.0;
    if (nvis > 0 && (s_ff + 2 * s_fe + s_ee) > cap * cap * (double)nvis) {
        /* Solve s_ee k^2 + 2 s_fe k + s_ff = cap^2 n for k in [0, 1]. */
        double c = s_ff - cap * cap * (double)nvis;
        k = c >= 0 || s_ee <= 0 ? 0.0 : (-s_fe + sqrt(s_fe * s_fe - s_ee * c)) / s_ee;
        k = fmin(fmax(k, 0.0), 1.0);
    }
    amp_job jb = {pl, amp, delta, NULL, tile, P, 1, fcap, (float)k, {{0}}};
    if (pl->room_up == NULL && pl->room_down == NULL && pl->rooms != NULL) {
        jb.rooms_buf = ct_mallocarray(ctx, (size_t)WM_BANDS * 2, (size_t)pl->w * sizeof(float));
        if (jb.rooms_buf == NULL) {
            return CT_ERR_NOMEM;
        }
    }
    ct_parallel(WM_BANDS, pl->threads, amp_band, &jb);
    free(jb.rooms_buf);
    double sum2 = 0;
    for (unsigned bnd = 0; bnd < WM_BANDS; bnd++) {
        sum2 += jb.sum[bnd][0];
    }
    /* The shift at clipping limits adds a little of its own: a last
     * uniform scale keeps the ceiling exact. */
    double rms = nvis > 0 ? sqrt(sum2 / (double)nvis) : 0.0;
    if (rms > cap) {
        float kk = (float)(cap / rms);
        for (size_t i = 0; i < npix; i++) {
            delta[i] *= kk;
        }
    }
    return CT_OK;
}

ct_status wm_embed_amp(ct_ctx *ctx, const wm_plane *pl, const float *amp,
                       const uint8_t sync_key[WM_KEYBYTES], const uint8_t vendor_key[WM_KEYBYTES],
                       const wm_embed_params *prm, float *delta)
{
    size_t npix;
    float *tile = NULL;
    int P = 0;
    if (!ct_mul(&npix, pl->w, pl->h)) {
        return ct_fail(ctx, CT_ERR_LIMIT, "image too large");
    }
    ct_status st = make_tile(ctx, pl, sync_key, vendor_key, prm, &tile, &P);
    if (st != CT_OK) {
        return st;
    }
    const float fcap = ceiling_fcap(pl, prm);
    amp_job jb = {pl, amp, delta, NULL, tile, P, 0, fcap, 1.0f, {{0}}};
    ct_parallel(WM_BANDS, pl->threads, amp_band, &jb);
    st = apply_ceiling(ctx, pl, amp, tile, P, fcap, (const double(*)[4])jb.sum, delta);
    free(tile);
    return st;
}

ct_status wm_embed(ct_ctx *ctx, const wm_plane *pl, const uint8_t sync_key[WM_KEYBYTES],
                   const uint8_t vendor_key[WM_KEYBYTES], const wm_embed_params *prm,
                   float *delta)
{
    size_t npix;
    if (!ct_mul(&npix, pl->w, pl->h)) {
        return ct_fail(ctx, CT_ERR_LIMIT, "image too large");
    }
    /* The budget is computed into delta and turned into the change in
     * place: one plane less to allocate and fill. The ceiling's sums are
     * taken row by row as the mask makes them (wm_mask_ceiling), not in a
     * pass of their own over the budget. */
    wm_ceiling c = {NULL, 0, ceiling_fcap(pl, prm), {{0}}};
    ct_status st = make_tile(ctx, pl, sync_key, vendor_key, prm, &c.tile, &c.P);
    if (st != CT_OK) {
        return st;
    }
    st = wm_mask_ceiling(ctx, pl, prm->strength, delta, &c);
    if (st == CT_OK) {
        st = apply_ceiling(ctx, pl, delta, c.tile, c.P, c.fcap, (const double(*)[4])c.sum,
                           delta);
    }
    free(c.tile);
    return st;
}

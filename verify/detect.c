/* verify: folding, offset, decoding and the decision.
 *
 * Folding adds every pixel of the whitened image into one tile through the
 * candidate map, so all copies of the tile add evidence (Alattar/Meyer's
 * "fold before decoding"). The offset comes from the phases of the sync
 * frequencies in the folded tile. Each vendor key then despreads the
 * chips and a soft Viterbi decode gives 80 bits; only a tag that verifies
 * under that vendor's key names the vendor.
 *
 * Decoding 80 bits from nothing needs strong evidence (a payload z of
 * about 12). The studio knows more than nothing: the ledger lists every
 * serial it issued to each vendor, so the verifier also tests each of
 * those codewords directly against the chips (a list of hypotheses, not a
 * decode), which names a mark from much weaker evidence. Its null is
 * exact: the keyed spreading makes each chip's sign an independent fair
 * coin under any key that did not mark the file, so for chips c the
 * statistic z = sum(c_i s_i) / |c| has P(z >= t) <= exp(-t^2 / 2)
 * (Hoeffding), whatever the picture. Every test the search may run is
 * counted before it starts, and the threshold makes all of them together
 * pass by chance with probability at most ISSUED_EPS. */
#include "vfy.h"

#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define G      128 /* folded tile grid: two bins per cell */
#define NLEVEL 4
#define PER_LEVEL 4
#define DECODE_CANDS 2
#define REFINE_Z 5.0
#define DECODE_LIST 8
/* Chance that any issued-serial test of one search passes on a file that
 * carries none of those marks (added to the verdict's probability). */
#define ISSUED_EPS 1e-11
#define CODED_BYTES ((WM_CODED_BITS + 7) / 8)

typedef struct level {
    uint32_t w, h;
    float *y;
    float *wt;
    float *white; /* whitened, NaN where transparent */
} level;

/* The whitening windows: the prediction reaches 11 pixels out (it keeps
 * most of the sync band for every period a level searches, 40..330
 * pixels), the noise is measured over 7. */
#define MEAN_R 11
#define VAR_R  3

/* Halve an image with a 2x2 box (weights: a quarter transparent block
 * stays visible). */
static ct_status halve(ct_ctx *ctx, const level *in, level *out)
{
    out->w = in->w / 2;
    out->h = in->h / 2;
    out->y = ct_mallocarray(ctx, (size_t)out->w * out->h, sizeof *out->y);
    out->wt = NULL;
    if (out->y == NULL) {
        return CT_ERR_NOMEM;
    }
    if (in->wt != NULL) {
        out->wt = ct_mallocarray(ctx, (size_t)out->w * out->h, sizeof *out->wt);
        if (out->wt == NULL) {
            return CT_ERR_NOMEM;
        }
    }
    for (uint32_t y = 0; y < out->h; y++) {
        const float *a = in->y + (size_t)(2 * y) * in->w, *b = a + in->w;
        for (uint32_t x = 0; x < out->w; x++) {
            out->y[(size_t)y * out->w + x] = 0.25f * (a[2 * x] + a[2 * x + 1] + b[2 * x] + b[2 * x + 1]);
        }
        if (in->wt != NULL) {
            const float *c = in->wt + (size_t)(2 * y) * in->w, *d = c + in->w;
            for (uint32_t x = 0; x < out->w; x++) {
                out->wt[(size_t)y * out->w + x] =
                    0.25f * (c[2 * x] + c[2 * x + 1] + d[2 * x] + d[2 * x + 1]);
            }
        }
    }
    return CT_OK;
}

/* Fold the residual into a G x G tile through cell = B * pixel, splatting
 * bilinearly so that cells smaller than a pixel leave no holes. */
static void fold_rect(const float *res, uint32_t w, uint32_t x0, uint32_t y0, uint32_t x1,
                      uint32_t y1, const vfy_geom *geom, float *tile, float *acc_w)
{
    const double(*b)[2] = geom->b;
    memset(tile, 0, G * G * sizeof *tile);
    memset(acc_w, 0, G * G * sizeof *acc_w);
    const double s = G / (double)WM_CELLS;
    const double du = s * b[0][0], dv = s * b[1][0];
    for (uint32_t y = y0; y < y1; y++) {
        double gu = s * (b[0][1] * y + b[0][0] * x0), gv = s * (b[1][1] * y + b[1][0] * x0);
        const float *row = res + (size_t)y * w;
        for (uint32_t x = x0; x < x1; x++, gu += du, gv += dv) {
            float e = row[x];
            if (isnan(e)) {
                continue;
            }
            double fu = floor(gu), fv = floor(gv);
            float a = (float)(gu - fu), c = (float)(gv - fv);
            int i0 = (int)((long)fu & (G - 1)), j0 = (int)((long)fv & (G - 1));
            int i1 = (i0 + 1) & (G - 1), j1 = (j0 + 1) & (G - 1);
            float w00 = (1 - a) * (1 - c), w10 = a * (1 - c), w01 = (1 - a) * c, w11 = a * c;
            tile[j0 * G + i0] += w00 * e;
            acc_w[j0 * G + i0] += w00;
            tile[j0 * G + i1] += w10 * e;
            acc_w[j0 * G + i1] += w10;
            tile[j1 * G + i0] += w01 * e;
            acc_w[j1 * G + i0] += w01;
            tile[j1 * G + i1] += w11 * e;
            acc_w[j1 * G + i1] += w11;
        }
    }
    double mean = 0;
    int n = 0;
    for (int i = 0; i < G * G; i++) {
        if (acc_w[i] > 0) {
            tile[i] /= acc_w[i];
            mean += tile[i];
            n++;
        }
    }
    mean = n > 0 ? mean / n : 0;
    for (int i = 0; i < G * G; i++) {
        tile[i] = acc_w[i] > 0 ? tile[i] - (float)mean : 0.0f;
    }
}

static void fold(const float *res, uint32_t w, uint32_t h, const vfy_geom *geom, float *tile,
                 float *acc_w)
{
    fold_rect(res, w, 0, 0, w, h, geom, tile, acc_w);
}

typedef struct folded {
    float tile[G * G];
    float wsum[G * G];
    double complex ck[WM_SYNC_K]; /* DFT of the tile at the sync frequencies */
    double tu, tv;                /* offset, cells */
    double z;                     /* sync correlation at the offset, sigmas */
} folded;

static double corr_at(const folded *f, const wm_sync *sy, double tu, double tv)
{
    double acc = 0;
    for (int k = 0; k < WM_SYNC_K; k++) {
        double ph = -2.0 * M_PI * (sy->p[k] * tu + sy->q[k] * tv) / WM_CELLS - sy->phase[k];
        acc += creal(f->ck[k] * cexp(I * ph));
    }
    return acc;
}

/* DFT of the folded tile at cell frequency (p, q), cycles per tile. */
static double complex tile_dft(const float *tile, int p, int q)
{
    double complex ex[G], acc = 0;
    for (int g = 0; g < G; g++) {
        ex[g] = cexp(-I * 2.0 * M_PI * p * (g * 0.5) / WM_CELLS);
    }
    for (int gy = 0; gy < G; gy++) {
        double complex row = 0;
        const float *t = tile + gy * G;
        for (int gx = 0; gx < G; gx++) {
            row += t[gx] * ex[gx];
        }
        acc += row * cexp(-I * 2.0 * M_PI * q * (gy * 0.5) / WM_CELLS);
    }
    return acc;
}

/* The tile's DFT at the sync frequencies (f->ck) and the power of its
 * neighbouring frequencies (the same band, so the same content and
 * message power): the noise the sync correlation is measured against. */
static double sync_dft(folded *f, const wm_sync *sy)
{
    double noise = 0;
    for (int k = 0; k < WM_SYNC_K; k++) {
        f->ck[k] = tile_dft(f->tile, sy->p[k], sy->q[k]);
        double complex r1 = tile_dft(f->tile, sy->p[k] + 1, sy->q[k]);
        double complex r2 = tile_dft(f->tile, sy->p[k], sy->q[k] + 1);
        noise += 0.5 * (creal(r1 * conj(r1)) + creal(r2 * conj(r2)));
    }
    return noise;
}

/* Offset from the sync phases of f->ck, searched over the whole tile, or
 * within `radius` cells of (cu, cv) when radius > 0. z is the correlation
 * over its standard deviation under no sync (from `noise`, sync_dft). */
static void offset_search(folded *f, const wm_sync *sy, double noise, double cu, double cv,
                          double radius)
{
    /* Coarse: every half cell, separably. */
    double best = -INFINITY, bu = 0, bv = 0;
    double complex ev[WM_SYNC_K][G];
    for (int k = 0; k < WM_SYNC_K; k++) {
        for (int t = 0; t < G; t++) {
            ev[k][t] = cexp(-I * 2.0 * M_PI * sy->q[k] * (t * 0.5) / WM_CELLS);
        }
    }
    for (int tu = 0; tu < G; tu++) {
        if (radius > 0 && fabs(remainder(tu * 0.5 - cu, WM_CELLS)) > radius) {
            continue;
        }
        double complex d[WM_SYNC_K];
        for (int k = 0; k < WM_SYNC_K; k++) {
            d[k] = f->ck[k] *
                   cexp(-I * (2.0 * M_PI * sy->p[k] * (tu * 0.5) / WM_CELLS + sy->phase[k]));
        }
        for (int tv = 0; tv < G; tv++) {
            if (radius > 0 && fabs(remainder(tv * 0.5 - cv, WM_CELLS)) > radius) {
                continue;
            }
            double acc = 0;
            for (int k = 0; k < WM_SYNC_K; k++) {
                acc += creal(d[k] * ev[k][tv]);
            }
            if (acc > best) {
                best = acc;
                bu = tu * 0.5;
                bv = tv * 0.5;
            }
        }
    }
    /* Fine: a twentieth of a cell around the coarse peak. */
    double fu = bu, fv = bv;
    for (int i = -5; i <= 5; i++) {
        for (int j = -5; j <= 5; j++) {
            double u = bu + i * 0.05, v = bv + j * 0.05;
            double c = corr_at(f, sy, u, v);
            if (c > best) {
                best = c;
                fu = u;
                fv = v;
            }
        }
    }
    f->tu = fu;
    f->tv = fv;
    double sd = sqrt(noise / 2.0);
    f->z = sd > 0 ? best / sd : 0;
}

static void find_offset_near(folded *f, const wm_sync *sy, double cu, double cv, double radius)
{
    offset_search(f, sy, sync_dft(f, sy), cu, cv, radius);
}

static void find_offset(folded *f, const wm_sync *sy)
{
    find_offset_near(f, sy, 0, 0, -1);
}

/* A picture turned half way round has the spectrum of the upright one, so
 * the search hands on map B for both: folded through -B the tile is the
 * same one read backwards (bin k of -B is bin -k of B, splat weights
 * included), whose DFT is the conjugate (the tile is real) and whose
 * noise is the same. The sync phases tell the two apart (random phases
 * do not survive negation), so the reading whose sync fits better is
 * kept: in f, and in *g as B or -B. Chooses without any key, so no tag
 * check is added. */
static void fold_offset(folded *f, folded *tmp, const wm_sync *sy, vfy_geom *g)
{
    double noise = sync_dft(f, sy);
    offset_search(f, sy, noise, 0, 0, -1);
    for (int k = 0; k < WM_SYNC_K; k++) {
        tmp->ck[k] = conj(f->ck[k]);
    }
    offset_search(tmp, sy, noise, 0, 0, -1);
    if (tmp->z <= f->z) {
        return;
    }
    for (int j = 0; j < G; j++) {
        for (int i = 0; i < G; i++) {
            tmp->tile[j * G + i] = f->tile[((G - j) & (G - 1)) * G + ((G - i) & (G - 1))];
        }
    }
    memcpy(f->tile, tmp->tile, sizeof f->tile);
    memcpy(f->ck, tmp->ck, sizeof f->ck);
    f->tu = tmp->tu;
    f->tv = tmp->tv;
    f->z = tmp->z;
    for (int a = 0; a < 2; a++) {
        for (int b = 0; b < 2; b++) {
            g->b[a][b] = -g->b[a][b];
        }
    }
}

static float tile_at(const float *t, double gu, double gv)
{
    double fu = floor(gu), fv = floor(gv);
    float a = (float)(gu - fu), c = (float)(gv - fv);
    int i0 = (int)((long)fu & (G - 1)), j0 = (int)((long)fv & (G - 1));
    int i1 = (i0 + 1) & (G - 1), j1 = (j0 + 1) & (G - 1);
    return (1 - c) * ((1 - a) * t[j0 * G + i0] + a * t[j0 * G + i1]) +
           c * ((1 - a) * t[j1 * G + i0] + a * t[j1 * G + i1]);
}

/* Chip values: each message cell's tent (the bilinear chip the embedder
 * drew, two message cells = four tile units wide) correlated with the
 * folded tile around the cell centre, collecting the chip's energy from
 * 7 x 7 bins; the measured sync is removed first (it is known, so it need
 * not be noise to the message). */
static void chips_of(const folded *f, const wm_sync *sy, float *clean, float chips[WM_NCELLS])
{
    const double s = G / (double)WM_CELLS;
    /* clean = tile minus the fitted sync, on the bin grid; the phase is
     * separable in x and y, so two tables per frequency serve all bins. */
    static const int KG = WM_SYNC_K;
    double complex ex[WM_SYNC_K][G], ey[WM_SYNC_K][G];
    for (int k = 0; k < KG; k++) {
        for (int g = 0; g < G; g++) {
            ex[k][g] = f->ck[k] * cexp(I * 2.0 * M_PI * sy->p[k] * (g / s) / WM_CELLS);
            ey[k][g] = cexp(I * 2.0 * M_PI * sy->q[k] * (g / s) / WM_CELLS);
        }
    }
    for (int gy = 0; gy < G; gy++) {
        for (int gx = 0; gx < G; gx++) {
            double syn = 0;
            for (int k = 0; k < KG; k++) {
                syn += creal(ex[k][gx] * ey[k][gy]);
            }
            clean[gy * G + gx] = f->tile[gy * G + gx] - (float)(2.0 * syn / (G * G));
        }
    }
    const int step = WM_CELLS / WM_MCELLS; /* tile units per message cell */
    const int reach = (int)(step * s) - 1;  /* bins inside the tent */
    for (int j = 0; j < WM_MCELLS; j++) {
        for (int i = 0; i < WM_MCELLS; i++) {
            /* The tile holds T(u + t) at u: cell (i, j) of T sits at
             * (step i - tu, step j - tv). */
            double u0 = step * i - f->tu, v0 = step * j - f->tv;
            float acc = 0;
            for (int dy = -reach; dy <= reach; dy++) {
                float wy = 1.0f - (float)abs(dy) / (float)(reach + 1);
                for (int dx = -reach; dx <= reach; dx++) {
                    float wx = 1.0f - (float)abs(dx) / (float)(reach + 1);
                    acc += wx * wy * tile_at(clean, u0 * s + dx, v0 * s + dy);
                }
            }
            chips[j * WM_MCELLS + i] = acc;
        }
    }
}

/* The soft value of each coded bit: its cells' chips despread with the
 * key's +-1 sequence and added up (decoding and the issued-serial tests
 * start from the same sums). */
static void despread(const float chips[WM_NCELLS], const wm_spread *sp,
                     float soft[WM_CODED_BITS])
{
    memset(soft, 0, WM_CODED_BITS * sizeof *soft);
    for (int i = 0; i < WM_NCELLS; i++) {
        soft[sp->bit_of_cell[i]] += chips[i] * sp->pn[i];
    }
}

/* Despread with one vendor's key and decode. The list Viterbi returns the
 * DECODE_LIST most likely payloads; each is checked against the tag, and
 * each check is one trial for the false-positive count (*tried). */
static bool decode_key(const float chips[WM_NCELLS], const vfy_key *k, vfy_hit *hit, int *tried)
{
    wm_spread spread; /* 3 KB: on the stack, nothing to fail */
    wm_spread *sp = &spread;
    float soft[WM_CODED_BITS];
    uint8_t info[DECODE_LIST][WM_INFO_BITS], coded[WM_CODED_BITS];
    uint32_t serial = 0;
    bool ok = false;
    wm_spread_init(sp, k->key);
    despread(chips, sp, soft);
    int n = wm_code_decode_list(soft, DECODE_LIST, info);
    if (n < 0) {
        /* Out of memory for the list: the plain decoder needs none. */
        wm_code_decode(soft, info[0]);
        n = 1;
    }
    *tried = n;
    for (int c = 0; c < n && !ok; c++) {
        if (!wm_payload_check(k->key, info[c], &serial)) {
            continue;
        }
        wm_code_encode(info[c], coded);
        double acc = 0, e2 = 0;
        for (int i = 0; i < WM_NCELLS; i++) {
            int sign = coded[sp->bit_of_cell[i]] ? -sp->pn[i] : sp->pn[i];
            acc += chips[i] * sign;
            e2 += (double)chips[i] * chips[i];
        }
        hit->vendor_id = k->vendor_id;
        hit->epoch = k->epoch;
        hit->serial = serial;
        hit->msg_z = e2 > 0 ? acc / sqrt(e2) : 0;
        hit->issued = false;
        ok = true;
    }
    sodium_memzero(info, sizeof info);
    return ok;
}

/* Every vendor key on one set of chips: hits and trials into out. */
static void decode_all(const float chips[WM_NCELLS], const vfy_key *keys, size_t nkeys,
                       vfy_result *out)
{
    for (size_t k = 0; k < nkeys; k++) {
        vfy_hit hit;
        int tried = 0;
        bool got = decode_key(chips, &keys[k], &hit, &tried);
        out->trials += (uint64_t)tried;
        if (got && out->nhits < VFY_MAX_HITS) {
            out->hits[out->nhits++] = hit;
        }
    }
}

/* The issued serials of every key as packed codewords, built on first
 * use (one keyed hash and one encode per serial). */
typedef struct issued_set {
    size_t n;                     /* serials over all keys */
    uint8_t (*code)[CODED_BYTES]; /* codeword bits, in key order */
    float (*lut)[256];            /* CODED_BYTES rows: see test_issued */
    bool built;
    uint64_t tests_max;           /* folds the search may run x n */
    double z_min;                 /* the pass threshold */
} issued_set;

/* tests * exp(-z^2 / 2) = ISSUED_EPS */
static double z_min_of(uint64_t tests)
{
    return sqrt(2.0 * log((double)tests / ISSUED_EPS));
}

static void issued_init(issued_set *is, const vfy_key *keys, size_t nkeys, int max_folds)
{
    memset(is, 0, sizeof *is);
    for (size_t k = 0; k < nkeys; k++) {
        is->n += keys[k].issued != NULL ? keys[k].nissued : 0;
    }
    if (is->n > 0) {
        is->tests_max = (uint64_t)is->n * (uint64_t)max_folds;
        is->z_min = z_min_of(is->tests_max);
    }
}

static ct_status issued_build(ct_ctx *ctx, issued_set *is, const vfy_key *keys, size_t nkeys)
{
    if (is->built || is->n == 0) {
        return CT_OK;
    }
    is->code = ct_mallocarray(ctx, is->n, sizeof *is->code);
    is->lut = ct_mallocarray(ctx, CODED_BYTES, sizeof *is->lut);
    if (is->code == NULL || is->lut == NULL) {
        return CT_ERR_NOMEM;
    }
    size_t j = 0;
    uint8_t info[WM_INFO_BITS], coded[WM_CODED_BITS];
    for (size_t k = 0; k < nkeys; k++) {
        for (size_t s = 0; keys[k].issued != NULL && s < keys[k].nissued; s++, j++) {
            wm_payload_make(keys[k].key, keys[k].issued[s], info);
            wm_code_encode(info, coded);
            memset(is->code[j], 0, CODED_BYTES);
            for (int b = 0; b < WM_CODED_BITS; b++) {
                is->code[j][b >> 3] |= (uint8_t)((coded[b] & 1u) << (b & 7));
            }
        }
    }
    sodium_memzero(info, sizeof info);
    is->built = true;
    return CT_OK;
}

/* Test every issued codeword against one set of chips; a codeword at or
 * above the threshold names its key's vendor with that serial (the best
 * per key). out->issued_z keeps the best z seen. */
static ct_status test_issued(ct_ctx *ctx, issued_set *is, const float chips[WM_NCELLS],
                             const vfy_key *keys, size_t nkeys, vfy_result *out)
{
    if (is->n == 0) {
        return CT_OK;
    }
    ct_status st = issued_build(ctx, is, keys, nkeys);
    if (st != CT_OK) {
        return st;
    }
    double e2 = 0;
    for (int i = 0; i < WM_NCELLS; i++) {
        e2 += (double)chips[i] * chips[i];
    }
    if (e2 <= 0) {
        return CT_OK;
    }
    double norm = 1.0 / sqrt(e2);
    wm_spread spread;
    float soft[WM_CODED_BITS];
    size_t j = 0;
    for (size_t k = 0; k < nkeys; k++) {
        size_t ns = keys[k].issued != NULL ? keys[k].nissued : 0;
        if (ns == 0) {
            continue;
        }
        /* sum(c_i s_i) = sum over coded bits of +-(despread chips of the bit) */
        wm_spread_init(&spread, keys[k].key);
        despread(chips, &spread, soft);
        /* Per byte of a packed codeword, the signed sum of its 8 bits' soft
         * values for each of the 256 byte values: a serial then costs 33
         * lookups instead of 258 (a ledger holds thousands). */
        for (int by = 0; by < CODED_BYTES; by++) {
            for (int v = 0; v < 256; v++) {
                float acc = 0;
                for (int b = 0; b < 8 && by * 8 + b < WM_CODED_BITS; b++) {
                    acc += (v >> b) & 1 ? -soft[by * 8 + b] : soft[by * 8 + b];
                }
                is->lut[by][v] = acc;
            }
        }
        double best = -INFINITY;
        uint32_t best_serial = 0;
        for (size_t s = 0; s < ns; s++, j++) {
            const uint8_t *c = is->code[j];
            double acc = 0;
            for (int by = 0; by < CODED_BYTES; by++) {
                acc += is->lut[by][c[by]];
            }
            if (acc > best) {
                best = acc;
                best_serial = keys[k].issued[s];
            }
        }
        double z = best * norm;
        if (z > out->issued_z) {
            out->issued_z = z;
        }
        if (z >= is->z_min && out->nhits < VFY_MAX_HITS) {
            bool seen = false;
            for (int h = 0; h < out->nhits; h++) {
                seen |= out->hits[h].vendor_id == keys[k].vendor_id;
            }
            if (!seen) {
                out->hits[out->nhits++] = (vfy_hit){keys[k].vendor_id, keys[k].epoch, best_serial,
                                                    z, true};
            }
        }
    }
    return CT_OK;
}

/* One set of chips: decode under every key, then, if nothing decoded,
 * test the issued serials (every map the search folds goes through here). */
static ct_status name_from(ct_ctx *ctx, issued_set *is, const float chips[WM_NCELLS],
                           const vfy_key *keys, size_t nkeys, vfy_result *out)
{
    decode_all(chips, keys, nkeys, out);
    return out->nhits == 0 ? test_issued(ctx, is, chips, keys, nkeys, out) : CT_OK;
}

/* The verdict's probability: every tag check at 2^-48, and the
 * issued-serial tests together at ISSUED_EPS (their threshold). */
static double fpp_of(const vfy_result *r, const issued_set *is)
{
    double p = (double)r->trials * ldexp(1.0, -WM_TAG_BITS) + (is->n > 0 ? ISSUED_EPS : 0.0);
    return fmin(1.0, p);
}

/* Geometry refinement from the offsets of image patches: each patch folded
 * on its own finds the tile at t0 + D x (x the patch centre), where D is
 * what the map still lacks. A least-squares fit of D over the patches that
 * see the sync corrects scale, rotation, aspect and shear at once, which
 * the spectrum alone resolves only to a fraction of a bin. */
static bool refine_by_patches(const float *white, uint32_t w, uint32_t h, vfy_geom *g,
                              const folded *whole, const wm_sync *sy, folded *tmp)
{
    double det = fabs(g->b[0][0] * g->b[1][1] - g->b[0][1] * g->b[1][0]);
    double period = WM_CELLS / sqrt(det);
    /* Nine patches when the sync is strong enough to be seen in a ninth of
     * the image, else four. */
    int np = whole->z >= 15.0 ? 3 : 2;
    int nx = w >= np * period ? np : 2, ny = h >= np * period ? np : 2;
    double sxx[3][3] = {{0}}, sxu[3][2] = {{0}};
    int used = 0;
    for (int py = 0; py < ny; py++) {
        for (int px = 0; px < nx; px++) {
            uint32_t x0 = (uint32_t)((uint64_t)w * px / nx), x1 = (uint32_t)((uint64_t)w * (px + 1) / nx);
            uint32_t y0 = (uint32_t)((uint64_t)h * py / ny), y1 = (uint32_t)((uint64_t)h * (py + 1) / ny);
            fold_rect(white, w, x0, y0, x1, y1, g, tmp->tile, tmp->wsum);
            /* The patch's tile cannot have drifted far from the whole's. */
            find_offset_near(tmp, sy, whole->tu, whole->tv, 4.0);
            if (tmp->z < 3.0) {
                continue;
            }
            /* Offset relative to the whole image's, wrapped to +-32 cells. */
            double du = remainder(tmp->tu - whole->tu, WM_CELLS);
            double dv = remainder(tmp->tv - whole->tv, WM_CELLS);
            double xc = 0.5 * (x0 + x1), yc = 0.5 * (y0 + y1);
            double v[3] = {1.0, xc, yc};
            double wt = tmp->z * tmp->z;
            for (int i = 0; i < 3; i++) {
                for (int j = 0; j < 3; j++) {
                    sxx[i][j] += wt * v[i] * v[j];
                }
                sxu[i][0] += wt * v[i] * du;
                sxu[i][1] += wt * v[i] * dv;
            }
            used++;
        }
    }
    if (used < 3) {
        return false;
    }
    /* Solve the 3x3 normal equations (Cramer) for each of u and v. */
    double a = sxx[0][0], b = sxx[0][1], c = sxx[0][2], d = sxx[1][1], e = sxx[1][2],
           f = sxx[2][2];
    double dt = a * (d * f - e * e) - b * (b * f - c * e) + c * (b * e - c * d);
    if (fabs(dt) < 1e-12 * fabs(a * d * f) || dt == 0) {
        return false;
    }
    for (int k = 0; k < 2; k++) {
        double r0 = sxu[0][k], r1 = sxu[1][k], r2 = sxu[2][k];
        double cx = (a * (r1 * f - e * r2) - r0 * (b * f - c * e) + c * (b * r2 - r1 * c)) / dt;
        double cy = (a * (d * r2 - r1 * e) - b * (b * r2 - r1 * c) + r0 * (b * e - c * d)) / dt;
        /* The patch holds T(u + t): t grows with x as (B_true - B) x, so
         * the map gains the slope. */
        g->b[k][0] += cx;
        g->b[k][1] += cy;
    }
    return true;
}

typedef struct pass_t {
    int level;
    double pmin, pmax; /* tile periods searched, in the level's pixels */
} pass_t;

typedef struct cand {
    vfy_geom g;
    int level;
    double z;
} cand;

/* Report candidate c's map in the verdict, with the sync z it folded to. */
static void report_map(vfy_result *out, const cand *c, double sync_z)
{
    const double det = c->g.b[0][0] * c->g.b[1][1] - c->g.b[0][1] * c->g.b[1][0];
    out->period = WM_CELLS / sqrt(fabs(det)) * (1u << c->level);
    out->angle = atan2(c->g.b[1][0], c->g.b[1][1]) * 180.0 / M_PI;
    out->mirrored = det < 0;
    out->sync_z = sync_z;
}

/* The last resort when the spectrum found nothing that decodes: the map
 * the suspect has if it is the whole marked picture at any size, upright.
 * Most leaks are (re-exports, colour and level changes, flattened cels,
 * resized copies), and under heavy loss the sync's spectral peaks drown
 * before the folded message does. The embedder anchors the tile at the
 * top-left corner with a period of wm_period_for(w, h), about 2/9 of the
 * short side, so a copy of w' x h' has it there with a period of
 * wm_period_for(w', h') (same size) or 2/9 of its short side (resized).
 * Each period is folded on the two search levels and decoded at the
 * offset the sync phases give within a cell of the corner, and at the
 * corner itself: at most NATIVE_FOLDS folds, counted in the
 * issued-serial threshold before the search starts. */
#define NATIVE_FOLDS 8
/* Folds vfy_detect may test issued serials on: at most two candidates a
 * pass, each folded twice (refined), and the native maps. */
#define DETECT_FOLDS ((NLEVEL + 1) * DECODE_CANDS * 2 + NATIVE_FOLDS)

static ct_status try_native(ct_ctx *ctx, const level *lv, int la, int lb, const wm_sync *sync,
                            const vfy_key *keys, size_t nkeys, issued_set *is, folded *fd,
                            folded *fd2, vfy_result *out)
{
    float chips[WM_NCELLS];
    uint32_t w = lv[0].w, h = lv[0].h;
    double periods[2] = {wm_period_for(w, h), (w < h ? w : h) * 2.0 / 9.0};
    int np = fabs(periods[1] - periods[0]) < 0.25 ? 1 : 2;
    int levels[2] = {la, lb};
    int nl = la == lb ? 1 : 2;
    for (int li = 0; li < nl && out->nhits == 0; li++) {
        const level *L = &lv[levels[li]];
        if (L->white == NULL) {
            continue;
        }
        double scale = (double)(1u << levels[li]);
        for (int pi = 0; pi < np && out->nhits == 0; pi++) {
            double per = periods[pi] / scale;
            if (per < 40.0) {
                continue; /* below what the sync band resolves */
            }
            vfy_geom g = vfy_geom_upright(per);
            fold(L->white, L->w, L->h, &g, fd->tile, fd->wsum);
            /* A level's pixel i averages pixels 2^l i .. 2^l (i + 1) - 1:
             * the corner sits (2^l - 1) / 2 pixels into the tile. */
            double c0 = (scale - 1.0) / 2.0 * WM_CELLS / periods[pi];
            for (int at = 0; at < 2 && out->nhits == 0; at++) {
                find_offset_near(fd, sync, c0, c0, at == 0 ? 1.5 : 0.01);
                chips_of(fd, sync, fd2->wsum, chips);
                ct_status st = name_from(ctx, is, chips, keys, nkeys, out);
                if (st != CT_OK) {
                    return st;
                }
                if (out->nhits > 0) {
                    /* the verdict reports the map that named the mark */
                    out->period = periods[pi];
                    out->angle = 0;
                    out->mirrored = false;
                    out->sync_z = fd->z;
                }
            }
        }
    }
    return CT_OK;
}

ct_status vfy_detect(ct_ctx *ctx, const vfy_input *in, const uint8_t sync_key[WM_KEYBYTES],
                     const vfy_key *keys, size_t nkeys, vfy_result *out)
{
    ct_status st = CT_OK;
    level lv[NLEVEL];
    int nlv = 0;
    wm_sync sync;
    folded *fd = NULL, *fd2 = NULL;
    float chips[WM_NCELLS];

    issued_set is;
    memset(out, 0, sizeof *out);
    memset(lv, 0, sizeof lv);
    issued_init(&is, keys, nkeys, DETECT_FOLDS);
    out->issued_tests = is.tests_max;
    out->issued_z = -INFINITY;
    if (in->w < 64 || in->h < 64) {
        out->issued_z = 0;
        return CT_OK; /* too small to carry a tile: nothing found */
    }
    wm_sync_init(&sync, sync_key);
    fd = ct_malloc(ctx, sizeof *fd);
    fd2 = ct_malloc(ctx, sizeof *fd2);
    if (fd == NULL || fd2 == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    lv[0].w = in->w;
    lv[0].h = in->h;
    lv[0].y = (float *)in->y;
    lv[0].wt = (float *)in->weight;
    nlv = 1;
    while (nlv < NLEVEL && lv[nlv - 1].w / 2 >= 96 && lv[nlv - 1].h / 2 >= 96) {
        st = halve(ctx, &lv[nlv - 1], &lv[nlv]);
        nlv++;
        if (st != CT_OK) {
            goto done;
        }
    }
    /* Passes over the pyramid, most likely first, stopping at the first
     * authenticated mark. The first pass, on the half-size image, covers
     * what usually reaches an investigator (a tile period of 100..660
     * pixels: the original size, down to 40 % or up to 2.7x); then the full
     * size, for heavy downscales and for weak marks the half size misses;
     * then the coarser levels for big upscales. Levels too large for a quick spectrum are skipped. */
    int f = 0;
    while (f + 1 < nlv && (lv[f].w > 2048 || lv[f].h > 2048)) {
        f++;
    }
    pass_t pass[NLEVEL + 1];
    int npass = 0;
    if (f + 1 < nlv) {
        pass[npass++] = (pass_t){f + 1, 50.0, 330.0};
        pass[npass++] = (pass_t){f, 40.0, 330.0};
    } else {
        pass[npass++] = (pass_t){f, 40.0, 330.0};
    }
    for (int l = f + 2; l < nlv; l++) {
        pass[npass++] = (pass_t){l, 165.0, 330.0};
    }
    for (int ps = 0; ps < npass && out->nhits == 0; ps++) {
        level *L = &lv[pass[ps].level];
        cand cands[PER_LEVEL + VFY_EXTRA];
        int ncand = 0;
        if (L->white == NULL) {
            L->white = ct_mallocarray(ctx, (size_t)L->w * L->h, sizeof *L->white);
            if (L->white == NULL) {
                st = CT_ERR_NOMEM;
                goto done;
            }
            st = vfy_whiten(ctx, L->y, L->wt, L->w, L->h, MEAN_R, VAR_R, L->white);
            if (st != CT_OK) {
                goto done;
            }
        }
        vfy_geom g[PER_LEVEL + VFY_EXTRA];
        st = vfy_sync_search(ctx, L->white, L->w, L->h, &sync, pass[ps].pmin, pass[ps].pmax, g,
                             PER_LEVEL, &ncand);
        if (st != CT_OK) {
            goto done;
        }
        /* First-order check of the candidates whose spectral evidence is
         * near the best of their kind (upright maps against the best
         * upright one): fold and correlate the sync. */
        double best_up = 0;
        for (int c = 0; c < ncand; c++) {
            best_up = g[c].upright && g[c].score > best_up ? g[c].score : best_up;
        }
        for (int c = 0; c < ncand; c++) {
            cands[c].g = g[c];
            cands[c].level = pass[ps].level;
            cands[c].z = -INFINITY;
            if (g[c].score < 0.6 * (g[c].upright ? best_up : g[0].score)) {
                continue;
            }
            fold(L->white, L->w, L->h, &cands[c].g, fd->tile, fd->wsum);
            fold_offset(fd, fd2, &sync, &cands[c].g);
            cands[c].z = fd->z;
        }
        for (int a = 0; a < ncand; a++) {
            for (int b = a + 1; b < ncand; b++) {
                if (cands[b].z > cands[a].z) {
                    cand t = cands[a];
                    cands[a] = cands[b];
                    cands[b] = t;
                }
            }
        }
        /* Decode the strongest few. */
        for (int c = 0; c < ncand && c < DECODE_CANDS && out->nhits == 0; c++) {
            if (cands[c].z == -INFINITY) {
                break;
            }
            fold(L->white, L->w, L->h, &cands[c].g, fd->tile, fd->wsum);
            find_offset(fd, &sync);
            chips_of(fd, &sync, fd2->wsum, chips);
            /* Until a mark is named the verdict shows the strongest sync;
             * once one is, the map that named it (a stronger sync that
             * decoded nothing, e.g. a rotation close to the mirror of the
             * true map, must not be reported as the leak's geometry). */
            const double c_z = fd->z;
            if (c_z > out->sync_z || out->period == 0) {
                report_map(out, &cands[c], c_z);
            }
            st = name_from(ctx, &is, chips, keys, nkeys, out);
            if (st != CT_OK) {
                goto done;
            }
            if (out->nhits > 0) {
                report_map(out, &cands[c], c_z);
            }
            /* A clear sync that does not decode is often a map a little
             * off: refine it from patch offsets and try once more. */
            if (out->nhits == 0 && fd->z >= REFINE_Z &&
                refine_by_patches(L->white, L->w, L->h, &cands[c].g, fd, &sync, fd2)) {
                fold(L->white, L->w, L->h, &cands[c].g, fd->tile, fd->wsum);
                find_offset(fd, &sync);
                chips_of(fd, &sync, fd2->wsum, chips);
                st = name_from(ctx, &is, chips, keys, nkeys, out);
                if (st != CT_OK) {
                    goto done;
                }
                if (out->nhits > 0) { /* the refined map named it */
                    report_map(out, &cands[c], fd->z);
                }
            }
        }
    }
    if (out->nhits == 0) {
        st = try_native(ctx, lv, pass[0].level, pass[npass > 1 ? 1 : 0].level, &sync, keys, nkeys,
                        &is, fd, fd2, out);
        if (st != CT_OK) {
            goto done;
        }
    }
    out->false_positive_probability = fpp_of(out, &is);
    if (out->issued_z == -INFINITY) {
        out->issued_z = 0;
    }
done:
    free(is.code);
    free(is.lut);
    for (int l = 0; l < nlv; l++) {
        if (l > 0) {
            free(lv[l].y);
            free(lv[l].wt);
        }
        free(lv[l].white);
    }
    free(fd);
    free(fd2);
    return st;
}

ct_status vfy_try_geometry(ct_ctx *ctx, const vfy_input *in, const uint8_t sync_key[WM_KEYBYTES],
                           const vfy_key *keys, size_t nkeys, const vfy_geom *geom,
                           vfy_result *out)
{
    ct_status st = CT_OK;
    wm_sync sync;
    folded *fd = NULL, *fd2 = NULL;
    float *white = NULL;
    float chips[WM_NCELLS];
    vfy_geom g = *geom;
    issued_set is;

    memset(out, 0, sizeof *out);
    issued_init(&is, keys, nkeys, 2);
    out->issued_tests = is.tests_max;
    wm_sync_init(&sync, sync_key);
    fd = ct_malloc(ctx, sizeof *fd);
    fd2 = ct_malloc(ctx, sizeof *fd2);
    white = ct_mallocarray(ctx, (size_t)in->w * in->h, sizeof *white);
    if (fd == NULL || fd2 == NULL || white == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    st = vfy_whiten(ctx, in->y, in->weight, in->w, in->h, MEAN_R, VAR_R, white);
    if (st != CT_OK) {
        goto done;
    }
    for (int attempt = 0; attempt < 2 && out->nhits == 0; attempt++) {
        fold(white, in->w, in->h, &g, fd->tile, fd->wsum);
        find_offset(fd, &sync);
        chips_of(fd, &sync, fd2->wsum, chips);
        if (attempt == 0) {
            out->sync_z = fd->z;
        }
        st = name_from(ctx, &is, chips, keys, nkeys, out);
        if (st != CT_OK) {
            goto done;
        }
        if (out->nhits > 0 || !refine_by_patches(white, in->w, in->h, &g, fd, &sync, fd2)) {
            break;
        }
    }
    out->false_positive_probability = fpp_of(out, &is);
done:
    free(is.code);
    free(is.lut);
    free(fd);
    free(fd2);
    free(white);
    return st;
}

vfy_geom vfy_geom_upright(double period)
{
    return (vfy_geom){{{WM_CELLS / period, 0}, {0, WM_CELLS / period}}, 0, true};
}

double vfy_issued_z_min(uint64_t nserials)
{
    return nserials == 0 ? INFINITY : z_min_of(nserials * (uint64_t)DETECT_FOLDS);
}

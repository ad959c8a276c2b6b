/* media: JPEG through libjpeg-turbo (jpeglib.h).
 *
 * libjpeg's default error handler calls exit(); ours longjmps back with the
 * message. Some "warnings" mean data was lost (premature end of data,
 * corrupt entropy data): those fail too, so a truncated file never becomes
 * a half-gray image that gets marked and shipped. */
#include "media/med_int.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* jpeglib.h first: jerror.h's message list depends on jconfig.h. */
#include <jpeglib.h>

#include <jerror.h>

/* Progressive files may carry any number of scans; each one re-walks the
 * whole coefficient buffer. libjpeg-turbo's own fuzzers and tjbench cap
 * this at 500 to bound decode time on hostile input. */
#define MED_JPEG_MAX_SCANS 500

typedef struct jpeg_err {
    struct jpeg_error_mgr pub; /* first: libjpeg casts cinfo->err to this */
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void on_error_exit(j_common_ptr cinfo)
{
    jpeg_err *e = (jpeg_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jb, 1);
}

static void on_emit(j_common_ptr cinfo, int level)
{
    jpeg_err *e = (jpeg_err *)cinfo->err;
    if (level >= 0) {
        return; /* trace messages */
    }
    switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_MUST_RESYNC:
    case JWRN_HUFF_BAD_CODE:
#if JPEG_LIB_VERSION >= 70 || defined(C_ARITH_CODING_SUPPORTED) || defined(D_ARITH_CODING_SUPPORTED)
    case JWRN_ARITH_BAD_CODE:
#endif
    case JWRN_BOGUS_PROGRESSION:
        (*cinfo->err->format_message)(cinfo, e->msg);
        longjmp(e->jb, 1);
    default:
        /* Tolerable (extraneous bytes, odd Adobe transform...): ignored,
         * and never printed. */
        break;
    }
}

static void on_output(j_common_ptr cinfo)
{
    (void)cinfo;
}

static void on_progress(j_common_ptr cinfo)
{
    if (cinfo->is_decompressor &&
        ((j_decompress_ptr)cinfo)->input_scan_number > MED_JPEG_MAX_SCANS) {
        jpeg_err *e = (jpeg_err *)cinfo->err;
        snprintf(e->msg, sizeof e->msg, "more than %d scans", MED_JPEG_MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

static void err_init(jpeg_err *e)
{
    jpeg_std_error(&e->pub);
    e->pub.error_exit = on_error_exit;
    e->pub.emit_message = on_emit;
    e->pub.output_message = on_output;
    e->msg[0] = '\0';
}

/* The IJG/Annex K luminance table, natural order, as in jcparam.c. */
static const unsigned std_lum[64] = {
    16, 11, 10, 16, 24,  40,  51,  61,  12, 12, 14, 19, 26,  58,  60,  55,
    14, 13, 16, 24, 40,  57,  69,  56,  14, 17, 22, 29, 51,  87,  80,  62,
    18, 22, 37, 56, 68,  109, 103, 77,  24, 35, 55, 64, 81,  104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99};

/* The IJG quality whose scaled luminance table (jpeg_quality_scaling, as
 * jpeg_set_quality with force_baseline builds it) is closest to the
 * input's. Exact for files IJG-family encoders made; the nearest
 * approximation otherwise. Ties go to the higher quality. */
static int estimate_quality(const JQUANT_TBL *t)
{
    int best_q = 75;
    unsigned long best_err = (unsigned long)-1;

    if (t == NULL) {
        return best_q;
    }
    for (int q = 100; q >= 1; q--) {
        const long scale = q < 50 ? 5000 / q : 200 - 2 * q;
        unsigned long err = 0;
        for (int i = 0; i < 64; i++) {
            long v = ((long)std_lum[i] * scale + 50) / 100;
            v = v < 1 ? 1 : (v > 255 ? 255 : v);
            const long d = (long)t->quantval[i] - v;
            err += (unsigned long)(d < 0 ? -d : d);
        }
        if (err < best_err) {
            best_err = err;
            best_q = q;
        }
    }
    return best_q;
}

/* ---- coefficients (MED_READ_COEF) ---------------------------------------- */

/* Largest magnitude a quantised coefficient may have in an 8-bit baseline
 * or progressive file (10 bits for AC; a DC difference then fits in 11). */
#define COEF_MAX 1023

struct med_jcoef {
    /* The decompressor that read the file, kept alive: it owns the
     * coefficient arrays (no jpeg_finish_decompress, which frees them). */
    struct jpeg_decompress_struct cinfo;
    bool created;
    jpeg_err err; /* its error manager once the read is over */
    jvirt_barray_ptr *arrays;
    JBLOCKROW *yrows;    /* every block row of component 0 (Y or gray) */
    JDIMENSION ybw, ybh; /* blocks of it that cover the image */
    float q[DCTSIZE2];   /* its quantiser, natural order */
    float rq[DCTSIZE2];  /* 1 / q */
};

void med_jpeg_coef_free(med_jcoef *jc)
{
    if (jc == NULL) {
        return;
    }
    if (jc->created) {
        jpeg_destroy_decompress(&jc->cinfo);
    }
    free(jc->yrows);
    free(jc);
}

/* A component's quantiser as the decoder used it (latched at its first
 * scan); NULL if it has none or a zero step. */
static const JQUANT_TBL *comp_quant(const struct jpeg_decompress_struct *ci, int c)
{
    const jpeg_component_info *cp = &ci->comp_info[c];
    const JQUANT_TBL *qt = cp->quant_table;
    if (qt == NULL && cp->quant_tbl_no >= 0 && cp->quant_tbl_no < NUM_QUANT_TBLS) {
        qt = ci->quant_tbl_ptrs[cp->quant_tbl_no];
    }
    for (int i = 0; qt != NULL && i < DCTSIZE2; i++) {
        if (qt->quantval[i] == 0) {
            return NULL;
        }
    }
    return qt;
}

/* The 8-point DCT-II as JPEG defines it, orthonormal: m[u][x] =
 * c(u)/2 cos((2x+1) u pi / 16), c(0) = 1/sqrt 2. A block d (rows, then
 * columns) has coefficients F = M d M^T (F[a][b]: a vertical, b
 * horizontal frequency, libjpeg's natural order) and d = M^T F M.
 * A row of 8 floats is one vector (GCC vector extension: one AVX register,
 * two SSE ones), so each product is 64 multiply-adds of whole rows. */
typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));

/* A macro, not a function: a vector return value would change the ABI
 * between the AVX2 and the default build of the caller. */
#define V8_LOAD(dst, p) memcpy(&(dst), (p), sizeof(v8f))

#define COEF_BANDS 8u

typedef struct dct_mat {
    float m[DCTSIZE][DCTSIZE];  /* M */
    float mt[DCTSIZE][DCTSIZE]; /* M^T */
} dct_mat;

static void dct_mat_init(dct_mat *dm)
{
    for (int u = 0; u < DCTSIZE; u++) {
        const double cu = u == 0 ? sqrt(0.5) : 1.0;
        for (int x = 0; x < DCTSIZE; x++) {
            dm->m[u][x] = (float)(cu / 2.0 * cos((2 * x + 1) * u * M_PI / 16.0));
            dm->mt[x][u] = dm->m[u][x];
        }
    }
}

/* out[i] = sum_k a[i][k] * rows[k]: a matrix of scalars times 8 rows. */
static inline void rows_mul(const float a[DCTSIZE][DCTSIZE], const v8f *rows, v8f *out)
{
    for (int i = 0; i < DCTSIZE; i++) {
        v8f s = rows[0] * a[i][0];
        for (int k = 1; k < DCTSIZE; k++) {
            s += rows[k] * a[i][k];
        }
        out[i] = s;
    }
}

/* out[i] = sum_k rows[i][k] * mrows[k]: 8 rows times a matrix of rows. */
static inline void mul_rows(const v8f *rows, const v8f *mrows, v8f *out)
{
    for (int i = 0; i < DCTSIZE; i++) {
        v8f s = mrows[0] * rows[i][0];
        for (int k = 1; k < DCTSIZE; k++) {
            s += mrows[k] * rows[i][k];
        }
        out[i] = s;
    }
}

/* The first n block rows of a component's array. The arrays are whole in
 * memory (libjpeg-turbo has no backing store), so the pointers stay valid
 * and bands on several threads may use them at once. */
static JBLOCKROW *coef_rows(ct_ctx *ctx, struct jpeg_decompress_struct *ci,
                            jvirt_barray_ptr arr, JDIMENSION n, bool writable)
{
    JBLOCKROW *rows = ct_mallocarray(ctx, n > 0 ? n : 1, sizeof *rows);
    for (JDIMENSION r = 0; rows != NULL && r < n; r++) {
        rows[r] = (*ci->mem->access_virt_barray)((j_common_ptr)ci, arr, r, 1,
                                                 writable ? TRUE : FALSE)[0];
    }
    return rows;
}

/* Pixels of the block starting at i0 that lie inside n (8 but at the edge). */
static inline uint32_t block_span(uint32_t n, uint32_t i0)
{
    return n - i0 < DCTSIZE ? n - i0 : DCTSIZE;
}

/* A block's samples as a decoder makes them: dequantised, M^T F M, level
 * shift, to the nearest level within 0..255. The read's pixels and the
 * mark's reported change both come from here, so an unchanged block
 * reports no change. */
static inline void block_decode(const JCOEF *c, const v8f *q, const v8f *mrow,
                                const float mt[DCTSIZE][DCTSIZE], v8i *px)
{
    v8f f[DCTSIZE], t[DCTSIZE], d[DCTSIZE];
    for (int a = 0; a < DCTSIZE; a++) {
        v8i ci;
        for (int b = 0; b < DCTSIZE; b++) {
            ci[b] = c[a * DCTSIZE + b];
        }
        f[a] = __builtin_convertvector(ci, v8f) * q[a];
    }
    mul_rows(f, mrow, t); /* t = F M */
    rows_mul(mt, t, d);   /* d = M^T t */
    const v8f lo = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    const v8f hi = lo + 255.0f, mid = lo + 128.5f;
    for (int y = 0; y < DCTSIZE; y++) {
        v8f v = d[y] + mid;
        v = (v8f)(((v8i)v & (v > lo)) | ((v8i)lo & ~(v > lo)));
        v = (v8f)(((v8i)v & (v < hi)) | ((v8i)hi & ~(v < hi)));
        px[y] = __builtin_convertvector(v, v8i);
    }
}

/* ---- coefficients to pixels (the read) ---- */

typedef struct pix_job {
    const JBLOCKROW *rows;
    JDIMENSION bw, bh; /* blocks decoded */
    float q[DCTSIZE2];
    uint8_t *out;
    size_t stride;
    uint32_t ow, oh; /* pixels written */
    unsigned nbands; /* block-row bands it is cut into */
    dct_mat dm;
} pix_job;

CT_SIMD_CLONES
static void pix_band(const pix_job *jb, unsigned band)
{
    const JDIMENSION r0 = (JDIMENSION)((uint64_t)jb->bh * band / jb->nbands);
    const JDIMENSION r1 = (JDIMENSION)((uint64_t)jb->bh * (band + 1) / jb->nbands);
    v8f mrow[DCTSIZE], q[DCTSIZE];
    for (int i = 0; i < DCTSIZE; i++) {
        V8_LOAD(mrow[i], jb->dm.m[i]);
        V8_LOAD(q[i], jb->q + i * DCTSIZE);
    }
    for (JDIMENSION by = r0; by < r1; by++) {
        const uint32_t y0 = by * DCTSIZE;
        const uint32_t ny = block_span(jb->oh, y0);
        for (JDIMENSION bx = 0; bx < jb->bw; bx++) {
            const uint32_t x0 = bx * DCTSIZE;
            const uint32_t nx = block_span(jb->ow, x0);
            v8i px[DCTSIZE];
            block_decode(jb->rows[by][bx], q, mrow, jb->dm.mt, px);
            for (uint32_t y = 0; y < ny; y++) {
                uint8_t *o = jb->out + (size_t)(y0 + y) * jb->stride + x0;
                for (uint32_t x = 0; x < nx; x++) {
                    o[x] = (uint8_t)px[y][x];
                }
            }
        }
    }
}

/* The components of one read, decoded in one set of bands: the first
 * component's (Y) cut into COEF_BANDS, each other into a share by its
 * size, so the threads start once and balance across all of them. */
typedef struct pix_set {
    pix_job job[3];
    unsigned first[4]; /* job c has bands first[c] .. first[c + 1] - 1 */
    int n;
} pix_set;

static void pix_set_band(void *arg, unsigned band)
{
    const pix_set *ps = arg;
    int c = 0;
    while (c + 1 < ps->n && band >= ps->first[c + 1]) {
        c++;
    }
    pix_band(&ps->job[c], band - ps->first[c]);
}

/* Add component c's blocks (bw x bh of rows) to the set, decoded into out
 * (stride bytes a row; ow x oh pixels written, the rest of each block
 * dropped). */
static ct_status pix_add(ct_ctx *ctx, const char *name, struct jpeg_decompress_struct *ci,
                         pix_set *ps, const JBLOCKROW *rows, int c, JDIMENSION bw, JDIMENSION bh,
                         uint8_t *out, size_t stride, uint32_t ow, uint32_t oh)
{
    const JQUANT_TBL *qt = comp_quant(ci, c);
    if (qt == NULL) {
        return ct_fail(ctx, CT_ERR_FORMAT, "%s: JPEG has no usable quantisation table", name);
    }
    pix_job *jb = &ps->job[ps->n];
    *jb = (pix_job){rows, bw, bh, {0}, out, stride, ow, oh, COEF_BANDS, {{{0}}, {{0}}}};
    for (int i = 0; i < DCTSIZE2; i++) {
        jb->q[i] = (float)qt->quantval[i];
    }
    dct_mat_init(&jb->dm);
    if (ps->n > 0) {
        /* A share of bands by blocks, at least one. */
        const uint64_t y = (uint64_t)ps->job[0].bw * ps->job[0].bh, me = (uint64_t)bw * bh;
        const uint64_t nb = y > 0 ? (me * COEF_BANDS + y - 1) / y : 1;
        jb->nbands = nb < 1 ? 1u : (nb > COEF_BANDS ? COEF_BANDS : (unsigned)nb);
    }
    ps->first[ps->n + 1] = ps->first[ps->n] + jb->nbands;
    ps->n++;
    return CT_OK;
}

/* ---- a change of luma into the coefficients (the mark) ---- */

typedef struct coef_job {
    med_jcoef *jc;
    float *delta;
    const uint8_t *pix; /* the Y plane as read (block_decode of the old coefficients) */
    uint32_t w, h;
    dct_mat dm;
} coef_job;

CT_SIMD_CLONES
static void coef_band(void *arg, unsigned band)
{
    const coef_job *jb = arg;
    med_jcoef *jc = jb->jc;
    const JDIMENSION r0 = (JDIMENSION)((uint64_t)jc->ybh * band / COEF_BANDS);
    const JDIMENSION r1 = (JDIMENSION)((uint64_t)jc->ybh * (band + 1) / COEF_BANDS);
    v8f mrow[DCTSIZE], mtrow[DCTSIZE], q[DCTSIZE], rq[DCTSIZE];
    for (int i = 0; i < DCTSIZE; i++) {
        V8_LOAD(mrow[i], jb->dm.m[i]);
        V8_LOAD(mtrow[i], jb->dm.mt[i]);
        V8_LOAD(q[i], jc->q + i * DCTSIZE);
        V8_LOAD(rq[i], jc->rq + i * DCTSIZE);
    }
    const v8f zero = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    const v8f half = zero + 0.5f, lim = zero + (float)(2 * COEF_MAX);
    const v8i cmax = {COEF_MAX, COEF_MAX, COEF_MAX, COEF_MAX,
                      COEF_MAX, COEF_MAX, COEF_MAX, COEF_MAX};

    for (JDIMENSION by = r0; by < r1; by++) {
        const uint32_t y0 = by * DCTSIZE;
        const uint32_t ny = block_span(jb->h, y0);
        for (JDIMENSION bx = 0; bx < jc->ybw; bx++) {
            const uint32_t x0 = bx * DCTSIZE;
            const uint32_t nx = block_span(jb->w, x0);
            /* The change in this block; none past the image's edge. */
            v8f d[DCTSIZE], t[DCTSIZE], f[DCTSIZE];
            for (uint32_t y = 0; y < DCTSIZE; y++) {
                const float *src = jb->delta + (size_t)(y0 + y) * jb->w + x0;
                if (y < ny && nx == DCTSIZE) {
                    V8_LOAD(d[y], src);
                } else {
                    float tmp[DCTSIZE] = {0};
                    if (y < ny) {
                        memcpy(tmp, src, nx * sizeof(float));
                    }
                    V8_LOAD(d[y], tmp);
                }
            }
            mul_rows(d, mtrow, t);     /* t = d M^T */
            rows_mul(jb->dm.m, t, f); /* F = M t */
            /* Quantised with the file's own steps (halves away from zero)
             * and added within the coefficient range; f becomes what was
             * added, dequantised. */
            JCOEF *c = jc->yrows[by][bx];
            v8i any = {0};
            for (int a = 0; a < DCTSIZE; a++) {
                v8f x = f[a] * rq[a];
                /* Saturated before converting (NaN becomes 0). */
                const v8i in = (x < lim) & (x > -lim), big = x >= lim, small = x <= -lim;
                x = (v8f)(((v8i)x & in) | ((v8i)lim & big) | ((v8i)(-lim) & small));
                const v8i neg = x < zero;
                x += (v8f)(((v8i)half & ~neg) | ((v8i)(-half) & neg));
                const v8i k = __builtin_convertvector(x, v8i);
                v8i old;
                for (int b = 0; b < DCTSIZE; b++) {
                    old[b] = c[a * DCTSIZE + b];
                }
                v8i nv = old + k;
                nv = (nv & (nv <= cmax)) | (cmax & (nv > cmax));
                nv = (nv & (nv >= -cmax)) | (-cmax & (nv < -cmax));
                /* Untouched where nothing was added (a stored value out
                 * of range stays as it was). */
                const v8i keep = k == 0;
                nv = (old & keep) | (nv & ~keep);
                const v8i got = nv - old;
                for (int b = 0; b < DCTSIZE; b++) {
                    c[a * DCTSIZE + b] = (JCOEF)nv[b];
                }
                any |= got;
            }
            bool changed = false;
            for (int b = 0; b < DCTSIZE; b++) {
                changed = changed || any[b] != 0;
            }
            /* The change a decoder shows: the block decoded again, less
             * the pixels as read. */
            v8i px[DCTSIZE];
            if (changed) {
                block_decode(c, q, mrow, jb->dm.mt, px);
            }
            for (uint32_t y = 0; y < ny; y++) {
                float *o = jb->delta + (size_t)(y0 + y) * jb->w + x0;
                const uint8_t *old = jb->pix + (size_t)(y0 + y) * jb->w + x0;
                for (uint32_t x = 0; x < nx; x++) {
                    o[x] = changed ? (float)(px[y][x] - (int)old[x]) : 0.0f;
                }
            }
        }
    }
}

ct_status med_jpeg_coef_add(ct_ctx *ctx, med_image *img, float *delta, unsigned threads)
{
    if (img == NULL || img->coef == NULL || img->coef->yrows == NULL || delta == NULL) {
        return ct_fail(ctx, CT_ERR_MISUSE, "med_jpeg_coef_add: no coefficients");
    }
    coef_job jb = {img->coef, delta, img->pix, img->w, img->h, {{{0}}, {{0}}}};
    dct_mat_init(&jb.dm);
    ct_parallel(COEF_BANDS, threads, coef_band, &jb);
    return CT_OK;
}

typedef struct jpeg_rd {
    ct_ctx *ctx;
    const char *name;
    unsigned flags;
    const uint8_t *data;
    size_t size;
    struct jpeg_decompress_struct own;
    struct jpeg_decompress_struct *ci; /* &own, or coef->cinfo (MED_READ_COEF) */
    bool created;
    jpeg_err err;
    struct jpeg_progress_mgr progress;
    med_image *img;
    ct_status st;
    med_jcoef *coef; /* MED_READ_COEF: where the decompressor lives */
    bool coef_read;  /* the file was read as coefficients */
} jpeg_rd;

/* The Y'CbCr layouts read and written as planes: Y at 1 or 2 in each
 * direction, chroma at 1x1 (4:4:4, 4:2:2, 4:4:0, 4:2:0). Anything rarer
 * goes through RGB as before. */
static bool ycc_sampling_ok(const struct jpeg_decompress_struct *ci)
{
    if (ci->jpeg_color_space != JCS_YCbCr || ci->num_components != 3) {
        return false;
    }
    const jpeg_component_info *c = ci->comp_info;
    return c[0].h_samp_factor >= 1 && c[0].h_samp_factor <= 2 && c[0].v_samp_factor >= 1 &&
           c[0].v_samp_factor <= 2 && c[1].h_samp_factor == 1 && c[1].v_samp_factor == 1 &&
           c[2].h_samp_factor == 1 && c[2].v_samp_factor == 1;
}

/* Row pointers of iMCU row `m` of every plane, for jpeg_read/write_raw_data. */
static void ycc_rows(const med_image *img, unsigned m, JSAMPROW rows[3][2 * DCTSIZE],
                     JSAMPARRAY arr[3])
{
    for (int c = 0; c < 3; c++) {
        const size_t n = (size_t)img->jpeg_v[c] * DCTSIZE;
        for (size_t r = 0; r < n; r++) {
            rows[c][r] = img->plane[c] + ((size_t)m * n + r) * img->plane_w[c];
        }
        arr[c] = rows[c];
    }
}

/* Decode the components as stored (raw_data_out): no upsampling, no colour
 * conversion. Called after the header checks and the pixel limit. */
static int read_ycc(jpeg_rd *rd)
{
    struct jpeg_decompress_struct *ci = rd->ci;
    med_image *img = rd->img;

    ci->raw_data_out = TRUE;
    jpeg_start_decompress(ci);
    img->ycc = true;
    img->w = ci->image_width;
    img->h = ci->image_height;
    img->channels = 1;
    img->depth = 8;
    img->imcu_rows = ci->total_iMCU_rows;
    for (int c = 0; c < 3; c++) {
        const jpeg_component_info *cp = &ci->comp_info[c];
        img->plane_w[c] = (size_t)cp->width_in_blocks * DCTSIZE;
        img->plane_h[c] = (size_t)ci->total_iMCU_rows * cp->v_samp_factor * DCTSIZE;
        /* At most the image rounded up to 16 pixels each way: the pixel
         * limit already bounds it. */
        img->plane[c] = ct_malloc(rd->ctx, img->plane_w[c] * img->plane_h[c]);
        if (img->plane[c] == NULL) {
            rd->st = CT_ERR_NOMEM;
            return 1;
        }
    }
    img->pix = ct_malloc(rd->ctx, (size_t)img->w * img->h);
    if (img->pix == NULL) {
        rd->st = CT_ERR_NOMEM;
        return 1;
    }
    JSAMPROW rows[3][2 * DCTSIZE];
    JSAMPARRAY arr[3];
    const JDIMENSION lines = (JDIMENSION)ci->max_v_samp_factor * DCTSIZE;
    for (unsigned m = 0; m < img->imcu_rows; m++) {
        ycc_rows(img, m, rows, arr);
        if (jpeg_read_raw_data(ci, arr, lines) != lines) {
            rd->st = ct_fail(rd->ctx, CT_ERR_FORMAT, "%s: JPEG data ended early", rd->name);
            return 1;
        }
    }
    for (uint32_t y = 0; y < img->h; y++) {
        memcpy((uint8_t *)img->pix + (size_t)y * img->w, img->plane[0] + y * img->plane_w[0],
               img->w);
    }
    return 0;
}

/* MED_READ_COEF: the coefficients as stored (entropy decoding only), and
 * the pixels the mark needs made from them here: the Y (or gray) plane as
 * pix, and for Y'CbCr the chroma planes as read_ycc keeps them (for the
 * rooms). No second pass over the file. Called after the header checks
 * and the pixel limit. */
static int read_coef(jpeg_rd *rd, bool gray)
{
    struct jpeg_decompress_struct *ci = rd->ci;
    med_jcoef *jc = rd->coef;
    med_image *img = rd->img;

    jc->arrays = jpeg_read_coefficients(ci);
    rd->coef_read = true;
    if (jc->arrays == NULL) {
        rd->st = ct_fail(rd->ctx, CT_ERR_FORMAT, "%s: JPEG has no coefficients", rd->name);
        return 1;
    }
    img->w = ci->image_width;
    img->h = ci->image_height;
    img->channels = 1;
    img->depth = 8;
    img->ycc = !gray;
    img->imcu_rows = ci->total_iMCU_rows;
    const jpeg_component_info *c0 = &ci->comp_info[0];
    const JQUANT_TBL *qt = comp_quant(ci, 0);
    jc->ybw = (img->w + DCTSIZE - 1) / DCTSIZE;
    jc->ybh = (img->h + DCTSIZE - 1) / DCTSIZE;
    if (qt == NULL || c0->h_samp_factor != ci->max_h_samp_factor ||
        c0->v_samp_factor != ci->max_v_samp_factor || jc->ybw > c0->width_in_blocks ||
        jc->ybh > c0->height_in_blocks) {
        rd->st = ct_fail(rd->ctx, CT_ERR_FORMAT, "%s: unsupported JPEG layout", rd->name);
        return 1;
    }
    for (int i = 0; i < DCTSIZE2; i++) {
        jc->q[i] = (float)qt->quantval[i];
        jc->rq[i] = 1.0f / jc->q[i];
    }
    jc->yrows = coef_rows(rd->ctx, ci, jc->arrays[0], jc->ybh, true);
    img->pix = ct_malloc(rd->ctx, (size_t)img->w * img->h);
    if (jc->yrows == NULL || img->pix == NULL) {
        rd->st = CT_ERR_NOMEM;
        return 1;
    }
    /* Y and, for Y'CbCr, the chroma planes (for the rooms), decoded in
     * one set of bands. */
    pix_set ps;
    memset(&ps, 0, sizeof ps);
    JBLOCKROW *crows[3] = {NULL, NULL, NULL};
    rd->st = pix_add(rd->ctx, rd->name, ci, &ps, jc->yrows, 0, jc->ybw, jc->ybh, img->pix, img->w,
                     img->w, img->h);
    for (int c = 1; c < 3 && rd->st == CT_OK && !gray; c++) {
        const jpeg_component_info *cp = &ci->comp_info[c];
        img->plane_w[c] = (size_t)cp->width_in_blocks * DCTSIZE;
        img->plane_h[c] = (size_t)ci->total_iMCU_rows * cp->v_samp_factor * DCTSIZE;
        const JDIMENSION bh = cp->height_in_blocks < img->plane_h[c] / DCTSIZE
                                  ? cp->height_in_blocks
                                  : (JDIMENSION)(img->plane_h[c] / DCTSIZE);
        img->plane[c] = ct_calloc(rd->ctx, img->plane_w[c], img->plane_h[c]);
        crows[c] = coef_rows(rd->ctx, ci, jc->arrays[c], bh, false);
        if (img->plane[c] == NULL || crows[c] == NULL) {
            rd->st = CT_ERR_NOMEM;
            break;
        }
        rd->st = pix_add(rd->ctx, rd->name, ci, &ps, crows[c], c, cp->width_in_blocks, bh,
                         img->plane[c], img->plane_w[c], (uint32_t)img->plane_w[c],
                         (uint32_t)img->plane_h[c]);
    }
    if (rd->st == CT_OK) {
        ct_parallel(ps.first[ps.n], ct_image_threads(), pix_set_band, &ps);
    }
    free(crows[1]);
    free(crows[2]);
    return rd->st != CT_OK;
}

static int decode(jpeg_rd *rd)
{
    struct jpeg_decompress_struct *ci = rd->ci;

    if (setjmp(rd->err.jb)) {
        return 1;
    }
    jpeg_create_decompress(ci);
    rd->created = true;
    ci->progress = &rd->progress;
    jpeg_mem_src(ci, rd->data, (unsigned long)rd->size);
    jpeg_save_markers(ci, JPEG_COM, 0xffff);
    for (int m = 0; m < 16; m++) {
        jpeg_save_markers(ci, JPEG_APP0 + m, 0xffff);
    }
    if (jpeg_read_header(ci, TRUE) != JPEG_HEADER_OK) {
        rd->st = ct_fail(rd->ctx, CT_ERR_FORMAT, "%s: JPEG has no image", rd->name);
        return 1;
    }
    if (ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK) {
        rd->st = ct_fail(rd->ctx, CT_ERR_FORMAT, "%s: CMYK JPEG is not supported", rd->name);
        return 1;
    }
    const bool gray = ci->jpeg_color_space == JCS_GRAYSCALE;
    if (!(gray && ci->num_components == 1) && ci->num_components != 3) {
        rd->st = ct_fail(rd->ctx, CT_ERR_FORMAT, "%s: unsupported JPEG colour space", rd->name);
        return 1;
    }
    size_t bytes;
    const unsigned ch = gray ? 1 : 3;
    rd->st = med_check_size(rd->ctx, rd->name, ci->image_width, ci->image_height, ch, 8, &bytes);
    if (rd->st != CT_OK) {
        return 1;
    }
    med_image *img = rd->img;
    img->jpeg_quality = estimate_quality(ci->quant_tbl_ptrs[0]);
    img->jpeg_progressive = ci->progressive_mode != 0;
    img->jpeg_ncomp = ci->num_components;
    for (int c = 0; c < ci->num_components; c++) {
        img->jpeg_h[c] = (uint8_t)ci->comp_info[c].h_samp_factor;
        img->jpeg_v[c] = (uint8_t)ci->comp_info[c].v_samp_factor;
    }
    img->jpeg_jfif = ci->saw_JFIF_marker != 0;
    img->jfif_major = ci->JFIF_major_version;
    img->jfif_minor = ci->JFIF_minor_version;
    img->density_unit = ci->density_unit;
    img->x_density = ci->X_density;
    img->y_density = ci->Y_density;

    ci->dct_method = JDCT_ISLOW;
    if (rd->coef != NULL && ci->data_precision == 8 &&
        ((gray && ci->num_components == 1) || ycc_sampling_ok(ci))) {
        if (read_coef(rd, gray) != 0) {
            return 1;
        }
    } else     if ((rd->flags & (MED_READ_YCC | MED_READ_COEF)) && ycc_sampling_ok(ci)) {
        if (read_ycc(rd) != 0) {
            return 1;
        }
    } else {
        ci->out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
        img->pix = ct_malloc(rd->ctx, bytes);
        if (img->pix == NULL) {
            rd->st = CT_ERR_NOMEM;
            return 1;
        }
        jpeg_start_decompress(ci);
        if (ci->output_width != ci->image_width || ci->output_height != ci->image_height ||
            (unsigned)ci->output_components != ch) {
            rd->st = ct_fail(rd->ctx, CT_ERR_FORMAT, "%s: unexpected JPEG output shape", rd->name);
            return 1;
        }
        img->w = ci->output_width;
        img->h = ci->output_height;
        img->channels = ch;
        img->depth = 8;
        const size_t stride = (size_t)img->w * ch;
        while (ci->output_scanline < ci->output_height) {
            JSAMPROW row = (JSAMPROW)img->pix + (size_t)ci->output_scanline * stride;
            if (jpeg_read_scanlines(ci, &row, 1) != 1) {
                rd->st = ct_fail(rd->ctx, CT_ERR_FORMAT, "%s: JPEG data ended early", rd->name);
                return 1;
            }
        }
    }
    /* Markers are complete once the header is read; keep them in file
     * order. JFIF APP0 is rewritten by libjpeg itself, Adobe APP14 too when
     * needed (copying it could declare the wrong colour transform). */
    for (jpeg_saved_marker_ptr m = ci->marker_list; m != NULL; m = m->next) {
        if (m->marker == JPEG_APP0 && m->data_length >= 5 && memcmp(m->data, "JFIF\0", 5) == 0) {
            continue;
        }
        if (m->marker == JPEG_APP0 + 14 && m->data_length >= 5 &&
            memcmp(m->data, "Adobe", 5) == 0) {
            continue;
        }
        rd->st = med_meta_add(rd->ctx, img, m->marker, MED_WHERE_HEAD, m->data, m->data_length);
        if (rd->st != CT_OK) {
            return 1;
        }
    }
    /* The ICC profile is also kept whole, for a PNG output's iCCP. */
    JOCTET *icc = NULL;
    unsigned int icc_len = 0;
    if (jpeg_read_icc_profile(ci, &icc, &icc_len) && icc != NULL) {
        img->icc = ct_malloc(rd->ctx, icc_len);
        if (img->icc == NULL) {
            free(icc);
            rd->st = CT_ERR_NOMEM;
            return 1;
        }
        memcpy(img->icc, icc, icc_len);
        img->icc_len = icc_len;
        free(icc);
    }
    /* Finishing would free the coefficients the writer needs. */
    if (!rd->coef_read) {
        jpeg_finish_decompress(ci);
    }
    return 0;
}

ct_status med_jpeg_read(ct_ctx *ctx, const uint8_t *data, size_t size, const char *name,
                        unsigned flags, med_image **out)
{
    ct_status st;
    jpeg_rd *rd = NULL;

    *out = NULL;
    if (size > 0xffffffffu) {
        st = ct_fail(ctx, CT_ERR_LIMIT, "%s: JPEG file is too large", name);
        goto done;
    }
    /* On the heap: jmp_buf and the libjpeg structs are large. */
    rd = ct_calloc(ctx, 1, sizeof *rd);
    if (rd == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    rd->ctx = ctx;
    rd->name = name;
    rd->flags = flags;
    rd->data = data;
    rd->size = size;
    rd->st = CT_OK;
    st = med_alloc(ctx, MED_KIND_JPEG, &rd->img);
    if (st != CT_OK) {
        goto done;
    }
    /* With MED_READ_COEF the decompressor lives in the coefficients'
     * holder from the start: it owns the arrays, so it goes with them. */
    rd->ci = &rd->own;
    if (flags & MED_READ_COEF) {
        rd->coef = ct_calloc(ctx, 1, sizeof *rd->coef);
        if (rd->coef == NULL) {
            st = CT_ERR_NOMEM;
            goto done;
        }
        rd->ci = &rd->coef->cinfo;
    }
    err_init(&rd->err);
    rd->ci->err = &rd->err.pub;
    rd->progress.progress_monitor = on_progress;
    if (decode(rd) != 0) {
        if (rd->st != CT_OK) {
            st = rd->st;
        } else {
            /* libjpeg-turbo holds whole-image buffers in memory only; a
             * JPEGMEM limit below their size ends here, not in bad data. */
            st = rd->err.pub.msg_code == JERR_NO_BACKING_STORE
                     ? ct_fail(ctx, CT_ERR_LIMIT, "%s: JPEG needs more memory than JPEGMEM allows",
                               name)
                     : ct_fail(ctx, CT_ERR_FORMAT, "%s: corrupt JPEG (%s)", name, rd->err.msg);
        }
        goto done;
    }
    if (rd->coef_read) {
        /* The image takes the decompressor. It reads nothing more (the
         * file is freed after this), and errors from here on (the
         * writer's access to the arrays) go to its own handler. */
        med_jcoef *jc = rd->coef;
        err_init(&jc->err);
        jc->cinfo.err = &jc->err.pub;
        jc->cinfo.progress = NULL;
        jc->created = true;
        rd->created = false;
        rd->img->coef = jc;
        rd->coef = NULL;
    }
    *out = rd->img;
    rd->img = NULL;
done:
    if (rd != NULL) {
        if (rd->created) {
            jpeg_destroy_decompress(rd->ci);
        }
        med_jpeg_coef_free(rd->coef); /* not created: only its memory */
        med_image_free(rd->img);
        free(rd);
    }
    return st;
}

/* ---- writing ------------------------------------------------------------- */

typedef struct jpeg_wr {
    ct_ctx *ctx;
    const med_image *img;
    int quality;
    FILE *fp;
    struct jpeg_compress_struct cinfo;
    bool created;
    jpeg_err err;
    uint8_t *row; /* one converted scanline */
} jpeg_wr;

/* One output row: 16-bit to 8-bit, and alpha flattened onto white (JPEG
 * has no alpha; white is what viewers show for a transparent cel). */
static void convert_row(const med_image *img, size_t y, uint8_t *out)
{
    const unsigned ch = img->channels;
    const unsigned ncol = ch >= 3 ? 3 : 1;
    const bool alpha = ch == 2 || ch == 4;
    const size_t w = img->w;
    const size_t base = y * w * ch;

    if (img->depth == 8) {
        const uint8_t *p = (const uint8_t *)img->pix + base;
        for (size_t x = 0; x < w; x++, p += ch) {
            const unsigned a = alpha ? p[ch - 1] : 255u;
            for (unsigned c = 0; c < ncol; c++) {
                const unsigned v = alpha ? (p[c] * a + 255u * (255u - a) + 127u) / 255u : p[c];
                *out++ = (uint8_t)v;
            }
        }
    } else {
        const uint16_t *p = (const uint16_t *)img->pix + base;
        for (size_t x = 0; x < w; x++, p += ch) {
            const uint64_t a = alpha ? p[ch - 1] : 65535u;
            for (unsigned c = 0; c < ncol; c++) {
                uint64_t v = p[c];
                if (alpha) {
                    v = (v * a + 65535u * (65535u - a) + 32767u) / 65535u;
                }
                *out++ = (uint8_t)((v * 255u + 32767u) / 65535u);
            }
        }
    }
}

/* APP and COM segments as read (JFIF and Adobe are libjpeg's own). */
static void write_markers(struct jpeg_compress_struct *ci, const med_image *img)
{
    for (size_t i = 0; i < img->nmeta; i++) {
        const med_meta_item *m = &img->meta[i];
        if (m->len <= 65533) {
            jpeg_write_marker(ci, (int)m->id, m->data, (unsigned)m->len);
        }
    }
}

/* The coefficients as they are now, with the input's tables, sampling and
 * progression: Huffman coding only, no DCT. */
static void encode_coef(jpeg_wr *wr)
{
    const med_image *img = wr->img;
    struct jpeg_compress_struct *ci = &wr->cinfo;

    jpeg_copy_critical_parameters(&img->coef->cinfo, ci);
    if (img->jpeg_progressive) {
        jpeg_simple_progression(ci);
    }
    ci->write_JFIF_header = img->jpeg_jfif ? TRUE : FALSE;
    jpeg_write_coefficients(ci, img->coef->arrays);
    write_markers(ci, img);
    jpeg_finish_compress(ci);
}

static int encode(jpeg_wr *wr)
{
    const med_image *img = wr->img;
    struct jpeg_compress_struct *ci = &wr->cinfo;
    const bool gray = img->channels <= 2;

    if (setjmp(wr->err.jb)) {
        return 1;
    }
    jpeg_create_compress(ci);
    wr->created = true;
    jpeg_stdio_dest(ci, wr->fp);
    if (img->coef != NULL) {
        encode_coef(wr);
        return 0;
    }
    ci->image_width = img->w;
    ci->image_height = img->h;
    ci->input_components = img->ycc ? 3 : (gray ? 1 : 3);
    ci->in_color_space = img->ycc ? JCS_YCbCr : (gray ? JCS_GRAYSCALE : JCS_RGB);
    jpeg_set_defaults(ci);
    jpeg_set_quality(ci, wr->quality, TRUE);
    ci->dct_method = JDCT_ISLOW;
    ci->raw_data_in = img->ycc ? TRUE : FALSE;
    if (img->kind == MED_KIND_JPEG) {
        /* Keep the input's shape: sampling, progressive, JFIF density. */
        if (img->jpeg_ncomp == ci->num_components) {
            for (int c = 0; c < ci->num_components; c++) {
                if (img->jpeg_h[c] >= 1 && img->jpeg_h[c] <= 4 && img->jpeg_v[c] >= 1 &&
                    img->jpeg_v[c] <= 4) {
                    ci->comp_info[c].h_samp_factor = img->jpeg_h[c];
                    ci->comp_info[c].v_samp_factor = img->jpeg_v[c];
                }
            }
        }
        if (img->jpeg_progressive) {
            jpeg_simple_progression(ci);
        }
        ci->write_JFIF_header = img->jpeg_jfif ? TRUE : FALSE;
        if (img->jpeg_jfif) {
            ci->JFIF_major_version = img->jfif_major;
            ci->JFIF_minor_version = img->jfif_minor;
            ci->density_unit = img->density_unit;
            ci->X_density = img->x_density;
            ci->Y_density = img->y_density;
        }
    }
    jpeg_start_compress(ci, TRUE);
    if (img->kind == MED_KIND_JPEG) {
        write_markers(ci, img);
    }
    if (img->ycc) {
        /* Y from pix (the image as changed), inside the padding the
         * decoder produced (wr->row holds one iMCU row of it); the chroma
         * planes as they were read. */
        JSAMPROW rows[3][2 * DCTSIZE];
        JSAMPARRAY arr[3];
        const JDIMENSION lines = (JDIMENSION)ci->max_v_samp_factor * DCTSIZE;
        const size_t pw = img->plane_w[0];
        for (unsigned m = 0; m < img->imcu_rows; m++) {
            ycc_rows(img, m, rows, arr);
            for (JDIMENSION r = 0; r < lines; r++) {
                size_t y = (size_t)m * lines + r;
                uint8_t *dst = wr->row + r * pw;
                memcpy(dst, rows[0][r], pw);
                if (y < img->h) {
                    memcpy(dst, (const uint8_t *)img->pix + y * img->w, img->w);
                }
                rows[0][r] = dst;
            }
            (void)jpeg_write_raw_data(ci, arr, lines);
        }
    } else {
        while (ci->next_scanline < ci->image_height) {
            JSAMPROW row = wr->row;
            convert_row(img, ci->next_scanline, wr->row);
            (void)jpeg_write_scanlines(ci, &row, 1);
        }
    }
    jpeg_finish_compress(ci);
    return 0;
}

ct_status med_jpeg_write(ct_ctx *ctx, const med_image *img, const char *path, int quality,
                         const med_write_opts *opts)
{
    ct_status st = CT_OK;
    jpeg_wr *wr = NULL;
    bool created = false;

    if (img->channels < 1 || img->channels > 4 || (img->depth != 8 && img->depth != 16) ||
        img->w == 0 || img->h == 0 || img->w > JPEG_MAX_DIMENSION ||
        img->h > JPEG_MAX_DIMENSION) {
        st = ct_fail(ctx, CT_ERR_MISUSE, "%s: image cannot be written as JPEG (%ux%u)", path,
                     img->w, img->h);
        goto done;
    }
    wr = ct_calloc(ctx, 1, sizeof *wr);
    if (wr == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    wr->ctx = ctx;
    wr->img = img;
    wr->quality = quality;
    /* One RGB scanline, or for Y'CbCr planes one iMCU row of Y; none for
     * coefficients. */
    if (img->coef == NULL) {
        wr->row = img->ycc ? ct_mallocarray(ctx, img->plane_w[0], 2 * DCTSIZE)
                           : ct_mallocarray(ctx, img->w, 3);
    }
    if (img->coef == NULL && wr->row == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    wr->fp = med_open_out(path, opts);
    if (wr->fp == NULL) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    created = true;
    err_init(&wr->err);
    wr->cinfo.err = &wr->err.pub;
    if (encode(wr) != 0) {
        st = ct_fail(ctx, ferror(wr->fp) ? CT_ERR_IO : CT_ERR_FORMAT,
                     "%s: cannot write JPEG (%s)", path, wr->err.msg);
        goto done;
    }
    if (fflush(wr->fp) != 0 || ferror(wr->fp)) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
done:
    if (wr != NULL) {
        if (wr->created) {
            jpeg_destroy_compress(&wr->cinfo);
        }
        if (wr->fp != NULL && fclose(wr->fp) != 0 && st == CT_OK) {
            st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
        }
        free(wr->row);
        free(wr);
    }
    if (st != CT_OK && created) {
        (void)unlink(path);
    }
    return st;
}

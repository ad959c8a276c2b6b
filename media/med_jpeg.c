/* media: JPEG through libjpeg-turbo (jpeglib.h).
 *
 * libjpeg's default error handler calls exit(); ours longjmps back with the
 * message. Some "warnings" mean data was lost (premature end of data,
 * corrupt entropy data): those fail too, so a truncated file never becomes
 * a half-gray image that gets marked and shipped. */
#include "media/med_int.h"

#include <errno.h>
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

typedef struct jpeg_rd {
    ct_ctx *ctx;
    const char *name;
    unsigned flags;
    const uint8_t *data;
    size_t size;
    struct jpeg_decompress_struct cinfo;
    bool created;
    jpeg_err err;
    struct jpeg_progress_mgr progress;
    med_image *img;
    ct_status st;
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
    struct jpeg_decompress_struct *ci = &rd->cinfo;
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

static int decode(jpeg_rd *rd)
{
    struct jpeg_decompress_struct *ci = &rd->cinfo;

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
    if ((rd->flags & MED_READ_YCC) && ycc_sampling_ok(ci)) {
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
    jpeg_finish_decompress(ci);
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
    err_init(&rd->err);
    rd->cinfo.err = &rd->err.pub;
    rd->progress.progress_monitor = on_progress;
    if (decode(rd) != 0) {
        if (rd->st != CT_OK) {
            st = rd->st;
        } else {
            st = ct_fail(ctx, CT_ERR_FORMAT, "%s: corrupt JPEG (%s)", name, rd->err.msg);
        }
        goto done;
    }
    *out = rd->img;
    rd->img = NULL;
done:
    if (rd != NULL) {
        if (rd->created) {
            jpeg_destroy_decompress(&rd->cinfo);
        }
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
        for (size_t i = 0; i < img->nmeta; i++) {
            const med_meta_item *m = &img->meta[i];
            if (m->len <= 65533) {
                jpeg_write_marker(ci, (int)m->id, m->data, (unsigned)m->len);
            }
        }
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

ct_status med_jpeg_write(ct_ctx *ctx, const med_image *img, const char *path, int quality)
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
    /* One RGB scanline, or for Y'CbCr planes one iMCU row of Y. */
    wr->row = img->ycc ? ct_mallocarray(ctx, img->plane_w[0], 2 * DCTSIZE)
                       : ct_mallocarray(ctx, img->w, 3);
    if (wr->row == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    wr->fp = fopen(path, "wb");
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

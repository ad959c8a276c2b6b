/* media: file reading, format dispatch, accessors and the luma view. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* fopencookie */
#endif
#include "media/med_int.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libavutil/log.h>

/* Whole files are decoded from memory (so med_read_mem and med_read_file
 * share one path); this caps what a hostile or mistaken path can make us
 * read. */
#define MED_FILE_MAX ((size_t)2 << 30)

ct_status med_check_size(ct_ctx *ctx, const char *name, uint64_t w, uint64_t h, unsigned channels,
                         unsigned depth, size_t *bytes)
{
    /* w and h come from the file header: refuse before any multiplication
     * can overflow and before any pixel buffer exists. */
    if (w == 0 || h == 0) {
        return ct_fail(ctx, CT_ERR_FORMAT, "%s: image has no pixels", name);
    }
    if (w > ctx->max_pixels || h > ctx->max_pixels || w * h > ctx->max_pixels) {
        return ct_fail(ctx, CT_ERR_LIMIT, "%s: %llux%llu is too large (limit %llu pixels)", name,
                       (unsigned long long)w, (unsigned long long)h,
                       (unsigned long long)ctx->max_pixels);
    }
    if (w > SIZE_MAX || h > SIZE_MAX ||
        !ct_mul3(bytes, (size_t)w, (size_t)h, (size_t)channels * (depth / 8u))) {
        return ct_fail(ctx, CT_ERR_LIMIT, "%s: image size overflows", name);
    }
    return CT_OK;
}

ct_status med_alloc(ct_ctx *ctx, med_kind kind, med_image **out)
{
    med_image *img = ct_calloc(ctx, 1, sizeof *img);
    *out = NULL;
    if (img == NULL) {
        return CT_ERR_NOMEM;
    }
    img->kind = kind;
    img->depth = 8;
    *out = img;
    return CT_OK;
}

ct_status med_meta_add(ct_ctx *ctx, med_image *img, uint32_t id, int where, const uint8_t *data,
                       size_t len)
{
    ct_status st = CT_OK;
    uint8_t *copy = NULL;
    med_meta_item *grown = NULL;
    size_t n;

    if (len > 0) {
        copy = ct_malloc(ctx, len);
        if (copy == NULL) {
            st = CT_ERR_NOMEM;
            goto done;
        }
        memcpy(copy, data, len);
    }
    if (!ct_add(&n, img->nmeta, 1) || !ct_mul(&n, n, sizeof *grown)) {
        st = ct_fail(ctx, CT_ERR_LIMIT, "too many metadata blocks");
        goto done;
    }
    grown = realloc(img->meta, n);
    if (grown == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "out of memory (%zu bytes)", n);
        goto done;
    }
    img->meta = grown;
    img->meta[img->nmeta].id = id;
    img->meta[img->nmeta].where = where;
    img->meta[img->nmeta].len = len;
    img->meta[img->nmeta].data = copy;
    img->nmeta++;
    copy = NULL;
done:
    free(copy);
    return st;
}

void med_image_free(med_image *img)
{
    if (img == NULL) {
        return;
    }
    for (size_t i = 0; i < img->nmeta; i++) {
        free(img->meta[i].data);
    }
    free(img->meta);
    free(img->icc);
    free(img->pix);
    med_jpeg_coef_free(img->coef);
    for (int c = 0; c < 3; c++) {
        free(img->plane[c]);
    }
    free(img);
}

static bool is_png(const uint8_t *d, size_t n)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    return n >= 8 && memcmp(d, sig, 8) == 0;
}

static bool is_jpeg(const uint8_t *d, size_t n)
{
    return n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff;
}

ct_status med_read_mem_as(ct_ctx *ctx, const uint8_t *data, size_t size, const char *name,
                          unsigned flags, med_image **out)
{
    ct_status st;

    *out = NULL;
    if (name == NULL) {
        name = "(memory)";
    }
    /* Magic bytes decide, never the extension: leaks get renamed. */
    if (is_png(data, size)) {
        st = med_png_read(ctx, data, size, name, out);
    } else if (is_jpeg(data, size)) {
        st = med_jpeg_read(ctx, data, size, name, flags, out);
    } else if (size == 0) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: not an image celtrace can read (empty file)", name);
    } else {
        st = med_av_read(ctx, data, size, name, out);
        if (st == CT_OK && *out == NULL) {
            st = ct_fail(ctx, CT_ERR_FORMAT, "%s: not an image celtrace can read", name);
        }
    }
    return st;
}

ct_status med_read_mem(ct_ctx *ctx, const uint8_t *data, size_t size, const char *name,
                       med_image **out)
{
    return med_read_mem_as(ctx, data, size, name, 0, out);
}

/* Read all of fd, up to MED_FILE_MAX bytes. Works for pipes too, so the
 * size from fstat is only a first guess. */
static ct_status read_all(ct_ctx *ctx, int fd, const char *path, uint8_t **out, size_t *outlen)
{
    ct_status st = CT_OK;
    uint8_t *buf = NULL;
    size_t cap = 0;
    size_t len = 0;
    struct stat sb;

    *out = NULL;
    *outlen = 0;
    if (fstat(fd, &sb) != 0) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (S_ISDIR(sb.st_mode)) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(EISDIR));
        goto done;
    }
    if (S_ISREG(sb.st_mode) && sb.st_size > 0) {
        if ((uint64_t)sb.st_size > MED_FILE_MAX) {
            st = ct_fail(ctx, CT_ERR_LIMIT, "%s: file is too large (limit %zu bytes)", path,
                         MED_FILE_MAX);
            goto done;
        }
        cap = (size_t)sb.st_size + 1; /* +1 so EOF is seen without a regrow */
    } else {
        cap = 65536;
    }
    for (;;) {
        if (len == cap) {
            size_t ncap;
            uint8_t *grown;
            if (cap >= MED_FILE_MAX + 1 || !ct_mul(&ncap, cap, 2)) {
                st = ct_fail(ctx, CT_ERR_LIMIT, "%s: file is too large (limit %zu bytes)", path,
                             MED_FILE_MAX);
                goto done;
            }
            if (ncap > MED_FILE_MAX + 1) {
                ncap = MED_FILE_MAX + 1;
            }
            grown = realloc(buf, ncap);
            if (grown == NULL) {
                st = ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory reading the file", path);
                goto done;
            }
            buf = grown;
            cap = ncap;
        }
        if (buf == NULL) {
            buf = ct_malloc(ctx, cap);
            if (buf == NULL) {
                st = CT_ERR_NOMEM;
                goto done;
            }
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
            goto done;
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
        if (len > MED_FILE_MAX) {
            st = ct_fail(ctx, CT_ERR_LIMIT, "%s: file is too large (limit %zu bytes)", path,
                         MED_FILE_MAX);
            goto done;
        }
    }
    *out = buf;
    *outlen = len;
    buf = NULL;
done:
    free(buf);
    return st;
}

ct_status med_read_file_as(ct_ctx *ctx, const char *path, unsigned flags, med_image **out)
{
    ct_status st;
    uint8_t *data = NULL;
    size_t n = 0;
    int fd;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    st = read_all(ctx, fd, path, &data, &n);
    close(fd);
    if (st != CT_OK) {
        goto done;
    }
    st = med_read_mem_as(ctx, data, n, path, flags, out);
done:
    free(data);
    return st;
}

ct_status med_read_file(ct_ctx *ctx, const char *path, med_image **out)
{
    return med_read_file_as(ctx, path, 0, out);
}

static bool ext_is(const char *path, const char *ext)
{
    size_t n = strlen(path);
    size_t e = strlen(ext);
    return n > e && strcasecmp(path + n - e, ext) == 0;
}

/* A tapped output: the file's descriptor and where the bytes also go. */
typedef struct tap_out {
    int fd;
    int (*tap)(void *user, const void *bytes, size_t n);
    void *user;
} tap_out;

static ssize_t tap_write(void *cookie, const char *buf, size_t n)
{
    tap_out *t = cookie;
    if (t->tap(t->user, buf, n) != 0) {
        errno = ENOMEM;
        return -1;
    }
    for (size_t done = 0; done < n;) {
        ssize_t k = write(t->fd, buf + done, n - done);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return -1;
        }
        done += (size_t)k;
    }
    return (ssize_t)n;
}

static int tap_close(void *cookie)
{
    tap_out *t = cookie;
    int r = close(t->fd);
    free(t);
    return r;
}

FILE *med_open_out(const char *path, const med_write_opts *opts)
{
    if (opts == NULL || opts->tap == NULL) {
        return fopen(path, "wb");
    }
    tap_out *t = malloc(sizeof *t);
    if (t == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    t->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    t->tap = opts->tap;
    t->user = opts->tap_user;
    if (t->fd < 0) {
        free(t);
        return NULL;
    }
    cookie_io_functions_t io = {NULL, tap_write, NULL, tap_close};
    FILE *fp = fopencookie(t, "wb", io);
    if (fp == NULL) {
        int e = errno;
        close(t->fd);
        free(t);
        errno = e;
        return NULL;
    }
    /* Large writes: fewer calls into the tap and the kernel. */
    (void)setvbuf(fp, NULL, _IOFBF, 1u << 16);
    return fp;
}

ct_status med_write_file(ct_ctx *ctx, const med_image *img, const char *path,
                         const med_write_opts *opts)
{
    int q = opts != NULL ? opts->jpeg_quality : 0;

    if (img == NULL || img->pix == NULL || path == NULL) {
        return ct_fail(ctx, CT_ERR_MISUSE, "med_write_file: no image or path");
    }
    if (ext_is(path, ".png")) {
        if (img->ycc || img->coef != NULL) {
            return ct_fail(ctx, CT_ERR_MISUSE, "%s: an image read as Y'CbCr planes can only be "
                                               "written as JPEG", path);
        }
        return med_png_write(ctx, img, path, opts != NULL ? opts->threads : 0,
                             opts != NULL ? opts->png_whole_max : 0, opts);
    }
    if (ext_is(path, ".jpg") || ext_is(path, ".jpeg")) {
        if (q < 0 || q > 100) {
            return ct_fail(ctx, CT_ERR_MISUSE, "%s: JPEG quality %d is not in 1..100", path, q);
        }
        if (img->coef != NULL && q != 0) {
            return ct_fail(ctx, CT_ERR_MISUSE, "%s: an image read as JPEG coefficients keeps its "
                                               "own quantisation tables", path);
        }
        if (q == 0) {
            q = img->kind == MED_KIND_JPEG && img->jpeg_quality > 0 ? img->jpeg_quality : 75;
        }
        return med_jpeg_write(ctx, img, path, q, opts);
    }
    return ct_fail(ctx, CT_ERR_MISUSE, "%s: can only write .png, .jpg or .jpeg", path);
}

uint32_t med_width(const med_image *img)
{
    return img->w;
}

uint32_t med_height(const med_image *img)
{
    return img->h;
}

med_kind med_image_kind(const med_image *img)
{
    return img->kind;
}

unsigned med_channels(const med_image *img)
{
    return img->channels;
}

unsigned med_depth(const med_image *img)
{
    return img->depth;
}

const void *med_pixels(const med_image *img)
{
    return img->pix;
}

void *med_pixels_mut(med_image *img)
{
    return img->pix;
}

void med_get_info(const med_image *img, med_info *info)
{
    memset(info, 0, sizeof *info);
    info->kind = img->kind;
    info->width = img->w;
    info->height = img->h;
    info->channels = img->channels;
    info->depth = img->depth;
    info->png_palette = img->png_palette ? 1 : 0;
    info->ycc = img->ycc ? 1 : 0;
    if (img->kind == MED_KIND_JPEG) {
        info->jpeg_quality = img->jpeg_quality;
        info->jpeg_progressive = img->jpeg_progressive ? 1 : 0;
        info->jpeg_components = img->jpeg_ncomp;
        for (int c = 0; c < 3 && c < img->jpeg_ncomp; c++) {
            info->jpeg_h[c] = img->jpeg_h[c];
            info->jpeg_v[c] = img->jpeg_v[c];
        }
    }
}

size_t med_meta_count(const med_image *img)
{
    return img->nmeta;
}

const uint8_t *med_meta_get(const med_image *img, size_t i, uint32_t *id, size_t *len)
{
    if (i >= img->nmeta) {
        *id = 0;
        *len = 0;
        return NULL;
    }
    *id = img->meta[i].id;
    *len = img->meta[i].len;
    return img->meta[i].data;
}

ct_status med_image_new(ct_ctx *ctx, uint32_t w, uint32_t h, unsigned channels, unsigned depth,
                        med_image **out)
{
    ct_status st;
    med_image *img = NULL;
    size_t bytes = 0;

    *out = NULL;
    if (channels < 1 || channels > 4 || (depth != 8 && depth != 16)) {
        st = ct_fail(ctx, CT_ERR_MISUSE, "med_image_new: %u channels at %u bits", channels, depth);
        goto done;
    }
    st = med_check_size(ctx, "(new image)", w, h, channels, depth, &bytes);
    if (st != CT_OK) {
        goto done;
    }
    st = med_alloc(ctx, MED_KIND_PNG, &img);
    if (st != CT_OK) {
        goto done;
    }
    img->pix = ct_calloc(ctx, 1, bytes);
    if (img->pix == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    img->w = w;
    img->h = h;
    img->channels = channels;
    img->depth = depth;
    *out = img;
    img = NULL;
done:
    med_image_free(img);
    return st;
}

ct_status med_image_clone(ct_ctx *ctx, const med_image *src, med_image **out)
{
    ct_status st = CT_OK;
    med_image *img = NULL;
    size_t bytes = 0;

    *out = NULL;
    if (src->coef != NULL) {
        return ct_fail(ctx, CT_ERR_MISUSE, "an image read as JPEG coefficients is not cloned");
    }
    if (!ct_mul3(&bytes, src->w, src->h, (size_t)src->channels * (src->depth / 8u))) {
        st = ct_fail(ctx, CT_ERR_LIMIT, "image size overflows");
        goto done;
    }
    img = ct_calloc(ctx, 1, sizeof *img);
    if (img == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    *img = *src;
    img->pix = NULL;
    img->icc = NULL;
    img->meta = NULL;
    img->nmeta = 0;
    memset(img->plane, 0, sizeof img->plane);
    img->pix = ct_malloc(ctx, bytes);
    if (img->pix == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    memcpy(img->pix, src->pix, bytes);
    for (int c = 0; c < 3 && src->ycc; c++) {
        size_t pb = src->plane_w[c] * src->plane_h[c];
        img->plane[c] = ct_malloc(ctx, pb);
        if (img->plane[c] == NULL) {
            st = CT_ERR_NOMEM;
            goto done;
        }
        memcpy(img->plane[c], src->plane[c], pb);
    }
    if (src->icc != NULL) {
        img->icc = ct_malloc(ctx, src->icc_len);
        if (img->icc == NULL) {
            st = CT_ERR_NOMEM;
            goto done;
        }
        memcpy(img->icc, src->icc, src->icc_len);
    }
    for (size_t i = 0; i < src->nmeta; i++) {
        const med_meta_item *m = &src->meta[i];
        st = med_meta_add(ctx, img, m->id, m->where, m->data, m->len);
        if (st != CT_OK) {
            goto done;
        }
    }
    *out = img;
    img = NULL;
done:
    med_image_free(img);
    return st;
}

static void libav_quiet_once(void)
{
    av_log_set_level(AV_LOG_QUIET);
}

void med_libav_quiet(void)
{
    /* libav's log level is process-wide: set once, not raced by workers. */
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, libav_quiet_once);
}

/* ---- luma view ----------------------------------------------------------- */

/* The loops below are hot (every frame of a video goes through them), so
 * each is written once as an always-inline body and instantiated per
 * channel count and depth: the compiler then drops the per-pixel branches
 * and vectorises. T is uint8_t or uint16_t. */
/* BODY(T, channels, max, scale) for the sample layout of img: 8- or
 * 16-bit samples, 1 to 4 channels; 16-bit samples are brought to 8-bit
 * levels (1/257). */
#define SAMPLE_SWITCH(img, BODY)                                                                \
    do {                                                                                       \
        switch ((img)->channels * 100u + (img)->depth) {                                       \
        case 108:                                                                              \
            BODY(uint8_t, 1, 255u, 1.0f);                                                      \
            break;                                                                             \
        case 208:                                                                              \
            BODY(uint8_t, 2, 255u, 1.0f);                                                      \
            break;                                                                             \
        case 308:                                                                              \
            BODY(uint8_t, 3, 255u, 1.0f);                                                      \
            break;                                                                             \
        case 408:                                                                              \
            BODY(uint8_t, 4, 255u, 1.0f);                                                      \
            break;                                                                             \
        case 116:                                                                              \
            BODY(uint16_t, 1, 65535u, 1.0f / 257.0f);                                          \
            break;                                                                             \
        case 216:                                                                              \
            BODY(uint16_t, 2, 65535u, 1.0f / 257.0f);                                          \
            break;                                                                             \
        case 316:                                                                              \
            BODY(uint16_t, 3, 65535u, 1.0f / 257.0f);                                          \
            break;                                                                             \
        default:                                                                               \
            BODY(uint16_t, 4, 65535u, 1.0f / 257.0f);                                          \
            break;                                                                             \
        }                                                                                      \
    } while (0)

#define LUMA_BODY(T, ch, maxv, scale)                                                          \
    do {                                                                                       \
        const T *p = (const T *)src;                                                           \
        const bool color_ = (ch) >= 3;                                                         \
        const bool alpha_ = (ch) == 2 || (ch) == 4;                                            \
        for (size_t i = 0; i < n; i++, p += (ch)) {                                            \
            const unsigned r = p[0];                                                           \
            const unsigned g = color_ ? p[1] : r;                                              \
            const unsigned b = color_ ? p[2] : r;                                              \
            y[i] = (color_ ? 0.299f * (float)r + 0.587f * (float)g + 0.114f * (float)b         \
                           : (float)r) *                                                       \
                   (scale);                                                                    \
            if (weight != NULL) {                                                              \
                weight[i] = alpha_ ? (float)p[(ch)-1] * (1.0f / (float)(maxv)) : 1.0f;         \
            }                                                                                  \
        }                                                                                      \
    } while (0)

/* Y'CbCr planes, rows [r0, r1): the luma is Y itself. */
CT_SIMD_CLONES
static void ycc_rows(const med_image *img, uint32_t r0, uint32_t r1, float *restrict y,
                     float *restrict weight)
{
    const size_t w = img->w;
    const uint8_t *pix = img->pix;
    for (uint32_t r = r0; r < r1; r++) {
        const uint8_t *yr = pix + (size_t)r * w;
        float *yo = y + (size_t)r * w;
        for (size_t x = 0; x < w; x++) {
            yo[x] = (float)yr[x];
        }
        if (weight != NULL) {
            for (size_t x = 0; x < w; x++) {
                weight[(size_t)r * w + x] = 1.0f;
            }
        }
    }
}

/* ---- rooms a row at a time (med_rooms_row) ---- */

/* Y'CbCr: adding d to Y adds d to each of R, G and B as a decoder
 * computes them (JFIF: R = Y + 1.402 Cr', G = Y - 0.344136 Cb' -
 * 0.714136 Cr', B = Y + 1.772 Cb', with C' = C - 128), so the rooms are
 * what the colour leaves before a channel clips, from the chroma sample
 * that covers the pixel (chroma at 1x1, Y at 1 or 2: ycc_sampling_ok).
 * A row goes in pieces: the piece's chroma worked out once a sample and
 * spread to pixel pairs, so the loops run straight (they vectorise). */
#define ROOM_PIECE 256u

CT_SIMD_CLONES
static void ycc_rooms(const med_image *img, uint32_t y, uint32_t x0, uint32_t n,
                      float *restrict up, float *restrict down)
{
    const unsigned sh = img->jpeg_h[0] == 2 ? 1u : 0u, sv = img->jpeg_v[0] == 2 ? 1u : 0u;
    const uint8_t *restrict cb = img->plane[1] + (size_t)(y >> sv) * img->plane_w[1];
    const uint8_t *restrict cr = img->plane[2] + (size_t)(y >> sv) * img->plane_w[2];
    const uint8_t *restrict yr = (const uint8_t *)img->pix + (size_t)y * img->w;
    float hc[ROOM_PIECE + 1], lc[ROOM_PIECE + 1], hi[ROOM_PIECE], lo[ROOM_PIECE];
    for (uint32_t a = 0; a < n; a += ROOM_PIECE) {
        const uint32_t m = n - a < ROOM_PIECE ? n - a : ROOM_PIECE;
        /* Pointers to the piece's start and size_t counters: a 32-bit
         * index that might wrap keeps these loops scalar. */
        const uint32_t xa = x0 + a, c0 = xa >> sh;
        const size_t nc = (size_t)((xa + m - 1) >> sh) - c0 + 1;
        const uint8_t *restrict pb = cb + c0, *restrict pr = cr + c0;
        for (size_t k = 0; k < nc; k++) {
            float b = (float)pb[k] - 128.0f, c = (float)pr[k] - 128.0f;
            float dr = 1.402f * c, dg = -0.344136f * b - 0.714136f * c, db = 1.772f * b;
            float h = dr > dg ? dr : dg, l = dr < dg ? dr : dg;
            hc[k] = h > db ? h : db;
            lc[k] = l < db ? l : db;
        }
        if (sh == 0) {
            memcpy(hi, hc, m * sizeof *hi);
            memcpy(lo, lc, m * sizeof *lo);
        } else if (xa % 2 == 0) {
            for (size_t k = 0; k < m / 2; k++) {
                hi[2 * k] = hc[k];
                hi[2 * k + 1] = hc[k];
                lo[2 * k] = lc[k];
                lo[2 * k + 1] = lc[k];
            }
            if (m % 2) {
                hi[m - 1] = hc[m / 2];
                lo[m - 1] = lc[m / 2];
            }
        } else {
            for (uint32_t j = 0; j < m; j++) {
                hi[j] = hc[((xa + j) >> 1) - c0];
                lo[j] = lc[((xa + j) >> 1) - c0];
            }
        }
        const uint8_t *restrict py = yr + xa;
        float *restrict pu = up + a, *restrict pd = down + a;
        for (size_t j = 0; j < m; j++) {
            float u = 255.0f - ((float)py[j] + hi[j]);
            pu[j] = u > 0.0f ? u : 0.0f;
        }
        for (size_t j = 0; j < m; j++) {
            float d = (float)py[j] + lo[j];
            pd[j] = d > 0.0f ? d : 0.0f;
        }
    }
}

/* The rooms of interleaved samples: what the brightest channel leaves up
 * to the top, and the darkest down to 0, in 8-bit levels. */
#define ROOMS_BODY(T, ch, maxv, scale)                                                         \
    do {                                                                                       \
        const T *p = (const T *)img->pix + ((size_t)y * img->w + x0) * (ch);                   \
        const bool color_ = (ch) >= 3;                                                         \
        for (uint32_t i = 0; i < n; i++, p += (ch)) {                                          \
            const unsigned r = p[0];                                                           \
            const unsigned g = color_ ? p[1] : r;                                              \
            const unsigned b = color_ ? p[2] : r;                                              \
            unsigned hi = r > g ? r : g;                                                       \
            unsigned lo = r < g ? r : g;                                                       \
            hi = hi > b ? hi : b;                                                              \
            lo = lo < b ? lo : b;                                                              \
            up[i] = (float)((maxv)-hi) * (scale);                                              \
            down[i] = (float)lo * (scale);                                                     \
        }                                                                                      \
    } while (0)

/* Static: a clone's resolver must not become a symbol of the library. */
CT_SIMD_CLONES
static void rgb_rooms(const med_image *img, uint32_t y, uint32_t x0, uint32_t n,
                      float *restrict up, float *restrict down)
{
    SAMPLE_SWITCH(img, ROOMS_BODY);
}

void med_rooms_row(const void *src, uint32_t y, uint32_t x0, uint32_t n, float *up, float *down)
{
    const med_image *img = src;
    if (img->ycc) {
        ycc_rooms(img, y, x0, n, up, down);
    } else {
        rgb_rooms(img, y, x0, n, up, down);
    }
}

/* Row bands of med_luma_mt: every pixel is computed on its own, so the
 * planes are the same on any number of threads. */
#define LUMA_BANDS 8u

typedef struct luma_job {
    const med_image *img;
    float *y, *up, *down, *wt;
    float *scratch; /* one room only: w floats per band for the other */
} luma_job;

static void luma_band(void *arg, unsigned band)
{
    const luma_job *jb = arg;
    const med_image *img = jb->img;
    const uint32_t r0 = (uint32_t)((uint64_t)img->h * band / LUMA_BANDS);
    const uint32_t r1 = (uint32_t)((uint64_t)img->h * (band + 1) / LUMA_BANDS);
    if (r1 <= r0) {
        return;
    }
    const size_t w = img->w;
    if (img->ycc) {
        ycc_rows(img, r0, r1, jb->y, jb->wt);
    } else {
        const size_t off = (size_t)r0 * w, n = (size_t)(r1 - r0) * w;
        const size_t ssz = (size_t)img->channels * (img->depth / 8u);
        const uint8_t *src = (const uint8_t *)img->pix + off * ssz;
        float *y = jb->y + off;
        float *weight = jb->wt != NULL ? jb->wt + off : NULL;
        /* 16-bit samples are brought to 8-bit levels (1/257) so the mark's
         * strength means the same thing at both depths. */
        SAMPLE_SWITCH(img, LUMA_BODY);
    }
    /* The rooms: the rows med_rooms_row gives (one implementation for the
     * planes and for callers that take them row by row). */
    if (jb->up != NULL || jb->down != NULL) {
        float *sc = jb->scratch != NULL ? jb->scratch + (size_t)band * w : NULL;
        for (uint32_t r = r0; r < r1; r++) {
            med_rooms_row(img, r, 0, img->w, jb->up != NULL ? jb->up + (size_t)r * w : sc,
                          jb->down != NULL ? jb->down + (size_t)r * w : sc);
        }
    }
}

ct_status med_luma(ct_ctx *ctx, const med_image *img, float *y, float *room_up, float *room_down,
                   float *weight)
{
    return med_luma_mt(ctx, img, y, room_up, room_down, weight, 1);
}

ct_status med_luma_mt(ct_ctx *ctx, const med_image *img, float *y, float *room_up,
                      float *room_down, float *weight, unsigned threads)
{
    size_t n;

    if (img == NULL || y == NULL || img->pix == NULL) {
        return ct_fail(ctx, CT_ERR_MISUSE, "med_luma: no image or output");
    }
    if (!ct_mul(&n, img->w, img->h)) {
        return ct_fail(ctx, CT_ERR_LIMIT, "med_luma: image size overflows");
    }
    const unsigned key = img->channels * 100u + img->depth;
    if (!img->ycc && !(key == 108 || key == 208 || key == 308 || key == 408 || key == 116 ||
                       key == 216 || key == 316 || key == 416)) {
        return ct_fail(ctx, CT_ERR_MISUSE, "med_luma: %u channels at %u bits", img->channels,
                       img->depth);
    }
    luma_job jb = {img, y, room_up, room_down, weight, NULL};
    if ((room_up == NULL) != (room_down == NULL)) {
        /* one room asked for: the other's row goes to scratch */
        jb.scratch = ct_mallocarray(ctx, LUMA_BANDS, (size_t)img->w * sizeof(float));
        if (jb.scratch == NULL) {
            return CT_ERR_NOMEM;
        }
    }
    ct_parallel(LUMA_BANDS, threads, luma_band, &jb);
    free(jb.scratch);
    return CT_OK;
}

/* delta (already in sample units) to the nearest int, halves away from
 * zero, without UB: NaN becomes 0 and huge values saturate (which clips
 * the same way). */
static inline int round_delta(float d)
{
    if (!(d > -1048576.0f && d < 1048576.0f)) {
        return d > 0.0f ? 1048576 : (d < 0.0f ? -1048576 : 0);
    }
    return (int)(d + (d < 0.0f ? -0.5f : 0.5f));
}

#define ADD_BODY(T, ch, maxv, mul)                                                             \
    do {                                                                                       \
        T *p = img->pix;                                                                       \
        const unsigned ncol_ = (ch) >= 3 ? 3u : 1u; /* alpha is never touched */              \
        for (size_t i = 0; i < n; i++, p += (ch)) {                                            \
            const int d = round_delta(delta[i] * (mul));                                       \
            for (unsigned c = 0; c < ncol_; c++) {                                             \
                int v = (int)p[c] + d;                                                         \
                v = v < 0 ? 0 : v;                                                             \
                v = v > (int)(maxv) ? (int)(maxv) : v;                                         \
                p[c] = (T)v;                                                                   \
            }                                                                                  \
        }                                                                                      \
    } while (0)

ct_status med_add_luma(ct_ctx *ctx, med_image *img, const float *delta)
{
    size_t n;

    if (img == NULL || delta == NULL || img->pix == NULL) {
        return ct_fail(ctx, CT_ERR_MISUSE, "med_add_luma: no image or delta");
    }
    if (!ct_mul(&n, img->w, img->h)) {
        return ct_fail(ctx, CT_ERR_LIMIT, "med_add_luma: image size overflows");
    }
    const unsigned key = img->channels * 100u + img->depth;
    switch (key) {
    case 108:
        ADD_BODY(uint8_t, 1, 255u, 1.0f);
        break;
    case 208:
        ADD_BODY(uint8_t, 2, 255u, 1.0f);
        break;
    case 308:
        ADD_BODY(uint8_t, 3, 255u, 1.0f);
        break;
    case 408:
        ADD_BODY(uint8_t, 4, 255u, 1.0f);
        break;
    case 116:
        ADD_BODY(uint16_t, 1, 65535u, 257.0f);
        break;
    case 216:
        ADD_BODY(uint16_t, 2, 65535u, 257.0f);
        break;
    case 316:
        ADD_BODY(uint16_t, 3, 65535u, 257.0f);
        break;
    case 416:
        ADD_BODY(uint16_t, 4, 65535u, 257.0f);
        break;
    default:
        return ct_fail(ctx, CT_ERR_MISUSE, "med_add_luma: %u channels at %u bits",
                       img->channels, img->depth);
    }
    return CT_OK;
}

/* Luma of one 8-bit step on each channel: BT.601, as med_luma. */
#define LR 0.299f
#define LG 0.587f
#define LB 0.114f

/* Sub-level combinations of +1 steps, in increasing luma: 0, B, R, R+B, G,
 * G+B, R+G (then 1: all three, a whole level). */
static const uint8_t SPLIT[7][3] = {{0, 0, 0}, {0, 0, 1}, {1, 0, 0}, {1, 0, 1},
                                    {0, 1, 0}, {0, 1, 1}, {1, 1, 0}};
/* Midpoints between consecutive SPLIT lumas: the nearest combination to a
 * fraction f is the number of midpoints below f. */
static const float SPLIT_MID[7] = {
    (0 + LB) / 2, (LB + LR) / 2, (LR + LR + LB) / 2, (LR + LB + LG) / 2,
    (LG + LG + LB) / 2, (LG + LB + LR + LG) / 2, (LR + LG + 1.0f) / 2};

static int clamp_i(int v, int lo, int hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* One pixel of Floyd-Steinberg: realise *dl (+ the error carried into it)
 * on pixel p, spread the rest to the right (ecur) and to the row below
 * (enext). Always inlined into a call per (ch, split), so the branches on
 * the format fold away. */
static inline __attribute__((always_inline)) void realize_px(uint8_t *restrict p,
                                                             float *restrict dl,
                                                             float *restrict ecur,
                                                             float *restrict enext, uint32_t x,
                                                             const unsigned ch, const bool split)
{
    const bool alpha = ch == 2 || ch == 4;
    const unsigned colours = alpha ? ch - 1 : ch;
    if (alpha && p[ch - 1] == 0) {
        *dl = 0;
        return;
    }
    float want = *dl + ecur[x];
    float got;
    if (colours == 3 && split) {
        float base = floorf(want), frac = want - base;
        int best = 0;
        for (int k = 0; k < 7; k++) {
            best += frac > SPLIT_MID[k];
        }
        int b = (int)base;
        int dv[3];
        for (int c = 0; c < 3; c++) {
            int step = best < 7 ? SPLIT[best][c] : 1;
            int nv = clamp_i(p[c] + b + step, 0, 255);
            dv[c] = nv - p[c];
            p[c] = (uint8_t)nv;
        }
        got = (float)dv[0] * LR + (float)dv[1] * LG + (float)dv[2] * LB;
    } else {
        /* Nearest, ties to even (as lrintf) with no libm call: adding
         * 1.5 * 2^23 leaves the integer in the low bits. Clamped first
         * (NaN to 0), so any delta is defined. */
        float wc = want > 512.0f ? 512.0f : (want < -512.0f ? -512.0f : want);
        wc = wc == wc ? wc : 0.0f;
        int q = (int)((wc + 0x1.8p23f) - 0x1.8p23f);
        int dmin = 255, dmax = -255;
        for (unsigned c = 0; c < colours; c++) {
            int nv = clamp_i(p[c] + q, 0, 255);
            int d = nv - p[c];
            dmin = d < dmin ? d : dmin;
            dmax = d > dmax ? d : dmax;
            p[c] = (uint8_t)nv;
        }
        /* What luma moved by: exact when nothing clipped. */
        got = colours == 1 || q >= 0 ? (float)dmin : (float)dmax;
    }
    *dl = got;
    float e = want - got;
    /* A clipped run must not pile up error for its neighbours. */
    e = e > 1.0f ? 1.0f : (e < -1.0f ? -1.0f : e);
    ecur[x + 1] += e * (7.0f / 16);
    enext[(long)x - 1] += e * (3.0f / 16);
    enext[x] += e * (5.0f / 16);
    enext[x + 1] += e * (1.0f / 16);
}

/* Rows in flight at once. Each pixel's error feeds the next through
 * memory, a chain of some 40 cycles; row r only needs row r-1 two pixels
 * ahead of it, so RB rows skewed by two pixels run as RB independent
 * chains. Every sum is formed in the same order as row by row: the
 * output is bit-identical to the plain scan. */
#define RB 4
/* Row bands of med_realize_luma. */
#define MED_BANDS 4u

/* err: (RB + 1) rows of w + 2 floats, zeroed. */
static inline __attribute__((always_inline)) void realize8(uint8_t *restrict pix, uint32_t w,
                                                           uint32_t h, float *restrict delta,
                                                           float *restrict err, const unsigned ch,
                                                           const bool split)
{
    const size_t ew = (size_t)w + 2;
    for (uint32_t y0 = 0; y0 < h; y0 += RB) {
        const uint32_t nr = h - y0 < RB ? h - y0 : RB;
        /* err row r (+1: index -1 is valid) is what row y0 + r receives. */
        const long steps = (long)w + 2L * (nr - 1);
        for (long t = 0; t < steps; t++) {
            for (uint32_t r = 0; r < nr; r++) {
                long x = t - 2L * r;
                if (x < 0 || x >= (long)w) {
                    continue;
                }
                size_t i = (size_t)(y0 + r) * w + (size_t)x;
                realize_px(pix + i * ch, delta + i, err + r * ew + 1, err + (r + 1) * ew + 1,
                           (uint32_t)x, ch, split);
            }
        }
        /* What the band's last row passed down starts the next band. */
        memmove(err, err + nr * ew, ew * sizeof *err);
        memset(err + ew, 0, RB * ew * sizeof *err);
    }
}

/* One pixel of one-channel Floyd-Steinberg with the row's error state in
 * registers: `carry` (7/16 of the last error, for the pixel to the right)
 * and the two contributions to the row below still being summed (n0 for
 * the pixel below this one, n1 for the one after it), each stored once
 * complete. The sums are formed
 * in the same order as realize_px forms them in memory, so the pixels and
 * delta are the same to the bit; only the store-to-load chain is gone. */
static inline __attribute__((always_inline)) void gray_px(uint8_t *restrict p,
                                                          float *restrict dl,
                                                          const float *restrict ein,
                                                          float *restrict eout, long x,
                                                          float *carry, float *n0, float *n1)
{
    float want = *dl + (ein[x] + *carry);
    float wc = want > 512.0f ? 512.0f : (want < -512.0f ? -512.0f : want);
    wc = wc == wc ? wc : 0.0f;
    int q = (int)((wc + 0x1.8p23f) - 0x1.8p23f);
    int nv = clamp_i(*p + q, 0, 255);
    float got = (float)(nv - *p);
    *p = (uint8_t)nv;
    *dl = got;
    float e = want - got;
    e = e > 1.0f ? 1.0f : (e < -1.0f ? -1.0f : e);
    *carry = e * (7.0f / 16);
    eout[x - 1] = *n0 + e * (3.0f / 16);
    *n0 = *n1 + e * (5.0f / 16);
    *n1 = e * (1.0f / 16);
}

/* nr rows side by side, steps t0 to t1 - 1 of the skewed sweep (row r at
 * x = t - 2 r); `bounded` skips the x outside the row. Called with nr = RB
 * the row loop has a constant count, so the compiler unrolls it and keeps
 * every row's state in registers. */
static inline __attribute__((always_inline)) void gray_sweep(
    uint8_t *restrict pix, uint32_t w, float *restrict delta, float *restrict err, long t0,
    long t1, bool bounded, uint32_t nr, float *carry, float *n0, float *n1)
{
    const size_t ew = (size_t)w + 2;
    float c[RB], a0[RB], a1[RB];
    for (uint32_t r = 0; r < nr; r++) {
        c[r] = carry[r];
        a0[r] = n0[r];
        a1[r] = n1[r];
    }
    for (long t = t0; t < t1; t++) {
#pragma GCC unroll 16
        for (uint32_t r = 0; r < nr; r++) {
            long x = t - 2L * r;
            if (bounded && (x < 0 || x >= (long)w)) {
                continue;
            }
            size_t i = (size_t)r * w + (size_t)x;
            gray_px(pix + i, delta + i, err + (size_t)r * ew + 1, err + (size_t)(r + 1) * ew + 1,
                    x, &c[r], &a0[r], &a1[r]);
            if (bounded && x == (long)w - 1) {
                err[(size_t)(r + 1) * ew + 1 + (size_t)x] = a0[r];
            }
        }
    }
    for (uint32_t r = 0; r < nr; r++) {
        carry[r] = c[r];
        n0[r] = a0[r];
        n1[r] = a1[r];
    }
}

static void realize_gray(uint8_t *restrict pix, uint32_t w, uint32_t h, float *restrict delta,
                         float *restrict err)
{
    const size_t ew = (size_t)w + 2;
    for (uint32_t y0 = 0; y0 < h; y0 += RB) {
        const uint32_t nr = h - y0 < RB ? h - y0 : RB;
        float carry[RB] = {0}, n0[RB] = {0}, n1[RB] = {0};
        uint8_t *p = pix + (size_t)y0 * w;
        float *d = delta + (size_t)y0 * w;
        const long steps = (long)w + 2L * (nr - 1);
        if (nr == RB && (long)w > 2L * RB) {
            /* Ramp in, the span where every row is inside, ramp out. */
            const long in0 = 2L * (RB - 1), in1 = (long)w - 1;
            gray_sweep(p, w, d, err, 0, in0, true, RB, carry, n0, n1);
            gray_sweep(p, w, d, err, in0, in1, false, RB, carry, n0, n1);
            gray_sweep(p, w, d, err, in1, steps, true, RB, carry, n0, n1);
        } else {
            /* The band's last rows, or an image too narrow to fill the skew. */
            gray_sweep(p, w, d, err, 0, steps, true, nr, carry, n0, n1);
        }
        memmove(err, err + nr * ew, ew * sizeof *err);
        memset(err + ew, 0, RB * ew * sizeof *err);
    }
}

typedef struct realize_job {
    med_image *img;
    float *delta;
    float *err;
    size_t ew;
    unsigned key; /* channels * 2 + split */
} realize_job;

static void realize_band(void *arg, unsigned band)
{
    const realize_job *jb = arg;
    const med_image *img = jb->img;
    const uint32_t r0 = (uint32_t)((uint64_t)img->h * band / MED_BANDS);
    const uint32_t r1 = (uint32_t)((uint64_t)img->h * (band + 1) / MED_BANDS);
    if (r1 <= r0) {
        return;
    }
    const unsigned ch = img->channels;
    uint8_t *p = (uint8_t *)img->pix + (size_t)r0 * img->w * ch;
    float *d = jb->delta + (size_t)r0 * img->w;
    float *e = jb->err + jb->ew * band;
    const uint32_t w = img->w, h = r1 - r0;
    switch (jb->key) {
    case 2:
        realize_gray(p, w, h, d, e);
        break;
    case 4:
        realize8(p, w, h, d, e, 2, false);
        break;
    case 6:
        realize8(p, w, h, d, e, 3, false);
        break;
    case 7:
        realize8(p, w, h, d, e, 3, true);
        break;
    case 8:
        realize8(p, w, h, d, e, 4, false);
        break;
    default:
        realize8(p, w, h, d, e, 4, true);
        break;
    }
}

ct_status med_realize_luma(ct_ctx *ctx, med_image *img, float *delta, bool split_rgb,
                           unsigned threads)
{
    size_t n;
    float *err = NULL;
    const unsigned ch = img->channels;
    const bool alpha = ch == 2 || ch == 4;
    const unsigned colours = alpha ? ch - 1 : ch;

    if (!ct_mul(&n, img->w, img->h)) {
        return ct_fail(ctx, CT_ERR_LIMIT, "med_realize_luma: image size overflows");
    }
    if (img->coef != NULL) {
        return med_jpeg_coef_add(ctx, img, delta, threads);
    }
    if (img->depth == 16) {
        uint16_t *p = img->pix;
        static const float W3[3] = {LR, LG, LB};
        for (size_t i = 0; i < n; i++, p += ch) {
            if (alpha && p[ch - 1] == 0) {
                delta[i] = 0;
                continue;
            }
            long d = lroundf(delta[i] * 257.0f);
            float got = 0;
            for (unsigned c = 0; c < colours; c++) {
                int nv = clamp_i((int)(p[c] + d), 0, 65535);
                got += (colours == 3 ? W3[c] : 1.0f) * (float)(nv - p[c]) / 257.0f;
                p[c] = (uint16_t)nv;
            }
            delta[i] = got;
        }
        return CT_OK;
    }
    /* Row bands (MED_BANDS, fixed) each diffuse their own error from
     * zero, so the result is the same on any number of threads. */
    const size_t ew = (RB + 1) * ((size_t)img->w + 2);
    err = ct_calloc(ctx, MED_BANDS * ew, sizeof *err);
    if (err == NULL) {
        return CT_ERR_NOMEM;
    }
    const bool split = split_rgb && colours == 3;
    const unsigned key = ch * 2u + (split ? 1u : 0u);
    if (key < 2 || key > 9 || key == 3 || key == 5) {
        free(err);
        return ct_fail(ctx, CT_ERR_MISUSE, "med_realize_luma: %u channels", ch);
    }
    realize_job jb = {img, delta, err, ew, key};
    ct_parallel(MED_BANDS, threads, realize_band, &jb);
    free(err);
    return CT_OK;
}

/* media: PNG through libpng.
 *
 * Reading expands everything to 8- or 16-bit gray, gray+alpha, RGB or RGBA
 * (palette -> RGB, tRNS -> alpha, 1/2/4-bit gray -> 8-bit), so the marked
 * pixels always fit the written file. Ancillary chunks are not parsed by
 * libpng at all (it is told to ignore them, which also keeps zTXt/iCCP
 * decompression bombs out); instead the raw chunks are copied from the
 * input bytes and written back verbatim. */
#include "media/med_int.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <png.h>

/* libpng state for one decode. It lives in the caller's frame and is only
 * touched through a pointer inside decode(), so its fields keep their
 * values across the longjmp (C17 7.13.2.1 only protects volatile locals of
 * the function that called setjmp). */
typedef struct png_rd {
    ct_ctx *ctx;
    const char *name;
    const uint8_t *data;
    size_t size;
    size_t pos;
    png_structp png;
    png_infop info;
    png_bytepp rows;
    med_image *img;
    ct_status st;  /* set before a png_error we raise ourselves */
    char msg[200]; /* libpng's text for the error that longjmp'd */
} png_rd;

static void on_error(png_structp png, png_const_charp msg)
{
    png_rd *rd = png_get_error_ptr(png);
    snprintf(rd->msg, sizeof rd->msg, "%s", msg != NULL ? msg : "error");
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    /* libpng would print these on stderr; the CLI promises one line. */
    (void)png;
    (void)msg;
}

static void read_mem(png_structp png, png_bytep out, png_size_t n)
{
    png_rd *rd = png_get_io_ptr(png);
    if (n > rd->size - rd->pos) {
        png_error(png, "file is truncated");
    }
    memcpy(out, rd->data + rd->pos, n);
    rd->pos += n;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* CRC-32 of the PNG spec (ISO 3309), a nibble at a time: small constant
 * table, fast enough for ancillary chunks. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
    static const uint32_t t[16] = {
        0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4,
        0x4db26158, 0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
        0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c};
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ t[crc & 15];
        crc = (crc >> 4) ^ t[crc & 15];
    }
    return crc;
}

static bool chunk_name_ok(const uint8_t *t)
{
    for (int i = 0; i < 4; i++) {
        const uint8_t c = (uint8_t)(t[i] | 0x20);
        if (c < 'a' || c > 'z') {
            return false;
        }
    }
    return true;
}

/* Chunks whose meaning is tied to the input's colour type, bit depth or
 * palette, or to frames we do not mark: not copied (tRNS became alpha). */
static bool chunk_dropped(uint32_t id, bool shape_changed)
{
    if (id == MED_ID('t', 'R', 'N', 'S') || id == MED_ID('h', 'I', 'S', 'T') ||
        id == MED_ID('a', 'c', 'T', 'L') || id == MED_ID('f', 'c', 'T', 'L') ||
        id == MED_ID('f', 'd', 'A', 'T')) {
        return true;
    }
    return shape_changed && id == MED_ID('s', 'B', 'I', 'T');
}

/* Copy the input's ancillary chunks (see the comment at the top). Runs
 * after libpng decoded the whole file, so the chunk structure is sound;
 * chunks with a bad CRC are skipped as libpng would skip them. */
static ct_status keep_chunks(png_rd *rd, bool shape_changed, png_const_colorp pal, int npal)
{
    ct_status st = CT_OK;
    size_t pos = 8;
    int where = MED_WHERE_HEAD;

    while (rd->size - pos >= 12) {
        const uint8_t *c = rd->data + pos;
        const uint32_t len = be32(c);
        const uint32_t id = be32(c + 4);
        if (len > 0x7fffffffu || len > rd->size - pos - 12) {
            break;
        }
        if (id == MED_ID('I', 'E', 'N', 'D')) {
            break;
        }
        if (id == MED_ID('I', 'D', 'A', 'T')) {
            where = MED_WHERE_TAIL;
        }
        const uint8_t *body = c + 8;
        const bool ancillary = (c[4] & 0x20) != 0;
        if (ancillary && chunk_name_ok(c + 4) && !chunk_dropped(id, shape_changed) &&
            (crc32_update(0xffffffffu, c + 4, (size_t)len + 4) ^ 0xffffffffu) ==
                be32(body + len)) {
            if (id == MED_ID('b', 'K', 'G', 'D') && rd->img->png_palette) {
                /* bKGD of a palette image is an index; the output is RGB. */
                uint8_t rgb[6] = {0};
                if (len != 1 || pal == NULL || body[0] >= npal) {
                    goto next;
                }
                rgb[1] = pal[body[0]].red;
                rgb[3] = pal[body[0]].green;
                rgb[5] = pal[body[0]].blue;
                st = med_meta_add(rd->ctx, rd->img, id, where, rgb, sizeof rgb);
            } else {
                st = med_meta_add(rd->ctx, rd->img, id, where, body, len);
            }
            if (st != CT_OK) {
                goto done;
            }
        }
    next:
        pos += (size_t)len + 12;
    }
done:
    return st;
}

/* Everything libpng touches. Returns 0, or 1 after a libpng error
 * (rd->msg) or one of our own checks (rd->st). */
static int decode(png_rd *rd)
{
    /* Names libpng would otherwise parse; it skips them (we copy raw). */
    static const png_byte ignore[] = "bKGD\0cHRM\0eXIf\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0"
                                     "pCAL\0pHYs\0sBIT\0sCAL\0sPLT\0sRGB\0tEXt\0tIME\0zTXt";

    if (setjmp(png_jmpbuf(rd->png))) {
        return 1;
    }
    png_set_read_fn(rd->png, rd, read_mem);
    png_set_keep_unknown_chunks(rd->png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    png_set_keep_unknown_chunks(rd->png, PNG_HANDLE_CHUNK_NEVER, ignore,
                                (int)(sizeof ignore / 5));
    /* Our own limit was checked on the raw IHDR; this is the backstop. */
    png_set_user_limits(rd->png, 0x7fffffff, 0x7fffffff);
    png_read_info(rd->png, rd->info);

    png_uint_32 w, h;
    int bit_depth, color_type, interlace;
    png_get_IHDR(rd->png, rd->info, &w, &h, &bit_depth, &color_type, &interlace, NULL, NULL);
    size_t bytes;
    rd->st = med_check_size(rd->ctx, rd->name, w, h, 1, 8, &bytes);
    if (rd->st != CT_OK) {
        return 1;
    }

    const bool has_trns = png_get_valid(rd->png, rd->info, PNG_INFO_tRNS) != 0;
    rd->img->png_palette = color_type == PNG_COLOR_TYPE_PALETTE;
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
        png_set_palette_to_rgb(rd->png);
    }
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) {
        png_set_expand_gray_1_2_4_to_8(rd->png);
    }
    if (has_trns) {
        png_set_tRNS_to_alpha(rd->png);
    }
    if (bit_depth == 16 && med_host_is_le()) {
        png_set_swap(rd->png);
    }
    (void)png_set_interlace_handling(rd->png);
    png_read_update_info(rd->png, rd->info);

    const unsigned ch = png_get_channels(rd->png, rd->info);
    const unsigned depth = png_get_bit_depth(rd->png, rd->info);
    if (ch < 1 || ch > 4 || (depth != 8 && depth != 16)) {
        rd->st = ct_fail(rd->ctx, CT_ERR_FORMAT, "%s: unsupported PNG layout", rd->name);
        return 1;
    }
    rd->st = med_check_size(rd->ctx, rd->name, w, h, ch, depth, &bytes);
    if (rd->st != CT_OK) {
        return 1;
    }
    const size_t rowbytes = png_get_rowbytes(rd->png, rd->info);
    if (rowbytes != bytes / h) {
        rd->st = ct_fail(rd->ctx, CT_ERR_FORMAT, "%s: unexpected PNG row size", rd->name);
        return 1;
    }
    rd->img->pix = ct_malloc(rd->ctx, bytes);
    rd->rows = ct_mallocarray(rd->ctx, h, sizeof *rd->rows);
    if (rd->img->pix == NULL || rd->rows == NULL) {
        rd->st = CT_ERR_NOMEM;
        return 1;
    }
    for (size_t r = 0; r < h; r++) {
        rd->rows[r] = (png_bytep)rd->img->pix + r * rowbytes;
    }
    rd->img->w = w;
    rd->img->h = h;
    rd->img->channels = ch;
    rd->img->depth = depth;
    png_read_image(rd->png, rd->rows);
    /* Reads through IEND and checks the last CRCs: a file cut after the
     * pixels is still a truncated file. */
    png_read_end(rd->png, NULL);

    png_colorp pal = NULL;
    int npal = 0;
    if (rd->img->png_palette) {
        if (png_get_PLTE(rd->png, rd->info, &pal, &npal) == 0) {
            pal = NULL;
        }
    }
    const bool shape_changed =
        rd->img->png_palette || has_trns || (unsigned)bit_depth != depth;
    rd->st = keep_chunks(rd, shape_changed, pal, npal);
    return rd->st == CT_OK ? 0 : 1;
}

ct_status med_png_read(ct_ctx *ctx, const uint8_t *data, size_t size, const char *name,
                       med_image **out)
{
    ct_status st = CT_OK;
    png_rd rd;

    *out = NULL;
    memset(&rd, 0, sizeof rd);
    rd.ctx = ctx;
    rd.name = name;
    rd.data = data;
    rd.size = size;

    /* Look at IHDR ourselves first: the pixel limit must hold before
     * libpng allocates anything sized by the header. */
    if (size >= 33 && be32(data + 8) == 13 && be32(data + 12) == MED_ID('I', 'H', 'D', 'R') &&
        (crc32_update(0xffffffffu, data + 12, 17) ^ 0xffffffffu) == be32(data + 29)) {
        /* Only a header with a valid CRC: a flipped bit is a corrupt file
         * (libpng says so below), not an oversized one. */
        size_t bytes;
        st = med_check_size(ctx, name, be32(data + 16), be32(data + 20), 1, 8, &bytes);
        if (st != CT_OK) {
            goto done;
        }
    }
    st = med_alloc(ctx, MED_KIND_PNG, &rd.img);
    if (st != CT_OK) {
        goto done;
    }
    rd.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &rd, on_error, on_warning);
    if (rd.png != NULL) {
        rd.info = png_create_info_struct(rd.png);
    }
    if (rd.png == NULL || rd.info == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory starting libpng", name);
        goto done;
    }
    if (decode(&rd) != 0) {
        if (rd.st != CT_OK) {
            st = rd.st;
        } else {
            st = ct_fail(ctx, CT_ERR_FORMAT, "%s: corrupt PNG (%s)", name, rd.msg);
        }
        goto done;
    }
    *out = rd.img;
    rd.img = NULL;
done:
    if (rd.png != NULL) {
        png_destroy_read_struct(&rd.png, rd.info != NULL ? &rd.info : NULL, NULL);
    }
    free(rd.rows);
    med_image_free(rd.img);
    return st;
}

/* ---- writing ------------------------------------------------------------- */

typedef struct png_wr {
    ct_ctx *ctx;
    const med_image *img;
    FILE *fp;
    png_structp png;
    png_infop info;
    png_bytepp rows;
    png_unknown_chunkp unk;
    ct_status st;
    char msg[200];
} png_wr;

static int encode(png_wr *wr)
{
    const med_image *img = wr->img;
    static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                 PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};

    if (setjmp(png_jmpbuf(wr->png))) {
        return 1;
    }
    png_init_io(wr->png, wr->fp);
    /* Write settings, kept deliberately plain so a benchmark against a
     * straight libpng decode + re-encode compares like with like: default
     * zlib level (Z_DEFAULT_COMPRESSION) and libpng's default filter
     * heuristics (no png_set_compression_level / png_set_filter calls),
     * no interlacing, same bit depth as the image. */
    png_set_IHDR(wr->png, wr->info, img->w, img->h, (int)img->depth, types[img->channels],
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    /* A bad ICC profile from a JPEG input is dropped with a warning rather
     * than failing the write. */
    png_set_benign_errors(wr->png, 1);
    if (img->icc != NULL && img->icc_len > 0 && img->icc_len <= 0x7fffffffu) {
        png_set_iCCP(wr->png, wr->info, "ICC Profile", PNG_COMPRESSION_TYPE_BASE, img->icc,
                     (png_uint_32)img->icc_len);
    }
    if (wr->unk != NULL) {
        /* Write every kept chunk verbatim, known names included. */
        png_set_keep_unknown_chunks(wr->png, PNG_HANDLE_CHUNK_ALWAYS, NULL, 0);
        png_set_unknown_chunks(wr->png, wr->info, wr->unk, (int)img->nmeta);
    }
    png_write_info(wr->png, wr->info);
    if (img->depth == 16 && med_host_is_le()) {
        png_set_swap(wr->png);
    }
    png_write_image(wr->png, wr->rows);
    png_write_end(wr->png, wr->info);
    return 0;
}

ct_status med_png_write(ct_ctx *ctx, const med_image *img, const char *path)
{
    ct_status st = CT_OK;
    png_wr wr;
    size_t rowbytes;
    bool created = false;

    memset(&wr, 0, sizeof wr);
    wr.ctx = ctx;
    wr.img = img;
    if (img->channels < 1 || img->channels > 4 || (img->depth != 8 && img->depth != 16) ||
        img->w == 0 || img->h == 0 || img->w > 0x7fffffffu || img->h > 0x7fffffffu) {
        st = ct_fail(ctx, CT_ERR_MISUSE, "%s: image cannot be written as PNG", path);
        goto done;
    }
    if (!ct_mul3(&rowbytes, img->w, img->channels, img->depth / 8u)) {
        st = ct_fail(ctx, CT_ERR_LIMIT, "%s: image size overflows", path);
        goto done;
    }
    wr.rows = ct_mallocarray(ctx, img->h, sizeof *wr.rows);
    if (wr.rows == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    /* libpng copies each row before transforming it (png_set_swap), so
     * handing it our const pixels is safe. */
    for (size_t r = 0; r < img->h; r++) {
        wr.rows[r] = (png_bytep)img->pix + r * rowbytes;
    }
    /* Only PNG chunks can be copied to a PNG (JPEG markers are not). */
    if (img->kind == MED_KIND_PNG && img->nmeta > 0 && img->nmeta <= 0x7fffffff) {
        wr.unk = ct_calloc(ctx, img->nmeta, sizeof *wr.unk);
        if (wr.unk == NULL) {
            st = CT_ERR_NOMEM;
            goto done;
        }
        for (size_t i = 0; i < img->nmeta; i++) {
            const med_meta_item *m = &img->meta[i];
            for (int k = 0; k < 4; k++) {
                wr.unk[i].name[k] = (png_byte)(m->id >> (24 - 8 * k));
            }
            wr.unk[i].data = m->data;
            wr.unk[i].size = m->len;
            wr.unk[i].location =
                (png_byte)(m->where == MED_WHERE_TAIL ? PNG_AFTER_IDAT : PNG_HAVE_IHDR);
        }
    }
    wr.fp = fopen(path, "wb");
    if (wr.fp == NULL) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    created = true;
    wr.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &wr, on_error, on_warning);
    if (wr.png != NULL) {
        wr.info = png_create_info_struct(wr.png);
    }
    if (wr.png == NULL || wr.info == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory starting libpng", path);
        goto done;
    }
    if (encode(&wr) != 0) {
        st = ct_fail(ctx, ferror(wr.fp) ? CT_ERR_IO : CT_ERR_FORMAT,
                     "%s: cannot write PNG (%s)", path, wr.msg);
        goto done;
    }
    if (fflush(wr.fp) != 0 || ferror(wr.fp)) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
done:
    if (wr.png != NULL) {
        png_destroy_write_struct(&wr.png, wr.info != NULL ? &wr.info : NULL);
    }
    if (wr.fp != NULL && fclose(wr.fp) != 0 && st == CT_OK) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
    }
    if (st != CT_OK && created) {
        (void)unlink(path);
    }
    free(wr.unk);
    free(wr.rows);
    return st;
}

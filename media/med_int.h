/* media: private layout of med_image, shared by the codec files of this
 * module only (media.c, med_png.c, med_jpeg.c, med_av.c). */
#ifndef CT_MED_INT_H
#define CT_MED_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "media/media.h"

/* Where a metadata block sits in the file it came from. */
#define MED_WHERE_HEAD 0 /* PNG: between IHDR and IDAT; JPEG: before SOF */
#define MED_WHERE_TAIL 1 /* PNG: after IDAT */

/* A JPEG's quantised DCT coefficients, kept to be written again
 * (MED_READ_COEF; med_jpeg.c). */
typedef struct med_jcoef med_jcoef;

typedef struct med_meta_item {
    uint32_t id; /* PNG chunk type (big-endian letters) or JPEG marker code */
    int where;   /* MED_WHERE_* */
    size_t len;
    uint8_t *data; /* owned; NULL when len == 0 */
} med_meta_item;

struct med_image {
    med_kind kind;
    uint32_t w, h;
    unsigned channels; /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
    unsigned depth;    /* 8 (uint8_t samples) or 16 (uint16_t, host byte order) */
    void *pix;         /* rows packed, no padding */

    bool png_palette; /* the PNG input was colour type 3 */

    int jpeg_quality;      /* estimated IJG quality of the input, 1..100 */
    bool jpeg_progressive; /* input was progressive */
    int jpeg_ncomp;        /* components in the input frame (1 or 3) */
    uint8_t jpeg_h[3], jpeg_v[3];
    bool jpeg_jfif; /* input had a JFIF APP0: density below is valid */
    uint8_t jfif_major, jfif_minor, density_unit;
    uint16_t x_density, y_density;

    /* A JPEG read as Y'CbCr (MED_READ_YCC): pix is the Y plane (channels
     * 1) and the three stored components are kept here as decoded, each
     * padded to whole blocks and iMCU rows, so the writer encodes them
     * again without a colour conversion or resampling. Chroma is never
     * changed; Y is copied back from pix when writing. */
    bool ycc;
    uint8_t *plane[3];
    size_t plane_w[3], plane_h[3];
    unsigned imcu_rows; /* iMCU rows of the frame */

    /* A JPEG read with MED_READ_COEF: its coefficients as stored. pix
     * (and the planes, for Y'CbCr) are still the decoded image; a change
     * of luma goes into the Y coefficients (med_realize_luma), and the
     * writer stores the coefficients with the input's own tables. */
    med_jcoef *coef;

    uint8_t *icc; /* ICC profile (from JPEG APP2 segments), for PNG output */
    size_t icc_len;

    med_meta_item *meta;
    size_t nmeta;
};

/* Pixel buffer size for w x h x channels x depth, after the pixel limit.
 * Fails with CT_ERR_LIMIT naming `name`. */
ct_status med_check_size(ct_ctx *ctx, const char *name, uint64_t w, uint64_t h, unsigned channels,
                         unsigned depth, size_t *bytes);

/* Append a copy of data to img->meta. */
ct_status med_meta_add(ct_ctx *ctx, med_image *img, uint32_t id, int where, const uint8_t *data,
                       size_t len);

/* New empty image (no pixels yet) of the given kind. */
ct_status med_alloc(ct_ctx *ctx, med_kind kind, med_image **out);

ct_status med_png_read(ct_ctx *ctx, const uint8_t *data, size_t size, const char *name,
                       med_image **out);
ct_status med_jpeg_read(ct_ctx *ctx, const uint8_t *data, size_t size, const char *name,
                        unsigned flags, med_image **out);
/* *out stays NULL and CT_OK is returned when libavformat does not see an
 * image in the data, so the caller can write its own message. */
ct_status med_av_read(ct_ctx *ctx, const uint8_t *data, size_t size, const char *name,
                      med_image **out);

/* threads 0: libpng writes the image data (the plain encoder); 1 or more:
 * celtrace's writer on that many threads (the same file whatever the
 * number): libdeflate in one piece up to whole_max bytes of filtered rows
 * (0: the default), zlib segments above. */
ct_status med_png_write(ct_ctx *ctx, const med_image *img, const char *path, unsigned threads,
                        size_t whole_max, const med_write_opts *opts);
/* quality is ignored for an image with coefficients (written as they are). */
ct_status med_jpeg_write(ct_ctx *ctx, const med_image *img, const char *path, int quality,
                         const med_write_opts *opts);

/* The output stream of the writers: fopen(path, "wb"), or, when opts has
 * a tap, a stream that writes the file and hands the tap each byte
 * written. NULL with errno set on failure. */
FILE *med_open_out(const char *path, const med_write_opts *opts);

void med_jpeg_coef_free(med_jcoef *jc);
/* med_realize_luma for an image with coefficients: delta goes into the Y
 * coefficients, quantised with the input's table; on return delta holds
 * the change of the decoded luma (whole levels). */
ct_status med_jpeg_coef_add(ct_ctx *ctx, med_image *img, float *delta, unsigned threads);

static inline bool med_host_is_le(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

#endif /* CT_MED_INT_H */

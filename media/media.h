/* media: image files <-> pixel buffers (libpng, libjpeg-turbo, and libav*
 * for the still formats verify also reads). media never calls the mark. */
#ifndef CT_MEDIA_H
#define CT_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

typedef enum med_kind {
    MED_KIND_PNG = 1,
    MED_KIND_JPEG = 2,
    MED_KIND_OTHER = 3 /* decoded through libavcodec (WebP, TIFF, BMP, GIF...): read only */
} med_kind;

typedef struct med_image med_image; /* opaque; see media.c */

/* Read an image file. Refuses images over ctx->max_pixels (CT_ERR_LIMIT)
 * before allocating pixels; corrupt/truncated/unsupported: CT_ERR_FORMAT;
 * missing/unreadable: CT_ERR_IO. Caller frees *out with med_image_free. */
ct_status med_read_file(ct_ctx *ctx, const char *path, med_image **out);

/* Same from memory (used by the fuzz harness and tests). */
ct_status med_read_mem(ct_ctx *ctx, const uint8_t *data, size_t size, const char *name,
                       med_image **out);

/* Read flags. MED_READ_YCC: a Y'CbCr JPEG with common sampling (4:4:4,
 * 4:2:2, 4:4:0, 4:2:0) is read without colour conversion: the image is its
 * Y plane (1 channel, med_luma gives Y and the rooms the colour leaves),
 * the chroma is kept as decoded, and it can only be written as JPEG,
 * whose encoder takes the planes as they are (no resampling, no colour
 * round trip). Any other file reads as without the flag. For embedders
 * that write JPEG. */
#define MED_READ_YCC 1u
/* MED_READ_COEF: as MED_READ_YCC (a gray JPEG too), and the file's DCT
 * coefficients are kept: med_realize_luma then adds the change to the Y
 * coefficients, quantised with the file's own table, and the writer
 * stores the coefficients again (JPEG only, no --quality). Nothing is
 * decoded and encoded again: no generation loss, chroma and tables stay
 * as they were. Other JPEGs read as with MED_READ_YCC alone. */
#define MED_READ_COEF 2u
ct_status med_read_file_as(ct_ctx *ctx, const char *path, unsigned flags, med_image **out);
ct_status med_read_mem_as(ct_ctx *ctx, const uint8_t *data, size_t size, const char *name,
                          unsigned flags, med_image **out);

void med_image_free(med_image *img);

typedef struct med_write_opts {
    int jpeg_quality; /* 1..100, or 0 = follow the input's quantisation tables (75 if not a JPEG) */
    unsigned threads; /* PNG: 0 = libpng's own single-threaded writer (zlib); 1 or more = the
                         rows filtered on up to this many threads and the image data deflated
                         by celtrace (same bytes for any number): in one piece by libdeflate,
                         or, above png_whole_max bytes of filtered rows, in segments by zlib */
    size_t png_whole_max; /* 0 = 512 MiB; tests set it small to reach the segments */
    /* If set, every byte written to the file is also handed to tap, in
     * order, as it goes out (the caller hashes the output meanwhile
     * instead of reading it back); a nonzero return fails the write. */
    int (*tap)(void *user, const void *bytes, size_t n);
    void *tap_user;
} med_write_opts;

/* Write img to path; the format comes from the extension (.png, .jpg, .jpeg,
 * case-insensitive; anything else is CT_ERR_MISUSE). Keeps what the input
 * carried where the output format can hold it (PNG ancillary chunks, JPEG
 * APP/COM segments, chroma subsampling, progressive, bit depth, alpha).
 * Writes path itself: callers that need atomicity pass a temporary path. */
ct_status med_write_file(ct_ctx *ctx, const med_image *img, const char *path,
                         const med_write_opts *opts);

uint32_t med_width(const med_image *img);
uint32_t med_height(const med_image *img);
med_kind med_image_kind(const med_image *img);

/* Luminance view for the mark, all planes width*height floats, row-major:
 *   y      BT.601 luma (0.299 R + 0.587 G + 0.114 B) in 8-bit levels 0..255
 *          (16-bit input scaled by 1/257; gray input: the gray value)
 *   room_up, room_down  how far (8-bit levels) the luma of the pixel can be
 *          raised / lowered by adding the same amount to every colour channel
 *          before any channel clips (255 - max channel, min channel)
 *   weight visibility 0..1: alpha/max, or 1 without alpha
 * Any of the out pointers except y may be NULL. */
ct_status med_luma(ct_ctx *ctx, const med_image *img, float *y, float *room_up, float *room_down,
                   float *weight);
/* The same on up to `threads` threads (same planes, to the bit). */
ct_status med_luma_mt(ct_ctx *ctx, const med_image *img, float *y, float *room_up,
                      float *room_down, float *weight, unsigned threads);

/* The rooms med_luma would give row y, columns [x0, x0 + n), the same to
 * the bit, into up and down (n floats each): src is the med_image (a
 * wm_rooms_fn, for callers that keep no planes of rooms). The image must
 * be one med_luma accepts. */
void med_rooms_row(const void *src, uint32_t y, uint32_t x0, uint32_t n, float *up, float *down);

/* Add delta[i] (8-bit luma levels) to every colour channel of pixel i,
 * clipping to the channel range; alpha is never touched. 8-bit images
 * round delta to the nearest integer (callers pass integers to be exact);
 * 16-bit images add round(delta*257). */
ct_status med_add_luma(ct_ctx *ctx, med_image *img, const float *delta);

/* Realise a continuous luma change as closely as the pixel format allows,
 * carrying each pixel's rounding error to its neighbours (Floyd-Steinberg)
 * so that the local mean of the change follows delta even where |delta|
 * is well under a level. Pixels with alpha 0 are left bit-exact.
 *   16-bit: every colour channel gets round(delta * 257); no diffusion.
 *   8-bit gray, or split_rgb false: the same whole number on every channel.
 *   8-bit RGB(A) with split_rgb: whole levels plus a fraction made of +1 on
 *   some channels (B is 0.114 of a level of luma, R 0.299, R+B 0.413, G
 *   0.587, ...), so flat colour carries sub-level marks as a fine change of
 *   a single channel instead of a dither of whole grey levels. Only worth it
 *   for lossless output: a JPEG encoder rounds luma to whole levels again.
 * Channels are clipped to their range; the clipped part is diffused too.
 * On return delta[i] holds the luma change actually made (0 under alpha 0),
 * so the caller can measure what was written without reading it back.
 * 8-bit images diffuse within 4 fixed row bands, run on up to `threads`
 * threads (0 or 1: the caller's): the output does not depend on it.
 * An image read with its JPEG coefficients (MED_READ_COEF) takes the
 * change in its Y coefficients instead (each 8x8 block's DCT of delta,
 * quantised with the file's step), and delta then holds the change a
 * decoder shows (the block decoded again, less its pixels as read, which
 * stay as read). */
ct_status med_realize_luma(ct_ctx *ctx, med_image *img, float *delta, bool split_rgb,
                           unsigned threads);

/* ---- added for tests and the api layer ---------------------------------- */

/* What the input carried, for tests and for callers that report it. */
typedef struct med_info {
    med_kind kind;
    uint32_t width, height;
    unsigned channels;     /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
    unsigned depth;        /* 8 or 16 bits per sample */
    int png_palette;       /* 1 if the PNG input was a palette image */
    int jpeg_quality;      /* JPEG input: estimated IJG quality 1..100, else 0 */
    int jpeg_progressive;  /* JPEG input: 1 if progressive */
    int jpeg_components;   /* JPEG input: 1 or 3, else 0 */
    int jpeg_h[3], jpeg_v[3]; /* JPEG input: sampling factors per component */
    int ycc;               /* read with MED_READ_YCC as Y'CbCr planes (channels 1) */
} med_info;

void med_get_info(const med_image *img, med_info *info);
unsigned med_channels(const med_image *img);
unsigned med_depth(const med_image *img);

/* Samples, interleaved, rows packed without padding: uint8_t for depth 8,
 * uint16_t in host byte order for depth 16. Borrowed from img. */
const void *med_pixels(const med_image *img);
void *med_pixels_mut(med_image *img);

/* A blank (all samples 0) image of kind MED_KIND_PNG; channels 1..4, depth
 * 8 or 16. CT_ERR_MISUSE for other shapes, CT_ERR_LIMIT over
 * ctx->max_pixels, CT_ERR_NOMEM. Caller frees with med_image_free. */
ct_status med_image_new(ct_ctx *ctx, uint32_t w, uint32_t h, unsigned channels, unsigned depth,
                        med_image **out);

/* Deep copy, metadata included. Caller frees with med_image_free. */
ct_status med_image_clone(ct_ctx *ctx, const med_image *img, med_image **out);

/* Metadata blocks kept for writing: PNG ancillary chunks (id = chunk type,
 * MED_ID('t','E','X','t')), JPEG APPn/COM segments (id = marker code,
 * 0xE0..0xEF or 0xFE). med_meta_get returns NULL past the end; the data
 * is borrowed from img (may be NULL when *len is 0). */
#define MED_ID(a, b, c, d) \
    (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (uint32_t)(d))
size_t med_meta_count(const med_image *img);
const uint8_t *med_meta_get(const med_image *img, size_t i, uint32_t *id, size_t *len);

/* PROCESS-GLOBAL: silence libav*'s log output (it writes to stderr about
 * corrupt input, which breaks the CLI's one-line contract). libav has no
 * per-context log level, so this is left to the program (or api layer)
 * to call once; media never calls it itself. */
void med_libav_quiet(void);

/* ---- video (med_video.c) ------------------------------------------------- */

/* One decoded frame as media hands it to the caller. y is the luma (Y'
 * code values of plane 0) as floats in 8-bit levels: 8-bit formats give
 * the code value itself, 10/12-bit formats the code value / 4 (/ 16), so
 * the mark is computed on the same scale whatever the depth. Borrowed:
 * valid during the callback only. */
/* The picture's global translation from one frame to the next (see
 * med_motion.c). med_motion_push takes each frame's luma plane (8-bit
 * samples, or 16-bit ones of `depth` bits) in order and gives the shift
 * from the previous frame, in pixels: 0 for the first frame, a still shot,
 * a cut, or no clear global motion. Frames under 192 pixels a side always
 * give 0. */
typedef struct med_motion med_motion;
ct_status med_motion_new(ct_ctx *ctx, uint32_t w, uint32_t h, med_motion **out);
void med_motion_free(med_motion *m);
void med_motion_push(med_motion *m, const uint8_t *y, ptrdiff_t stride, int depth, double *dx,
                     double *dy);

typedef struct med_vframe {
    uint32_t w, h;
    const float *y;
    const float *weight; /* transcode: alpha as 0..1 where the frames have
                            it (the mark only where a pixel is seen), else
                            NULL */
    uint64_t index;   /* 0, 1, ... in presentation order */
    double time;      /* seconds from the start of the stream */
    double duration;  /* the container's idea of the clip length, s; 0 unknown */
    double fps;       /* the stream's frame rate; 0 unknown */
    bool key;         /* a key (intra) frame: a re-encoded leak keeps the mark
                         best there, before motion compensation smears it */
    double pan_x, pan_y; /* how far the picture has moved since the first
                            frame decoded, pixels (med_motion over every
                            frame, summed); 0 on a still shot. A mark placed
                            with it moves with the picture, which the
                            encoder's motion compensation then carries for
                            free; a scan undoes it to add frames up. */
} med_vframe;

/* Embed callback: fill delta (w*h floats, 8-bit luma levels) with the change
 * to add to frame f. Media adds it to the Y plane (10-bit: times 4) with
 * error diffusion down the columns and clips to the code range. Any status
 * but CT_OK stops the transcode (media writes the message: the callback
 * runs on a worker thread and must not touch a shared ct_ctx).
 * THREADS: called from several worker threads at once, each with its own
 * frame, in no particular order; frames are encoded in order whatever
 * order their marks finish in. */
typedef ct_status (*med_mark_fn)(void *opaque, const med_vframe *f, float *delta);
/* Read-only callback for scans (verify). */
typedef ct_status (*med_scan_fn)(void *opaque, const med_vframe *f);
/* Progress: frames done, frames expected (0 unknown), seconds since start. */
typedef void (*med_progress_fn)(void *opaque, uint64_t frames, uint64_t total, double elapsed);

typedef struct med_video_opts {
    const char *codec;    /* FFmpeg encoder name; NULL: libx264 */
    int crf;              /* > 0: CRF (or the encoder's "crf"); 0: 17 if the
                             encoder has a crf option and no bitrate is set */
    int64_t bitrate;      /* > 0: target bits per second instead of CRF */
    const char *preset;   /* NULL: "medium" where the encoder has presets */
    int threads;          /* marking threads; 0: one per core, at most 4 */
    med_progress_fn progress;
    void *progress_opaque;
} med_video_opts;

typedef struct med_video_info {
    uint32_t width, height;
    uint64_t frames;      /* frames decoded (transcode: and encoded) */
    double duration;      /* seconds, from the container (0 unknown) */
    double fps;           /* the stream's frame rate (0 unknown) */
    uint64_t frames_declared; /* transcode: the frame count the container
                                 states for the stream (0 unknown) */
    bool alpha_dropped;   /* transcode: the input has alpha, the encoder
                             has no format that keeps it */
    double psnr_y;        /* transcode: luma PSNR of the marked frames vs the
                             decoded input, before the encoder (8-bit scale) */
    double first_time, last_time; /* scan: times of the first/last frame given */
    char pix_fmt[32];
    char encoder[32];
} med_video_info;

/* 1 if the name ends in an extension celtrace treats as video (.mp4 .mov
 * .mkv .webm .avi .m4v, case-insensitive). */
bool med_is_video_name(const char *path);

/* Decode the best video stream of `input`, hand every frame to mark, add
 * the change it returns to the frame's Y plane, encode (opts) and mux to
 * `output`, whose container follows `format_name`'s extension (pass the
 * final name when writing to a temporary). Every other stream is copied
 * packet for packet; container and stream metadata are copied; time base,
 * timestamps, frame rate and pixel format are kept (a pixel format the
 * encoder lacks is converted with libswscale after marking). Frames are
 * streamed: memory does not grow with the length. Supports planar or
 * semi-planar Y'CbCr and gray at 8, 10 or 12 bits (little-endian).
 * Returns CT_ERR_IO (input missing, output not writable), CT_ERR_FORMAT
 * (not a video, corrupt or truncated input, unsupported pixel format,
 * a stream the output container cannot hold), CT_ERR_LIMIT (frame over
 * ctx->max_pixels), CT_ERR_MISUSE (unknown encoder or output format, an
 * option the encoder lacks), CT_ERR_NOMEM. On failure output may be left
 * partly written: the caller removes it. info may be NULL. */
ct_status med_video_transcode(ct_ctx *ctx, const char *input, const char *output,
                              const char *format_name, const med_video_opts *opts,
                              med_mark_fn mark, void *opaque, med_video_info *info);

/* Decode the best video stream of path and hand every stride-th frame of
 * the first max_seconds (<= 0: all) to fn. Damaged packets are skipped (a
 * leak is often damaged); it is CT_ERR_FORMAT only if no frame decodes.
 * info may be NULL. */
ct_status med_video_scan(ct_ctx *ctx, const char *path, double max_seconds, unsigned stride,
                         med_scan_fn fn, void *opaque, med_video_info *info);

#endif /* CT_MEDIA_H */

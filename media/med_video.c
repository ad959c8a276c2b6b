/* media: video files through libavformat/libavcodec. Demux, decode, hand
 * each frame's luma to the caller, add the change it returns to the Y
 * plane, encode, mux; every other stream is copied packet for packet.
 * media never calls the mark: the caller's callback does.
 *
 * Memory is bounded: one decoded frame (plus what the codecs keep for
 * their own reference and thread queues) and two float planes. */
#include "media/med_int.h"

#include <errno.h>
#include <pthread.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#define MED_DEFAULT_CODEC  "libx264"
#define MED_DEFAULT_CRF    17
#define MED_DEFAULT_PRESET "medium"

bool med_is_video_name(const char *path)
{
    static const char *const ext[] = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"};
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot == NULL || (slash != NULL && dot < slash)) {
        return false;
    }
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        if (strcasecmp(dot, ext[i]) == 0) {
            return true;
        }
    }
    return false;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static ct_status av_err(ct_ctx *ctx, ct_status st, const char *name, const char *what, int err)
{
    char buf[AV_ERROR_MAX_STRING_SIZE];
    if (err == AVERROR(ENOMEM)) {
        return ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory (%s)", name, what);
    }
    av_strerror(err, buf, sizeof buf);
    return ct_fail(ctx, st, "%s: %s (%s)", name, what, buf);
}

/* The layouts we mark in place:
 *  - Y'CbCr and gray: Y' in plane 0, one sample per element, 8 bits or
 *    9..16 bits little-endian;
 *  - RGB (QuickTime Animation, PNG or FFV1 in a clip, often with alpha):
 *    8-bit packed pixels of 3 or 4 bytes, or planar G, B, R of 8..16 bits
 *    little-endian. The mark is made on BT.601 luma, as for RGB images,
 *    and added to R, G and B alike, which moves that luma by the same
 *    amount.
 * Alpha, in either family, is never touched; it weighs the mark (where a
 * pixel is not seen there is none, as in still cels).
 * Palette, packed YUYV, big-endian, float and hardware frames are
 * refused by name. */
typedef struct vlay {
    bool rgb;
    bool planar; /* RGB: one plane per channel */
    int depth;   /* bits per sample */
    int step;    /* bytes from one pixel to the next in a plane */
    int plane[3], off[3]; /* RGB: where R, G and B are */
    bool alpha;  /* an alpha component, 8 bits packed or 8..16 bits planar */
    int a_plane, a_off, a_step, a_depth;
} vlay;

static void alpha_of_desc(const AVPixFmtDescriptor *d, vlay *l)
{
    const AVComponentDescriptor *a = &d->comp[3];
    l->alpha = (d->flags & AV_PIX_FMT_FLAG_ALPHA) && d->nb_components == 4 && a->shift == 0 &&
               ((a->depth == 8 && (a->step == 1 || a->step == 4)) ||
                (a->depth > 8 && a->depth <= 16 && a->step == 2));
    l->a_plane = a->plane;
    l->a_off = a->offset;
    l->a_step = a->step;
    l->a_depth = a->depth;
}

static bool vlay_of(const AVPixFmtDescriptor *d, vlay *l)
{
    memset(l, 0, sizeof *l);
    if (d == NULL || (d->flags & (AV_PIX_FMT_FLAG_PAL | AV_PIX_FMT_FLAG_HWACCEL |
                                  AV_PIX_FMT_FLAG_BE | AV_PIX_FMT_FLAG_BITSTREAM |
                                  AV_PIX_FMT_FLAG_FLOAT)) != 0) {
        return false;
    }
    const AVComponentDescriptor *c = d->comp;
    if (!(d->flags & AV_PIX_FMT_FLAG_RGB)) {
        if (c[0].plane != 0 || c[0].shift != 0 || c[0].offset != 0) {
            return false;
        }
        l->depth = c[0].depth;
        l->step = c[0].step;
        alpha_of_desc(d, l);
        return (c[0].depth == 8 && c[0].step == 1) ||
               (c[0].depth > 8 && c[0].depth <= 16 && c[0].step == 2);
    }
    if (d->nb_components < 3) {
        return false;
    }
    l->rgb = true;
    l->depth = c[0].depth;
    l->step = c[0].step;
    l->planar = c[0].plane != c[1].plane;
    for (int i = 0; i < 3; i++) {
        if (c[i].depth != l->depth || c[i].step != l->step || c[i].shift != 0 ||
            (i > 0 && (c[i].plane != c[0].plane) != l->planar)) {
            return false;
        }
        l->plane[i] = c[i].plane;
        l->off[i] = c[i].offset;
    }
    alpha_of_desc(d, l);
    if (l->planar) {
        return (l->depth == 8 && l->step == 1) ||
               (l->depth > 8 && l->depth <= 16 && l->step == 2);
    }
    return l->depth == 8 && (l->step == 3 || l->step == 4);
}

/* ---- shared input side ----------------------------------------------------- */

typedef struct vin {
    const char *name;
    AVFormatContext *ic;
    AVCodecContext *dec;
    int vidx;
    AVStream *vst;
    int64_t t0;           /* pts the times count from */
    uint32_t w, h;
    vlay lay;    /* the frames' layout (vin_check) */
    float *y;
    uint8_t *y8; /* RGB: 8-bit luma for the pan estimate */
    double duration;
    double fps; /* 0 unknown */
} vin;

static void vin_close(vin *v)
{
    avcodec_free_context(&v->dec);
    avformat_close_input(&v->ic);
    free(v->y);
    v->y = NULL;
    free(v->y8);
    v->y8 = NULL;
}

static ct_status vin_open(ct_ctx *ctx, const char *path, bool threads, vin *v)
{
    int ret;
    memset(v, 0, sizeof *v);
    v->name = path;
    ret = avformat_open_input(&v->ic, path, NULL, NULL);
    if (ret < 0) {
        if (ret == AVERROR(ENOENT) || ret == AVERROR(EACCES) || ret == AVERROR(EISDIR)) {
            return av_err(ctx, CT_ERR_IO, path, "cannot open", ret);
        }
        return av_err(ctx, CT_ERR_FORMAT, path, "not a video celtrace can read", ret);
    }
    /* Random bytes pass for a raw H.263 stream about once in 300 files of
     * 300 KB and decode to a garbage frame: a corrupt file, not a video.
     * Containers probe at full score; refuse what FFmpeg itself calls a
     * possible misdetection (score 25 or less), and a raw stream (generic
     * index, no container) that only half matched (50 or less). A
     * transport stream named .mp4 probes at 50 and is a container: kept. */
    const AVInputFormat *ifmt = v->ic->iformat;
    int score = v->ic->probe_score;
    if (ifmt != NULL && (score <= AVPROBE_SCORE_RETRY ||
                         (score <= AVPROBE_SCORE_EXTENSION && (ifmt->flags & AVFMT_GENERIC_INDEX)))) {
        return ct_fail(ctx, CT_ERR_FORMAT,
                       "%s: not a video celtrace can read (no container; at best a raw %s "
                       "stream, probe score %d of 100)",
                       path, ifmt->name, score);
    }
    ret = avformat_find_stream_info(v->ic, NULL);
    if (ret < 0) {
        return av_err(ctx, CT_ERR_FORMAT, path, "cannot read the streams", ret);
    }
    const AVCodec *codec = NULL;
    v->vidx = av_find_best_stream(v->ic, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (v->vidx < 0 || codec == NULL) {
        return ct_fail(ctx, CT_ERR_FORMAT, "%s: no video stream celtrace can decode", path);
    }
    v->vst = v->ic->streams[v->vidx];
    const AVCodecParameters *par = v->vst->codecpar;
    if (par->width <= 0 || par->height <= 0) {
        return ct_fail(ctx, CT_ERR_FORMAT, "%s: the video stream has no picture size", path);
    }
    if ((uint64_t)par->width * (uint64_t)par->height > ctx->max_pixels) {
        return ct_fail(ctx, CT_ERR_LIMIT, "%s: %dx%d frames are over the limit of %llu pixels",
                       path, par->width, par->height, (unsigned long long)ctx->max_pixels);
    }
    v->dec = avcodec_alloc_context3(codec);
    if (v->dec == NULL) {
        return ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory", path);
    }
    ret = avcodec_parameters_to_context(v->dec, par);
    if (ret < 0) {
        return av_err(ctx, CT_ERR_FORMAT, path, "bad codec parameters", ret);
    }
    v->dec->pkt_timebase = v->vst->time_base;
    v->dec->max_pixels = ctx->max_pixels > INT64_MAX ? INT64_MAX : (int64_t)ctx->max_pixels;
    /* Frame threading: the decoder keeps up with the encoder on any core
     * count (thread_count 0 = one per core). */
    v->dec->thread_count = threads ? 0 : 1;
    v->dec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    ret = avcodec_open2(v->dec, codec, NULL);
    if (ret < 0) {
        return av_err(ctx, CT_ERR_FORMAT, path, "cannot start the video decoder", ret);
    }
    v->w = (uint32_t)par->width;
    v->h = (uint32_t)par->height;
    v->t0 = v->vst->start_time != AV_NOPTS_VALUE ? v->vst->start_time : AV_NOPTS_VALUE;
    if (v->ic->duration > 0) {
        v->duration = (double)v->ic->duration / AV_TIME_BASE;
    } else if (v->vst->duration > 0) {
        v->duration = (double)v->vst->duration * av_q2d(v->vst->time_base);
    }
    AVRational fr = av_guess_frame_rate(v->ic, v->vst, NULL);
    v->fps = fr.num > 0 && fr.den > 0 ? av_q2d(fr) : 0;
    v->y = ct_mallocarray(ctx, (size_t)v->w * v->h, sizeof *v->y);
    if (v->y == NULL) {
        return CT_ERR_NOMEM;
    }
    return CT_OK;
}

/* Check frame f against the stream's size and layout; sets v->lay. */
static ct_status vin_check(ct_ctx *ctx, vin *v, const AVFrame *f)
{
    const AVPixFmtDescriptor *d = av_pix_fmt_desc_get((enum AVPixelFormat)f->format);
    if (f->width != (int)v->w || f->height != (int)v->h) {
        return ct_fail(ctx, CT_ERR_FORMAT, "%s: the picture size changes inside the stream "
                       "(%ux%u to %dx%d); not supported", v->name, v->w, v->h, f->width,
                       f->height);
    }
    if (!vlay_of(d, &v->lay)) {
        return ct_fail(ctx, CT_ERR_FORMAT, "%s: pixel format %s is not supported for video",
                       v->name, d != NULL ? d->name : "?");
    }
    if (v->lay.rgb && v->y8 == NULL) {
        v->y8 = ct_mallocarray(ctx, (size_t)v->w * v->h, 1);
        if (v->y8 == NULL) {
            return CT_ERR_NOMEM;
        }
    }
    return CT_OK;
}

/* BT.601 luma weights, as for RGB images (media.h). */
#define VR 0.299f
#define VG 0.587f
#define VB 0.114f

/* Sample x of an RGB row set: channel c of pixel x. */
static inline uint32_t rgb_at(const uint8_t *const row[3], const vlay *l, int c, uint32_t x)
{
    const uint8_t *p = row[c] + (size_t)x * (size_t)l->step + (size_t)l->off[c];
    return l->step == 2 && l->planar ? (uint32_t)(p[0] | (p[1] << 8)) : p[0];
}

static void rgb_rows(const AVFrame *f, const vlay *l, uint32_t r, const uint8_t *row[3])
{
    for (int c = 0; c < 3; c++) {
        row[c] = f->data[l->plane[c]] + (ptrdiff_t)r * f->linesize[l->plane[c]];
    }
}

/* Luma of pixel x of an RGB row set, in 8-bit levels. */
static inline float rgb_luma(const uint8_t *const row[3], const vlay *l, uint32_t x)
{
    const float k = 1.0f / (float)(1 << (l->depth - 8));
    return k * (VR * (float)rgb_at(row, l, 0, x) + VG * (float)rgb_at(row, l, 1, x) +
                VB * (float)rgb_at(row, l, 2, x));
}

/* Luma of a checked frame as floats in 8-bit levels. */
static void luma_of(const AVFrame *f, uint32_t w, uint32_t h, const vlay *l, float *y)
{
    const int depth = l->depth;
    if (l->rgb) {
        for (uint32_t r = 0; r < h; r++) {
            const uint8_t *row[3];
            rgb_rows(f, l, r, row);
            float *o = y + (size_t)r * w;
            for (uint32_t x = 0; x < w; x++) {
                o[x] = rgb_luma(row, l, x);
            }
        }
    } else if (depth == 8) {
        for (uint32_t r = 0; r < h; r++) {
            const uint8_t *s = f->data[0] + (ptrdiff_t)r * f->linesize[0];
            float *o = y + (size_t)r * w;
            for (uint32_t x = 0; x < w; x++) {
                o[x] = s[x];
            }
        }
    } else {
        const float k = 1.0f / (float)(1 << (depth - 8));
        for (uint32_t r = 0; r < h; r++) {
            const uint16_t *s = (const uint16_t *)(f->data[0] + (ptrdiff_t)r * f->linesize[0]);
            float *o = y + (size_t)r * w;
            for (uint32_t x = 0; x < w; x++) {
                o[x] = s[x] * k;
            }
        }
    }
}

/* Alpha of a checked frame with one (l->alpha) as weights 0..1. */
static void alpha_of(const AVFrame *f, uint32_t w, uint32_t h, const vlay *l, float *wt)
{
    const float k = 1.0f / (float)((1 << l->a_depth) - 1);
    for (uint32_t r = 0; r < h; r++) {
        const uint8_t *row = f->data[l->a_plane] + (ptrdiff_t)r * f->linesize[l->a_plane] + l->a_off;
        float *o = wt + (size_t)r * w;
        for (uint32_t x = 0; x < w; x++) {
            const uint8_t *p = row + (size_t)x * (size_t)l->a_step;
            o[x] = k * (float)(l->a_step == 2 ? (p[0] | (p[1] << 8)) : p[0]);
        }
    }
}

/* The plane the pan estimate reads (med_motion_push): Y' itself, or for
 * RGB the luma rounded to 8 bits in v->y8. */
static void motion_plane(vin *v, const AVFrame *f, const uint8_t **p, ptrdiff_t *stride,
                         int *depth)
{
    if (!v->lay.rgb) {
        *p = f->data[0];
        *stride = f->linesize[0];
        *depth = v->lay.depth;
        return;
    }
    for (uint32_t r = 0; r < v->h; r++) {
        const uint8_t *row[3];
        rgb_rows(f, &v->lay, r, row);
        uint8_t *o = v->y8 + (size_t)r * v->w;
        for (uint32_t x = 0; x < v->w; x++) {
            float yv = rgb_luma(row, &v->lay, x);
            o[x] = (uint8_t)(yv > 255.0f ? 255 : (int)(yv + 0.5f));
        }
    }
    *p = v->y8;
    *stride = (ptrdiff_t)v->w;
    *depth = 8;
}

static bool vin_is_key(const AVFrame *f)
{
    return f->key_frame != 0 || f->pict_type == AV_PICTURE_TYPE_I;
}

static double vin_time(vin *v, int64_t pts)
{
    if (pts == AV_NOPTS_VALUE) {
        return 0;
    }
    if (v->t0 == AV_NOPTS_VALUE) {
        v->t0 = pts;
    }
    return (double)(pts - v->t0) * av_q2d(v->vst->time_base);
}

/* ---- transcode ------------------------------------------------------------- */

/* The marking runs on a small pool of worker threads, frames in flight
 * in a ring of slots, so that the mark of one frame overlaps the decoding
 * and encoding of the others (both codecs run threads of their own). The
 * main thread alone talks to libav: it decodes, hands each frame to the
 * next free slot, and encodes the slots strictly in order. A worker turns
 * a slot's frame into luma, calls the caller's mark, and writes the marked
 * picture into the slot's own frame buffer. Memory: a fixed number of
 * slots, each one frame and two float planes, whatever the length. */
enum { SLOT_FREE, SLOT_QUEUED, SLOT_BUSY, SLOT_DONE };
#define MED_MAX_MARK_THREADS 8

typedef struct slot {
    AVFrame *in;  /* the decoded frame (a reference; read only) */
    AVFrame *out; /* our own buffer: the marked picture */
    float *y, *delta;
    float *wt;  /* alpha as weights, when the frames have it */
    float *err; /* realize's error, one per column */
    med_vframe vf;
    int64_t pts;
    vlay lay;
    double se; /* squared luma change, 8-bit levels */
    double nse; /* pixels se counts: all, or with alpha those seen */
    ct_status st;
    int state;
} slot;

typedef struct vt vt;

typedef struct pool {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    bool mu_ok, work_ok, done_ok;
    slot *s;
    unsigned n;          /* slots */
    unsigned head, used; /* oldest slot in flight, slots in flight */
    pthread_t th[MED_MAX_MARK_THREADS];
    unsigned nth;
    bool quit;
    vt *t;
} pool;

struct vt {
    ct_ctx *ctx;
    const char *out_name;
    vin in;
    AVFormatContext *oc;
    AVCodecContext *enc;
    int *map; /* input stream -> output stream, -1 for none */
    int ovidx;
    AVPacket *pkt;
    AVFrame *frame;
    AVFrame *cvt; /* pixel format conversion target, when needed */
    struct SwsContext *sws;
    enum AVPixelFormat src_fmt; /* what the encoder was set up for */
    med_mark_fn mark;
    void *opaque;
    const med_video_opts *opts;
    uint64_t frames, submitted, total;
    int64_t last_pts;
    double se;      /* squared luma change, 8-bit levels */
    double nse;     /* the pixels it is over */
    bool alpha_dropped; /* the encoder's format has no alpha; the input's had */
    double t_start, t_last_progress;
    med_motion *mo;       /* the picture's pan, frame to frame (main thread) */
    double pan_x, pan_y; /* summed */
    pool pl;
};

static ct_status write_packets(vt *t)
{
    int ret;
    for (;;) {
        ret = avcodec_receive_packet(t->enc, t->pkt);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) {
            return CT_OK;
        }
        if (ret < 0) {
            return av_err(t->ctx, CT_ERR_FORMAT, t->out_name, "the video encoder failed", ret);
        }
        t->pkt->stream_index = t->ovidx;
        av_packet_rescale_ts(t->pkt, t->enc->time_base, t->oc->streams[t->ovidx]->time_base);
        ret = av_interleaved_write_frame(t->oc, t->pkt);
        if (ret < 0) {
            return av_err(t->ctx, CT_ERR_IO, t->out_name, "cannot write", ret);
        }
    }
}

/* Add delta to the Y plane of f (w x h, depth bits); returns the squared
 * change actually made, in 8-bit levels. The change is mostly well under
 * a level in flat areas, so plain rounding would erase it there: the
 * rounding error is carried down each column (err: one per column), so
 * the local mean of the change follows delta. Columns rather than rows:
 * a row's pixels are then independent and go through in vector lanes,
 * a straight loop the compiler vectorises. Chains along the rows took
 * 6.5 ms of CPU a 1080p frame, 7 % of a video embed; x264 codes either
 * at the same cost (kid clip: 3.81 against 3.76 MB). */
#define RMAX(a, b) ((a) > (b) ? (a) : (b))
#define RMIN(a, b) ((a) < (b) ? (a) : (b))
/* 8 bits: squares summed in int32 over at most this many pixels
 * (2048 * 255^2 < 2^31); deeper pictures sum in int64. */
#define REALIZE_CHUNK 2048u

/* maxv is a parameter even at 8 bits: with the constant 255 GCC turns
 * the clamp into branches and the loop is no longer vectorised. */
CT_SIMD_CLONES
static int32_t realize_run8(uint8_t *restrict px, const float *restrict d, float *restrict err,
                            uint32_t n, float maxv)
{
    int32_t se = 0;
    for (uint32_t x = 0; x < n; x++) {
        int32_t o = px[x];
        float v = (float)o + d[x] + err[x];
        float q = RMIN(RMAX(rintf(v), 0.0f), maxv);
        err[x] = RMIN(RMAX(v - q, -1.0f), 1.0f); /* clipped: do not pile up */
        int32_t c = (int32_t)q, k = c - o;
        px[x] = (uint8_t)c;
        se += k * k;
    }
    return se;
}

CT_SIMD_CLONES
static int64_t realize_run16(uint16_t *restrict px, const float *restrict d, float *restrict err,
                             uint32_t n, float scale, float maxv)
{
    int64_t se = 0;
    for (uint32_t x = 0; x < n; x++) {
        int32_t o = px[x];
        float v = (float)o + d[x] * scale + err[x];
        float q = RMIN(RMAX(rintf(v), 0.0f), maxv);
        err[x] = RMIN(RMAX(v - q, -1.0f), 1.0f);
        int32_t c = (int32_t)q, k = c - o;
        px[x] = (uint16_t)c;
        se += (int64_t)k * k;
    }
    return se;
}

/* RGB: the whole-level change of each pixel (error carried down the
 * columns as for Y') added to R, G and B alike; a channel at its limit
 * takes what fits, and the squared change counts the luma that moved. */
static double realize_rgb(const float *delta, AVFrame *f, uint32_t w, uint32_t h, const vlay *l,
                          float *err)
{
    const float scale = (float)(1 << (l->depth - 8));
    const int32_t maxv = (1 << l->depth) - 1;
    const float wt[3] = {VR, VG, VB};
    double se = 0;
    memset(err, 0, (size_t)w * sizeof *err);
    for (uint32_t y = 0; y < h; y++) {
        uint8_t *row[3];
        for (int c = 0; c < 3; c++) {
            row[c] = f->data[l->plane[c]] + (ptrdiff_t)y * f->linesize[l->plane[c]];
        }
        const float *d = delta + (size_t)y * w;
        for (uint32_t x = 0; x < w; x++) {
            float v = d[x] * scale + err[x];
            float q = rintf(v);
            err[x] = RMIN(RMAX(v - q, -1.0f), 1.0f);
            int32_t k = (int32_t)q;
            if (k == 0) {
                continue;
            }
            float moved = 0;
            for (int c = 0; c < 3; c++) {
                uint8_t *p = row[c] + (size_t)x * (size_t)l->step + (size_t)l->off[c];
                bool wide = l->step == 2 && l->planar;
                int32_t o = wide ? (p[0] | (p[1] << 8)) : p[0];
                int32_t n = RMIN(RMAX(o + k, 0), maxv);
                if (wide) {
                    p[0] = (uint8_t)(n & 0xff);
                    p[1] = (uint8_t)(n >> 8);
                } else {
                    p[0] = (uint8_t)n;
                }
                moved += wt[c] * (float)(n - o);
            }
            se += (double)moved * moved;
        }
    }
    return se / ((double)scale * scale);
}

static double realize(const float *delta, AVFrame *f, uint32_t w, uint32_t h, const vlay *l,
                      float *err)
{
    if (l->rgb) {
        return realize_rgb(delta, f, w, h, l, err);
    }
    const int depth = l->depth;
    const float scale = (float)(1 << (depth - 8));
    const float maxv = (float)((1 << depth) - 1);
    int64_t se = 0;
    memset(err, 0, (size_t)w * sizeof *err);
    for (uint32_t y = 0; y < h; y++) {
        uint8_t *row = f->data[0] + (ptrdiff_t)y * f->linesize[0];
        const float *d = delta + (size_t)y * w;
        for (uint32_t x = 0; x < w; x += REALIZE_CHUNK) {
            uint32_t n = w - x < REALIZE_CHUNK ? w - x : REALIZE_CHUNK;
            se += depth == 8 ? realize_run8(row + x, d + x, err + x, n, maxv)
                             : realize_run16((uint16_t *)row + x, d + x, err + x, n, scale, maxv);
        }
    }
    return (double)se / ((double)scale * scale);
}

/* One slot's work, on a worker thread: never touches libav's codecs nor
 * the context (the caller's mark gets its own). */
static void mark_slot(vt *t, slot *s)
{
    luma_of(s->in, t->in.w, t->in.h, &s->lay, s->y);
    s->vf.y = s->y;
    s->vf.weight = NULL;
    if (s->lay.alpha && s->wt != NULL) {
        alpha_of(s->in, t->in.w, t->in.h, &s->lay, s->wt);
        s->vf.weight = s->wt;
    }
    s->st = t->mark(t->opaque, &s->vf, s->delta);
    if (s->st != CT_OK) {
        return;
    }
    /* Into our own buffer: the decoder may still hold the frame as a
     * reference, and the encoder may still hold our last one. */
    if (av_frame_make_writable(s->out) < 0 || av_frame_copy(s->out, s->in) < 0 ||
        av_frame_copy_props(s->out, s->in) < 0) {
        s->st = CT_ERR_NOMEM;
        return;
    }
    av_frame_unref(s->in);
    s->se = realize(s->delta, s->out, t->in.w, t->in.h, &s->lay, s->err);
    s->nse = (double)t->in.w * t->in.h;
    if (s->vf.weight != NULL) {
        /* As for still cels: the change as seen over mid-grey (alpha
         * times the change), over the pixels that are seen at all. */
        luma_of(s->out, t->in.w, t->in.h, &s->lay, s->delta);
        double se = 0, n = 0;
        for (size_t i = 0; i < (size_t)t->in.w * t->in.h; i++) {
            double d = s->vf.weight[i] * ((double)s->delta[i] - s->y[i]);
            se += d * d;
            n += s->vf.weight[i] > 0.0f ? 1.0 : 0.0;
        }
        s->se = se;
        s->nse = n;
    }
}

static void *worker(void *arg)
{
    pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        slot *s = NULL;
        for (unsigned k = 0; k < p->used && s == NULL; k++) {
            slot *c = &p->s[(p->head + k) % p->n];
            if (c->state == SLOT_QUEUED) {
                s = c; /* the oldest first: the encoder waits for it */
            }
        }
        if (s == NULL) {
            if (p->quit) {
                break;
            }
            pthread_cond_wait(&p->work, &p->mu);
            continue;
        }
        s->state = SLOT_BUSY;
        pthread_mutex_unlock(&p->mu);
        mark_slot(p->t, s);
        pthread_mutex_lock(&p->mu);
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static unsigned mark_threads(const med_video_opts *o)
{
    long n = o != NULL && o->threads > 0 ? o->threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) {
        n = 1;
    }
    if (o == NULL || o->threads <= 0) {
        n = n > 4 ? 4 : n; /* the codecs want the other cores */
    }
    return n > MED_MAX_MARK_THREADS ? MED_MAX_MARK_THREADS : (unsigned)n;
}

static ct_status pool_start(vt *t, unsigned nth)
{
    pool *p = &t->pl;
    ct_ctx *ctx = t->ctx;
    p->t = t;
    p->n = nth + 2; /* one being encoded, one being filled, one per worker */
    p->s = ct_calloc(ctx, p->n, sizeof *p->s);
    if (p->s == NULL) {
        return CT_ERR_NOMEM;
    }
    size_t npix = (size_t)t->in.w * t->in.h;
    vlay lay;
    bool alpha = vlay_of(av_pix_fmt_desc_get(t->src_fmt), &lay) && lay.alpha;
    for (unsigned i = 0; i < p->n; i++) {
        slot *s = &p->s[i];
        s->in = av_frame_alloc();
        s->out = av_frame_alloc();
        s->y = ct_mallocarray(ctx, npix, sizeof *s->y);
        s->delta = ct_mallocarray(ctx, npix, sizeof *s->delta);
        s->wt = alpha ? ct_mallocarray(ctx, npix, sizeof *s->wt) : NULL;
        s->err = ct_mallocarray(ctx, t->in.w, sizeof *s->err);
        if (s->in == NULL || s->out == NULL || s->y == NULL || s->delta == NULL ||
            s->err == NULL || (alpha && s->wt == NULL)) {
            return ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory", t->in.name);
        }
        s->out->format = t->src_fmt;
        s->out->width = (int)t->in.w;
        s->out->height = (int)t->in.h;
        if (av_frame_get_buffer(s->out, 0) < 0) {
            return ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory", t->in.name);
        }
    }
    p->mu_ok = pthread_mutex_init(&p->mu, NULL) == 0;
    p->work_ok = p->mu_ok && pthread_cond_init(&p->work, NULL) == 0;
    p->done_ok = p->work_ok && pthread_cond_init(&p->done, NULL) == 0;
    if (!p->done_ok) {
        return ct_fail(ctx, CT_ERR_NOMEM, "%s: cannot start the marking threads", t->in.name);
    }
    for (unsigned i = 0; i < nth; i++) {
        if (pthread_create(&p->th[i], NULL, worker, p) != 0) {
            if (i == 0) {
                return ct_fail(ctx, CT_ERR_NOMEM, "%s: cannot start the marking threads",
                               t->in.name);
            }
            break; /* fewer workers do the same work */
        }
        p->nth++;
    }
    return CT_OK;
}

/* Stop the workers (they finish the slot in hand) and free the slots. */
static void pool_stop(pool *p)
{
    if (p->done_ok) {
        pthread_mutex_lock(&p->mu);
        p->quit = true;
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->mu);
    }
    for (unsigned i = 0; i < p->nth; i++) {
        pthread_join(p->th[i], NULL);
    }
    p->nth = 0;
    if (p->done_ok) {
        pthread_cond_destroy(&p->done);
    }
    if (p->work_ok) {
        pthread_cond_destroy(&p->work);
    }
    if (p->mu_ok) {
        pthread_mutex_destroy(&p->mu);
    }
    p->mu_ok = p->work_ok = p->done_ok = false;
    for (unsigned i = 0; p->s != NULL && i < p->n; i++) {
        av_frame_free(&p->s[i].in);
        av_frame_free(&p->s[i].out);
        free(p->s[i].y);
        free(p->s[i].delta);
        free(p->s[i].wt);
        free(p->s[i].err);
    }
    free(p->s);
    p->s = NULL;
}

static ct_status encode_frame(vt *t, AVFrame *f)
{
    int ret = avcodec_send_frame(t->enc, f);
    if (ret < 0) {
        return av_err(t->ctx, CT_ERR_FORMAT, t->out_name, "the video encoder refused a frame",
                      ret);
    }
    return write_packets(t);
}

/* Encode the oldest slot in flight, waiting for its mark if `wait`;
 * *did says whether one was encoded. */
static ct_status finish_oldest(vt *t, bool wait, bool *did)
{
    pool *p = &t->pl;
    *did = false;
    pthread_mutex_lock(&p->mu);
    slot *s = p->used > 0 ? &p->s[p->head] : NULL;
    while (wait && s != NULL && s->state != SLOT_DONE) {
        pthread_cond_wait(&p->done, &p->mu);
    }
    bool ready = s != NULL && s->state == SLOT_DONE;
    pthread_mutex_unlock(&p->mu);
    if (!ready) {
        return CT_OK;
    }
    /* Done slots belong to this thread until set free. */
    if (s->st != CT_OK) {
        if (s->st == CT_ERR_NOMEM) {
            return ct_fail(t->ctx, CT_ERR_NOMEM, "%s: out of memory marking frame %llu",
                           t->in.name, (unsigned long long)s->vf.index);
        }
        return ct_fail(t->ctx, s->st, "%s: marking frame %llu failed", t->in.name,
                       (unsigned long long)s->vf.index);
    }
    AVFrame *src = s->out;
    if (t->sws != NULL) {
        int ret = sws_scale(t->sws, (const uint8_t *const *)s->out->data, s->out->linesize, 0,
                            s->out->height, t->cvt->data, t->cvt->linesize);
        if (ret != s->out->height) {
            return ct_fail(t->ctx, CT_ERR_FORMAT, "%s: pixel format conversion failed",
                           t->in.name);
        }
        if (av_frame_copy_props(t->cvt, s->out) < 0) {
            return ct_fail(t->ctx, CT_ERR_NOMEM, "%s: out of memory", t->in.name);
        }
        src = t->cvt;
    }
    src->pts = s->pts;
    src->pict_type = AV_PICTURE_TYPE_NONE;
    ct_status st = encode_frame(t, src);
    if (st != CT_OK) {
        return st;
    }
    t->se += s->se;
    t->nse += s->nse;
    t->frames++;
    pthread_mutex_lock(&p->mu);
    s->state = SLOT_FREE;
    p->head = (p->head + 1) % p->n;
    p->used--;
    pthread_mutex_unlock(&p->mu);
    *did = true;
    if (t->opts != NULL && t->opts->progress != NULL) {
        double now = now_s();
        if (now - t->t_last_progress > 0.2) {
            t->t_last_progress = now;
            t->opts->progress(t->opts->progress_opaque, t->frames, t->total, now - t->t_start);
        }
    }
    return CT_OK;
}

/* Encode every slot in flight, in order. */
static ct_status finish_all(vt *t)
{
    bool did = true;
    ct_status st = CT_OK;
    while (st == CT_OK && did) {
        st = finish_oldest(t, true, &did);
    }
    return st;
}

/* Hand decoded frame f (its reference is moved) to a slot. */
static ct_status submit_frame(vt *t, AVFrame *f)
{
    pool *p = &t->pl;
    ct_status st = vin_check(t->ctx, &t->in, f);
    bool did = true;
    if (st != CT_OK) {
        return st;
    }
    if (f->format != t->src_fmt) {
        return ct_fail(t->ctx, CT_ERR_FORMAT, "%s: the pixel format changes inside the stream",
                       t->in.name);
    }
    /* Encode what is ready; wait for the oldest only when every slot is
     * taken (the bound on memory). */
    while (st == CT_OK && did) {
        st = finish_oldest(t, false, &did);
    }
    while (st == CT_OK && p->used == p->n) {
        st = finish_oldest(t, true, &did);
    }
    if (st != CT_OK) {
        return st;
    }
    int64_t pts = f->best_effort_timestamp;
    /* Encoders need strictly increasing timestamps; a broken or missing
     * one takes the next tick. */
    if (pts == AV_NOPTS_VALUE || (t->submitted > 0 && pts <= t->last_pts)) {
        pts = t->submitted > 0 ? t->last_pts + 1 : 0;
    }
    t->last_pts = pts;
    slot *s = &p->s[(p->head + p->used) % p->n];
    av_frame_unref(s->in);
    av_frame_move_ref(s->in, f);
    s->pts = pts;
    s->lay = t->in.lay;
    s->se = 0;
    s->st = CT_OK;
    /* Here, in decode order: each frame's pan sums the shifts before it. */
    double dx, dy;
    const uint8_t *mp;
    ptrdiff_t mstride;
    int mdepth;
    motion_plane(&t->in, s->in, &mp, &mstride, &mdepth);
    med_motion_push(t->mo, mp, mstride, mdepth, &dx, &dy);
    t->pan_x += dx;
    t->pan_y += dy;
    s->vf = (med_vframe){.w = t->in.w,
                         .h = t->in.h,
                         .index = t->submitted,
                         .time = vin_time(&t->in, pts),
                         .duration = t->in.duration,
                         .fps = t->in.fps,
                         .key = vin_is_key(s->in),
                         .pan_x = t->pan_x,
                         .pan_y = t->pan_y};
    t->submitted++;
    pthread_mutex_lock(&p->mu);
    s->state = SLOT_QUEUED;
    p->used++;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    return CT_OK;
}

static ct_status decode_some(vt *t, const AVPacket *pkt)
{
    int ret = avcodec_send_packet(t->in.dec, pkt);
    if (ret < 0 && ret != AVERROR_EOF) {
        return av_err(t->ctx, CT_ERR_FORMAT, t->in.name, "corrupt video data", ret);
    }
    for (;;) {
        ret = avcodec_receive_frame(t->in.dec, t->frame);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) {
            return CT_OK;
        }
        if (ret < 0) {
            return av_err(t->ctx, CT_ERR_FORMAT, t->in.name, "corrupt video data", ret);
        }
        ct_status st = submit_frame(t, t->frame);
        av_frame_unref(t->frame);
        if (st != CT_OK) {
            return st;
        }
    }
}

static bool has_option(const AVCodecContext *enc, const char *name)
{
    return enc->priv_data != NULL &&
           av_opt_find(enc->priv_data, name, NULL, 0, AV_OPT_SEARCH_CHILDREN) != NULL;
}

static ct_status open_encoder(vt *t, const med_video_opts *o)
{
    ct_ctx *ctx = t->ctx;
    const char *name = o != NULL && o->codec != NULL ? o->codec : MED_DEFAULT_CODEC;
    const AVCodec *codec = avcodec_find_encoder_by_name(name);
    /* H.264 by default, unless the container cannot hold it (WebM): then
     * the container's own default encoder. */
    if ((o == NULL || o->codec == NULL) &&
        avformat_query_codec(t->oc->oformat, AV_CODEC_ID_H264, FF_COMPLIANCE_NORMAL) != 1) {
        const AVCodec *alt = avcodec_find_encoder(t->oc->oformat->video_codec);
        if (alt != NULL) {
            codec = alt;
            name = alt->name;
        }
    }
    AVDictionary *dict = NULL;
    ct_status st = CT_OK;
    int ret;
    char buf[32];

    if (codec == NULL || codec->type != AVMEDIA_TYPE_VIDEO) {
        return ct_fail(ctx, CT_ERR_MISUSE, "no video encoder named '%s' in this FFmpeg", name);
    }
    t->enc = avcodec_alloc_context3(codec);
    if (t->enc == NULL) {
        return ct_fail(ctx, CT_ERR_NOMEM, "out of memory");
    }
    const AVCodecContext *dec = t->in.dec;
    AVCodecContext *enc = t->enc;
    enc->width = dec->width;
    enc->height = dec->height;
    enc->sample_aspect_ratio = dec->sample_aspect_ratio;
    enc->color_range = dec->color_range;
    enc->color_primaries = dec->color_primaries;
    enc->color_trc = dec->color_trc;
    enc->colorspace = dec->colorspace;
    enc->chroma_sample_location = dec->chroma_sample_location;
    enc->field_order = dec->field_order;
    enc->time_base = t->in.vst->time_base;
    enc->framerate = av_guess_frame_rate(t->in.ic, t->in.vst, NULL);
    enc->thread_count = 0;
    /* The probe decodes no picture of a cut-off or broken stream: its
     * format stays unknown, and libswscale aborts the process when asked
     * to convert from it. */
    if (dec->pix_fmt == AV_PIX_FMT_NONE) {
        return ct_fail(ctx, CT_ERR_FORMAT,
                       "%s: no video frame could be decoded (truncated or corrupt file?)",
                       t->in.name);
    }
    const AVPixFmtDescriptor *wd = av_pix_fmt_desc_get(dec->pix_fmt);
    vlay lay;
    if (!vlay_of(wd, &lay)) {
        return ct_fail(ctx, CT_ERR_FORMAT, "%s: pixel format %s is not supported for video",
                       t->in.name, av_get_pix_fmt_name(dec->pix_fmt));
    }
    /* Keep the pixel format when the encoder takes it, else the closest
     * one it has (converted after marking). */
    enum AVPixelFormat want = dec->pix_fmt;
    t->src_fmt = want;
    enc->pix_fmt = want;
    if (codec->pix_fmts != NULL) {
        bool found = false;
        for (const enum AVPixelFormat *p = codec->pix_fmts; *p != AV_PIX_FMT_NONE; p++) {
            found = found || *p == want;
        }
        if (!found) {
            /* has_alpha: an encoder that can keep alpha (ProRes 4444 from a
             * 12-bit decode) is given a format with it. */
            int has_alpha = (wd->flags & AV_PIX_FMT_FLAG_ALPHA) ? 1 : 0;
            enc->pix_fmt =
                avcodec_find_best_pix_fmt_of_list(codec->pix_fmts, want, has_alpha, NULL);
        }
    }
    if (t->oc->oformat->flags & AVFMT_GLOBALHEADER) {
        enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    }
    bool crf_asked = o != NULL && o->crf > 0;
    bool preset_asked = o != NULL && o->preset != NULL;
    if (o != NULL && o->bitrate > 0) {
        enc->bit_rate = o->bitrate;
    } else if (crf_asked || has_option(enc, "crf")) {
        if (!has_option(enc, "crf")) {
            st = ct_fail(ctx, CT_ERR_MISUSE, "encoder '%s' has no CRF setting; use a bitrate",
                         name);
            goto done;
        }
        snprintf(buf, sizeof buf, "%d", crf_asked ? o->crf : MED_DEFAULT_CRF);
        av_dict_set(&dict, "crf", buf, 0);
        enc->bit_rate = 0; /* libvpx: constant quality needs b = 0 */
    }
    if (has_option(enc, "preset") && strncmp(name, "libx26", 6) == 0) {
        av_dict_set(&dict, "preset", preset_asked ? o->preset : MED_DEFAULT_PRESET, 0);
    } else if (preset_asked) {
        st = ct_fail(ctx, CT_ERR_MISUSE, "encoder '%s' has no x264-style presets", name);
        goto done;
    }
    if (strcmp(name, "libvpx-vp9") == 0 && !preset_asked) {
        /* libvpx's defaults run at a fraction of x264's medium speed. */
        av_dict_set(&dict, "deadline", "good", 0);
        av_dict_set(&dict, "cpu-used", "4", 0);
        av_dict_set(&dict, "row-mt", "1", 0);
    }
    ret = avcodec_open2(enc, codec, &dict);
    if (ret < 0) {
        st = av_err(ctx, CT_ERR_MISUSE, t->out_name, "cannot start the video encoder", ret);
        goto done;
    }
    const AVPixFmtDescriptor *ed = av_pix_fmt_desc_get(enc->pix_fmt);
    t->alpha_dropped = (wd->flags & AV_PIX_FMT_FLAG_ALPHA) && ed != NULL &&
                       !(ed->flags & AV_PIX_FMT_FLAG_ALPHA);
    if (enc->pix_fmt != want) {
        t->sws = sws_getContext(enc->width, enc->height, want, enc->width, enc->height,
                                enc->pix_fmt, SWS_BICUBIC | SWS_ACCURATE_RND, NULL, NULL, NULL);
        t->cvt = av_frame_alloc();
        if (t->sws == NULL || t->cvt == NULL) {
            st = ct_fail(ctx, CT_ERR_FORMAT, "%s: cannot convert %s to %s for %s", t->in.name,
                         av_get_pix_fmt_name(want), av_get_pix_fmt_name(enc->pix_fmt), name);
            goto done;
        }
        t->cvt->format = enc->pix_fmt;
        t->cvt->width = enc->width;
        t->cvt->height = enc->height;
        ret = av_frame_get_buffer(t->cvt, 0);
        if (ret < 0) {
            st = av_err(ctx, CT_ERR_NOMEM, t->in.name, "conversion buffer", ret);
            goto done;
        }
    }
done:
    av_dict_free(&dict);
    return st;
}

static ct_status open_output(vt *t, const char *output, const char *format_name,
                             const med_video_opts *o)
{
    ct_ctx *ctx = t->ctx;
    AVFormatContext *ic = t->in.ic;
    int ret;
    ct_status st;

    ret = avformat_alloc_output_context2(&t->oc, NULL, NULL, format_name);
    if (ret < 0 || t->oc == NULL) {
        return ct_fail(ctx, CT_ERR_MISUSE, "%s: no video container for this file extension",
                       format_name);
    }
    t->map = ct_mallocarray(ctx, ic->nb_streams, sizeof *t->map);
    if (t->map == NULL) {
        return CT_ERR_NOMEM;
    }
    st = open_encoder(t, o);
    if (st != CT_OK) {
        return st;
    }
    for (unsigned i = 0; i < ic->nb_streams; i++) {
        AVStream *is = ic->streams[i];
        t->map[i] = -1;
        AVStream *os = avformat_new_stream(t->oc, NULL);
        if (os == NULL) {
            return ct_fail(ctx, CT_ERR_NOMEM, "out of memory");
        }
        t->map[i] = os->index;
        if ((int)i == t->in.vidx) {
            t->ovidx = os->index;
            ret = avcodec_parameters_from_context(os->codecpar, t->enc);
            os->time_base = t->enc->time_base;
            os->avg_frame_rate = is->avg_frame_rate;
            os->r_frame_rate = is->r_frame_rate;
        } else {
            ret = avcodec_parameters_copy(os->codecpar, is->codecpar);
            os->codecpar->codec_tag = 0; /* let the muxer choose its own tag */
            os->time_base = is->time_base;
            os->avg_frame_rate = is->avg_frame_rate;
            os->r_frame_rate = is->r_frame_rate;
            if (avformat_query_codec(t->oc->oformat, is->codecpar->codec_id,
                                     FF_COMPLIANCE_NORMAL) == 0) {
                return ct_fail(ctx, CT_ERR_FORMAT, "%s: stream %u (%s) cannot be copied into "
                               "this container; choose another output extension", t->in.name,
                               i, avcodec_get_name(is->codecpar->codec_id));
            }
        }
        if (ret < 0) {
            return av_err(ctx, CT_ERR_FORMAT, t->in.name, "cannot set up an output stream", ret);
        }
        os->disposition = is->disposition;
        os->sample_aspect_ratio = is->sample_aspect_ratio;
        av_dict_copy(&os->metadata, is->metadata, 0);
        if ((int)i == t->in.vidx) {
            /* The old encoder's name would now be a lie. */
            av_dict_set(&os->metadata, "encoder", NULL, 0);
        }
    }
    av_dict_copy(&t->oc->metadata, ic->metadata, 0);
    ret = avio_open(&t->oc->pb, output, AVIO_FLAG_WRITE);
    if (ret < 0) {
        return av_err(ctx, CT_ERR_IO, output, "cannot write", ret);
    }
    ret = avformat_write_header(t->oc, NULL);
    if (ret < 0) {
        return av_err(ctx, CT_ERR_FORMAT, format_name, "cannot write the container header",
                      ret);
    }
    return CT_OK;
}

ct_status med_video_transcode(ct_ctx *ctx, const char *input, const char *output,
                              const char *format_name, const med_video_opts *opts,
                              med_mark_fn mark, void *opaque, med_video_info *info)
{
    vt t;
    ct_status st;
    int ret;
    bool header = false;

    memset(&t, 0, sizeof t);
    t.ctx = ctx;
    t.out_name = format_name;
    t.mark = mark;
    t.opaque = opaque;
    t.opts = opts;
    t.t_start = now_s();
    if (info != NULL) {
        memset(info, 0, sizeof *info);
    }
    st = vin_open(ctx, input, true, &t.in);
    if (st != CT_OK) {
        goto done;
    }
    t.pkt = av_packet_alloc();
    t.frame = av_frame_alloc();
    if (t.pkt == NULL || t.frame == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory", input);
        goto done;
    }
    st = open_output(&t, output, format_name, opts);
    if (st != CT_OK) {
        goto done;
    }
    header = true;
    st = med_motion_new(ctx, t.in.w, t.in.h, &t.mo);
    if (st == CT_OK) {
        st = pool_start(&t, mark_threads(opts));
    }
    if (st != CT_OK) {
        goto done;
    }
    AVRational fr = av_guess_frame_rate(t.in.ic, t.in.vst, NULL);
    if (t.in.vst->nb_frames > 0) {
        t.total = (uint64_t)t.in.vst->nb_frames;
    } else if (t.in.duration > 0 && fr.num > 0 && fr.den > 0) {
        t.total = (uint64_t)(t.in.duration * av_q2d(fr) + 0.5);
    }
    for (;;) {
        ret = av_read_frame(t.in.ic, t.pkt);
        if (ret == AVERROR_EOF) {
            break;
        }
        if (ret < 0) {
            st = av_err(ctx, CT_ERR_FORMAT, input, "read error: truncated or damaged", ret);
            goto done;
        }
        int si = t.pkt->stream_index;
        if (si == t.in.vidx) {
            st = decode_some(&t, t.pkt);
            av_packet_unref(t.pkt);
            if (st != CT_OK) {
                goto done;
            }
            continue;
        }
        if (si < 0 || (unsigned)si >= t.in.ic->nb_streams || t.map[si] < 0) {
            av_packet_unref(t.pkt);
            continue;
        }
        /* Copied as is: only the timestamps change units. */
        av_packet_rescale_ts(t.pkt, t.in.ic->streams[si]->time_base,
                             t.oc->streams[t.map[si]]->time_base);
        t.pkt->stream_index = t.map[si];
        t.pkt->pos = -1;
        ret = av_interleaved_write_frame(t.oc, t.pkt);
        av_packet_unref(t.pkt);
        if (ret < 0) {
            st = av_err(ctx, CT_ERR_IO, output, "cannot write", ret);
            goto done;
        }
    }
    st = decode_some(&t, NULL); /* drain the decoder */
    if (st == CT_OK) {
        st = finish_all(&t);
    }
    if (st != CT_OK) {
        goto done;
    }
    if (t.frames == 0) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: no video frame could be decoded", input);
        goto done;
    }
    st = encode_frame(&t, NULL); /* drain the encoder */
    if (st != CT_OK) {
        goto done;
    }
    ret = av_write_trailer(t.oc);
    if (ret < 0) {
        st = av_err(ctx, CT_ERR_IO, output, "cannot finish the file", ret);
        goto done;
    }
    header = false;
    ret = avio_closep(&t.oc->pb);
    if (ret < 0) {
        st = av_err(ctx, CT_ERR_IO, output, "cannot write", ret);
        goto done;
    }
    if (opts != NULL && opts->progress != NULL) {
        opts->progress(opts->progress_opaque, t.frames, t.frames, now_s() - t.t_start);
    }
    if (info != NULL) {
        info->width = t.in.w;
        info->height = t.in.h;
        info->frames = t.frames;
        info->frames_declared = t.in.vst->nb_frames > 0 ? (uint64_t)t.in.vst->nb_frames : 0;
        info->alpha_dropped = t.alpha_dropped;
        info->duration = t.in.duration;
        info->fps = fr.num > 0 && fr.den > 0 ? av_q2d(fr) : 0;
        double mse = t.nse > 0 ? t.se / t.nse : 0.0;
        info->psnr_y = mse > 0 ? 10.0 * log10(255.0 * 255.0 / mse) : 99.0;
        snprintf(info->pix_fmt, sizeof info->pix_fmt, "%s",
                 av_get_pix_fmt_name(t.in.dec->pix_fmt) ? av_get_pix_fmt_name(t.in.dec->pix_fmt)
                                                        : "?");
        snprintf(info->encoder, sizeof info->encoder, "%s", t.enc->codec->name);
    }
done:
    pool_stop(&t.pl);
    med_motion_free(t.mo);
    if (header && t.oc != NULL && t.oc->pb != NULL) {
        (void)av_write_trailer(t.oc); /* lets the muxer free what it holds */
    }
    if (t.oc != NULL) {
        avio_closep(&t.oc->pb);
        avformat_free_context(t.oc);
    }
    avcodec_free_context(&t.enc);
    sws_freeContext(t.sws);
    av_frame_free(&t.cvt);
    av_frame_free(&t.frame);
    av_packet_free(&t.pkt);
    free(t.map);
    vin_close(&t.in);
    return st;
}

/* ---- scan (verify) --------------------------------------------------------- */

typedef struct vs {
    ct_ctx *ctx;
    vin in;
    double max_seconds;
    unsigned stride;
    med_scan_fn fn;
    void *opaque;
    uint64_t decoded, given;
    double first, last;
    bool stop;
    int errors;
    med_motion *mo; /* every decoded frame's pan, as the embedder measures it */
    double pan_x, pan_y;
} vs;

static ct_status scan_frames(vs *s, AVFrame *f)
{
    for (;;) {
        int ret = avcodec_receive_frame(s->in.dec, f);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) {
            return CT_OK;
        }
        if (ret < 0) {
            s->errors++;
            return CT_OK; /* skip damaged data */
        }
        double tm = vin_time(&s->in, f->best_effort_timestamp);
        uint64_t k = s->decoded++;
        if (s->max_seconds > 0 && tm > s->max_seconds) {
            s->stop = true;
            av_frame_unref(f);
            return CT_OK;
        }
        ct_status st = vin_check(s->ctx, &s->in, f);
        if (st == CT_OK && s->mo == NULL) {
            st = med_motion_new(s->ctx, s->in.w, s->in.h, &s->mo);
        }
        if (st == CT_OK) {
            double dx, dy;
            const uint8_t *mp;
            ptrdiff_t mstride;
            int mdepth;
            motion_plane(&s->in, f, &mp, &mstride, &mdepth);
            med_motion_push(s->mo, mp, mstride, mdepth, &dx, &dy);
            s->pan_x += dx;
            s->pan_y += dy;
        }
        if (st == CT_OK && k % s->stride == 0) {
            luma_of(f, s->in.w, s->in.h, &s->in.lay, s->in.y);
            med_vframe vf = {.w = s->in.w,
                             .h = s->in.h,
                             .y = s->in.y,
                             .index = k,
                             .time = tm,
                             .duration = s->in.duration,
                             .fps = s->in.fps,
                             .key = vin_is_key(f),
                             .pan_x = s->pan_x,
                             .pan_y = s->pan_y};
            st = s->fn(s->opaque, &vf);
            if (st == CT_OK) {
                s->first = s->given == 0 ? tm : s->first;
                s->last = tm;
                s->given++;
            }
        }
        av_frame_unref(f);
        if (st != CT_OK) {
            return st;
        }
    }
}

ct_status med_video_scan(ct_ctx *ctx, const char *path, double max_seconds, unsigned stride,
                         med_scan_fn fn, void *opaque, med_video_info *info)
{
    vs s;
    ct_status st;
    AVPacket *pkt = NULL;
    AVFrame *f = NULL;
    int ret;

    memset(&s, 0, sizeof s);
    s.ctx = ctx;
    s.max_seconds = max_seconds;
    s.stride = stride == 0 ? 1 : stride;
    s.fn = fn;
    s.opaque = opaque;
    if (info != NULL) {
        memset(info, 0, sizeof *info);
    }
    st = vin_open(ctx, path, true, &s.in);
    if (st != CT_OK) {
        goto done;
    }
    pkt = av_packet_alloc();
    f = av_frame_alloc();
    if (pkt == NULL || f == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    while (!s.stop) {
        ret = av_read_frame(s.in.ic, pkt);
        if (ret < 0) {
            break; /* EOF, or the rest is damaged: use what decoded */
        }
        if (pkt->stream_index == s.in.vidx) {
            ret = avcodec_send_packet(s.in.dec, pkt);
            if (ret < 0 && ret != AVERROR(EAGAIN)) {
                s.errors++;
            }
            st = scan_frames(&s, f);
        }
        av_packet_unref(pkt);
        if (st != CT_OK) {
            goto done;
        }
    }
    if (!s.stop) {
        (void)avcodec_send_packet(s.in.dec, NULL);
        st = scan_frames(&s, f);
        if (st != CT_OK) {
            goto done;
        }
    }
    if (s.given == 0) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: no video frame could be decoded", path);
        goto done;
    }
    if (info != NULL) {
        AVRational fr = av_guess_frame_rate(s.in.ic, s.in.vst, NULL);
        info->width = s.in.w;
        info->height = s.in.h;
        info->frames = s.given;
        info->duration = s.in.duration;
        info->fps = fr.num > 0 && fr.den > 0 ? av_q2d(fr) : 0;
        info->first_time = s.first;
        info->last_time = s.last;
        const char *pf = av_get_pix_fmt_name(s.in.dec->pix_fmt);
        snprintf(info->pix_fmt, sizeof info->pix_fmt, "%s", pf != NULL ? pf : "?");
    }
done:
    av_frame_free(&f);
    av_packet_free(&pkt);
    med_motion_free(s.mo);
    vin_close(&s.in);
    return st;
}

/* media: every other still format (WebP, TIFF, BMP, GIF, ...) through
 * libavformat's image demuxers, libavcodec and libswscale. Read only: a
 * leak may arrive in any of these, but we only ever write PNG or JPEG.
 *
 * The bytes are already in memory; libavformat reads them through a custom
 * AVIOContext so files and med_read_mem share the path. Only image
 * demuxers are accepted, so a video or audio file is "not an image" here
 * (video has its own path). */
#include "media/med_int.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#define MED_AV_PROBE_MAX  (1 << 20) /* bytes shown to the probers */
#define MED_AV_MAX_PACKETS 4096     /* packets read looking for frame one */
#define MED_AV_IOBUF       65536

typedef struct av_src {
    const uint8_t *data;
    size_t size;
    size_t pos;
} av_src;

static int src_read(void *opaque, uint8_t *buf, int n)
{
    av_src *s = opaque;
    size_t left = s->size - s->pos;
    if (left == 0) {
        return AVERROR_EOF;
    }
    if (n < 0) {
        return AVERROR(EINVAL);
    }
    size_t k = (size_t)n < left ? (size_t)n : left;
    memcpy(buf, s->data + s->pos, k);
    s->pos += k;
    return (int)k;
}

static int64_t src_seek(void *opaque, int64_t off, int whence)
{
    av_src *s = opaque;
    int64_t base;

    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE:
        return s->size > INT64_MAX ? AVERROR(EINVAL) : (int64_t)s->size;
    case SEEK_SET:
        base = 0;
        break;
    case SEEK_CUR:
        base = (int64_t)s->pos;
        break;
    case SEEK_END:
        base = (int64_t)s->size;
        break;
    default:
        return AVERROR(EINVAL);
    }
    if ((off > 0 && base > INT64_MAX - off) || base + off < 0 ||
        (uint64_t)(base + off) > s->size) {
        return AVERROR(EINVAL);
    }
    s->pos = (size_t)(base + off);
    return (int64_t)s->pos;
}

/* libavformat's single-image demuxers are the "*_pipe" ones; gif and ico
 * have demuxers of their own. */
static bool is_image_demuxer(const AVInputFormat *f)
{
    static const char *const extra[] = {"gif", "ico", "apng", "image2"};
    const char *n = f->name;
    size_t len = strlen(n);

    if (len > 5 && strcmp(n + len - 5, "_pipe") == 0) {
        return true;
    }
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        if (strcmp(n, extra[i]) == 0) {
            return true;
        }
    }
    return false;
}

typedef struct av_rd {
    av_src src;
    uint8_t *probe;
    AVIOContext *avio;
    AVFormatContext *fc;
    AVCodecContext *dc;
    AVPacket *pkt;
    AVFrame *frame;
    struct SwsContext *sws;
    med_image *img;
} av_rd;

static ct_status av_fail(ct_ctx *ctx, const char *name, const char *what, int err)
{
    char buf[AV_ERROR_MAX_STRING_SIZE];
    if (err == AVERROR(ENOMEM)) {
        return ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory decoding the image", name);
    }
    av_strerror(err, buf, sizeof buf);
    return ct_fail(ctx, CT_ERR_FORMAT, "%s: %s (%s)", name, what, buf);
}

/* Get the first decoded frame into rd->frame. */
static ct_status first_frame(ct_ctx *ctx, const char *name, av_rd *rd, int idx)
{
    int ret;
    char what[120];

    /* The decoder's own max_pixels refusal is an EINVAL like any corrupt
     * header, so the message has to allow for both. */
    snprintf(what, sizeof what, "corrupt image, or over the limit of %llu pixels",
             (unsigned long long)ctx->max_pixels);

    for (int n = 0; n < MED_AV_MAX_PACKETS; n++) {
        ret = av_read_frame(rd->fc, rd->pkt);
        if (ret == AVERROR_EOF) {
            break;
        }
        if (ret < 0) {
            return av_fail(ctx, name, "cannot read the image", ret);
        }
        if (rd->pkt->stream_index == idx) {
            ret = avcodec_send_packet(rd->dc, rd->pkt);
            av_packet_unref(rd->pkt);
            if (ret < 0 && ret != AVERROR(EAGAIN)) {
                return av_fail(ctx, name, what, ret);
            }
            ret = avcodec_receive_frame(rd->dc, rd->frame);
            if (ret == 0) {
                return CT_OK;
            }
            if (ret != AVERROR(EAGAIN)) {
                return av_fail(ctx, name, what, ret);
            }
        } else {
            av_packet_unref(rd->pkt);
        }
    }
    ret = avcodec_send_packet(rd->dc, NULL); /* drain */
    if (ret < 0 && ret != AVERROR_EOF) {
        return av_fail(ctx, name, what, ret);
    }
    ret = avcodec_receive_frame(rd->dc, rd->frame);
    if (ret != 0) {
        return av_fail(ctx, name, "image has no picture", ret);
    }
    return CT_OK;
}

ct_status med_av_read(ct_ctx *ctx, const uint8_t *data, size_t size, const char *name,
                      med_image **out)
{
    ct_status st = CT_OK;
    av_rd rd;
    uint8_t *iobuf = NULL;
    int ret;

    *out = NULL;
    memset(&rd, 0, sizeof rd);
    rd.src.data = data;
    rd.src.size = size;

    /* Probe on a padded copy (libavformat reads past the end otherwise);
     * no file name, so the extension cannot vote. */
    const size_t plen = size < MED_AV_PROBE_MAX ? size : MED_AV_PROBE_MAX;
    rd.probe = av_mallocz(plen + AVPROBE_PADDING_SIZE);
    if (rd.probe == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory", name);
        goto done;
    }
    memcpy(rd.probe, data, plen);
    AVProbeData pd = {.filename = "", .buf = rd.probe, .buf_size = (int)plen, .mime_type = NULL};
    int score = 0;
    const AVInputFormat *fmt = av_probe_input_format3(&pd, 1, &score);
    if (fmt == NULL || !is_image_demuxer(fmt)) {
        goto done; /* not an image: *out stays NULL, caller words it */
    }

    iobuf = av_malloc(MED_AV_IOBUF);
    if (iobuf == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory", name);
        goto done;
    }
    rd.avio = avio_alloc_context(iobuf, MED_AV_IOBUF, 0, &rd.src, src_read, NULL, src_seek);
    if (rd.avio == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory", name);
        goto done;
    }
    iobuf = NULL; /* the AVIOContext owns it now */
    rd.fc = avformat_alloc_context();
    if (rd.fc == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory", name);
        goto done;
    }
    rd.fc->pb = rd.avio;
    rd.fc->flags |= AVFMT_FLAG_CUSTOM_IO;
    ret = avformat_open_input(&rd.fc, "", fmt, NULL);
    if (ret < 0) {
        /* avformat_open_input frees fc on failure. */
        st = av_fail(ctx, name, "cannot open the image", ret);
        goto done;
    }
    int idx = av_find_best_stream(rd.fc, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    if (idx < 0) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: not an image celtrace can read", name);
        goto done;
    }
    const AVCodecParameters *par = rd.fc->streams[idx]->codecpar;
    if (par->width > 0 && par->height > 0) {
        size_t bytes;
        st = med_check_size(ctx, name, (uint64_t)par->width, (uint64_t)par->height, 4, 8, &bytes);
        if (st != CT_OK) {
            goto done;
        }
    }
    const AVCodec *codec = avcodec_find_decoder(par->codec_id);
    if (codec == NULL) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: no decoder for this image format", name);
        goto done;
    }
    rd.dc = avcodec_alloc_context3(codec);
    rd.pkt = av_packet_alloc();
    rd.frame = av_frame_alloc();
    if (rd.dc == NULL || rd.pkt == NULL || rd.frame == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "%s: out of memory", name);
        goto done;
    }
    ret = avcodec_parameters_to_context(rd.dc, par);
    if (ret < 0) {
        st = av_fail(ctx, name, "bad codec parameters", ret);
        goto done;
    }
    /* The decoder refuses oversized pictures itself (av_image_check_size2)
     * before it allocates them. */
    rd.dc->max_pixels = ctx->max_pixels > INT64_MAX ? INT64_MAX : (int64_t)ctx->max_pixels;
    rd.dc->thread_count = 1;
    ret = avcodec_open2(rd.dc, codec, NULL);
    if (ret < 0) {
        st = av_fail(ctx, name, "cannot start the decoder", ret);
        goto done;
    }
    st = first_frame(ctx, name, &rd, idx);
    if (st != CT_OK) {
        goto done;
    }

    const AVFrame *f = rd.frame;
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get((enum AVPixelFormat)f->format);
    if (desc == NULL || f->width <= 0 || f->height <= 0) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: decoder gave no usable picture", name);
        goto done;
    }
    const bool alpha = (desc->flags & AV_PIX_FMT_FLAG_ALPHA) != 0;
    const bool gray =
        (desc->flags & (AV_PIX_FMT_FLAG_RGB | AV_PIX_FMT_FLAG_PAL)) == 0 && desc->nb_components <= 2;
    unsigned ch;
    enum AVPixelFormat dst_fmt;
    if (gray) {
        ch = alpha ? 2 : 1;
        dst_fmt = alpha ? AV_PIX_FMT_YA8 : AV_PIX_FMT_GRAY8;
    } else {
        ch = alpha ? 4 : 3;
        dst_fmt = alpha ? AV_PIX_FMT_RGBA : AV_PIX_FMT_RGB24;
    }
    size_t bytes;
    st = med_check_size(ctx, name, (uint64_t)f->width, (uint64_t)f->height, ch, 8, &bytes);
    if (st != CT_OK) {
        goto done;
    }
    size_t stride;
    if (!ct_mul(&stride, (size_t)f->width, ch) || stride > INT_MAX) {
        st = ct_fail(ctx, CT_ERR_LIMIT, "%s: image rows are too wide", name);
        goto done;
    }
    st = med_alloc(ctx, MED_KIND_OTHER, &rd.img);
    if (st != CT_OK) {
        goto done;
    }
    rd.img->pix = ct_malloc(ctx, bytes);
    if (rd.img->pix == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    rd.img->w = (uint32_t)f->width;
    rd.img->h = (uint32_t)f->height;
    rd.img->channels = ch;
    rd.img->depth = 8;
    rd.sws = sws_getContext(f->width, f->height, (enum AVPixelFormat)f->format, f->width,
                            f->height, dst_fmt,
                            SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, NULL, NULL,
                            NULL);
    if (rd.sws == NULL) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: cannot convert this pixel format (%s)", name,
                     desc->name);
        goto done;
    }
    if (f->color_range == AVCOL_RANGE_JPEG && (desc->flags & AV_PIX_FMT_FLAG_RGB) == 0) {
        int *inv, *tab, src_range, dst_range, bri, con, sat;
        if (sws_getColorspaceDetails(rd.sws, &inv, &src_range, &tab, &dst_range, &bri, &con,
                                     &sat) >= 0) {
            (void)sws_setColorspaceDetails(rd.sws, inv, 1, tab, dst_range, bri, con, sat);
        }
    }
    uint8_t *dst[4] = {rd.img->pix, NULL, NULL, NULL};
    int dst_stride[4] = {(int)stride, 0, 0, 0};
    ret = sws_scale(rd.sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst,
                    dst_stride);
    if (ret != f->height) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: cannot convert the picture", name);
        goto done;
    }
    *out = rd.img;
    rd.img = NULL;
done:
    sws_freeContext(rd.sws);
    av_frame_free(&rd.frame);
    av_packet_free(&rd.pkt);
    avcodec_free_context(&rd.dc);
    avformat_close_input(&rd.fc);
    if (rd.fc != NULL) {
        avformat_free_context(rd.fc);
    }
    if (rd.avio != NULL) {
        av_freep(&rd.avio->buffer);
        avio_context_free(&rd.avio);
    }
    av_free(iobuf);
    av_free(rd.probe);
    med_image_free(rd.img);
    return st;
}

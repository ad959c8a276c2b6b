/* api: video files and frame sequences. The same keys, tile and payload
 * as still images (api.c): media decodes and re-encodes, this file marks
 * each frame's luma through media's per-frame callback, and on the way back
 * averages frames before detection.
 *
 * The small file helpers (temporary names, record fields, the list of
 * every vendor key) repeat api.c's static ones; they belong in a shared
 * internal header once the ledger work on api.c has landed. */
/* strverscmp */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "core/core.h"
#include "keys/keys.h"
#include "ledger/ledger.h"
#include "media/media.h"
#include "verify/vfy.h"
#include "watermark/wm.h"
#include "api/api_int.h"

/* Sequences have no clock: times and --max-seconds count frames at this
 * rate (the animation default). */
#define SEQ_FPS 24.0
/* Every this many frames the embed also measures SSIM (it costs about as
 * much as marking the frame). */
#define SSIM_EVERY 48

/* ---- helpers (see the note at the top) ------------------------------------ */

/* ---- frame sequences: listing ---------------------------------------------- */

static bool is_frame_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (dot == NULL || dot == name || name[0] == '.') {
        return false;
    }
    if (strcasecmp(dot, ".png") != 0 && strcasecmp(dot, ".jpg") != 0 &&
        strcasecmp(dot, ".jpeg") != 0) {
        return false;
    }
    return dot[-1] >= '0' && dot[-1] <= '9';
}

static int cmp_ver(const void *a, const void *b)
{
    return strverscmp(*(char *const *)a, *(char *const *)b);
}

typedef struct names {
    char **v;
    size_t n;
} names;

static void names_free(names *nm)
{
    for (size_t i = 0; i < nm->n; i++) {
        free(nm->v[i]);
    }
    free(nm->v);
    memset(nm, 0, sizeof *nm);
}

/* Length of a frame name's stem: what comes before its trailing digits
 * (the extension is ".png", ".jpg" or ".jpeg": is_frame_name). */
static size_t stem_len(const char *name)
{
    size_t n = (size_t)(strrchr(name, '.') - name);
    while (n > 0 && name[n - 1] >= '0' && name[n - 1] <= '9') {
        n--;
    }
    return n;
}

/* Frames of one sequence share their stem and extension (shot_0001.png,
 * shot_0002.png, ...). A folder of stills whose names merely end in
 * digits (bg_1920x1080.png, cel_640x480.png, IMG_2041.jpg beside
 * scan_07.jpg) is a folder of files. */
static bool same_stem(const names *nm)
{
    const char *a = nm->v[0];
    size_t la = stem_len(a);
    const char *ea = strrchr(a, '.');
    for (size_t i = 1; i < nm->n; i++) {
        const char *b = nm->v[i];
        if (stem_len(b) != la || memcmp(a, b, la) != 0 || strcasecmp(ea, strrchr(b, '.')) != 0) {
            return false;
        }
    }
    return true;
}

/* The frames of folder dir, in number order (strverscmp: frame_9 before
 * frame_10). *ok is false if the folder holds anything else (a folder
 * with sub-folders or other files is a tree of files, not a sequence). */
static ct_status list_frames(ct_ctx *ctx, const char *dir, names *out, bool *ok)
{
    names nm = {NULL, 0};
    size_t cap = 0;
    ct_status st = CT_OK;
    DIR *d = opendir(dir);
    *ok = false;
    memset(out, 0, sizeof *out);
    if (d == NULL) {
        return ct_fail(ctx, CT_ERR_IO, "%s: %s", dir, strerror(errno));
    }
    bool other = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        if (!is_frame_name(e->d_name)) {
            other = true;
            continue;
        }
        if (nm.n == cap) {
            size_t nc = cap == 0 ? 64 : cap * 2;
            char **nv = ct_reallocarray(ctx, nm.v, nc, sizeof *nv);
            if (nv == NULL) {
                st = CT_ERR_NOMEM;
                goto done;
            }
            nm.v = nv;
            cap = nc;
        }
        nm.v[nm.n] = ct_strdup(ctx, e->d_name);
        if (nm.v[nm.n] == NULL) {
            st = CT_ERR_NOMEM;
            goto done;
        }
        nm.n++;
    }
    if (nm.n > 0) {
        qsort(nm.v, nm.n, sizeof *nm.v, cmp_ver);
    }
    *ok = !other && nm.n >= 2 && same_stem(&nm);
    *out = nm;
    nm.v = NULL;
    nm.n = 0;
done:
    closedir(d);
    names_free(&nm);
    return st;
}

static char *join(ct_ctx *ctx, const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = ct_malloc(ctx, n);
    if (p != NULL) {
        snprintf(p, n, "%s/%s", dir, name);
    }
    return p;
}

ct_media_kind ct_media_kind_of(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        names nm;
        bool ok = false;
        if (list_frames(NULL, path, &nm, &ok) == CT_OK) {
            names_free(&nm);
        }
        return ok ? CT_MEDIA_SEQUENCE : CT_MEDIA_IMAGE;
    }
    return med_is_video_name(path) ? CT_MEDIA_VIDEO : CT_MEDIA_IMAGE;
}

/* ---- embedding -------------------------------------------------------------- */

typedef struct mark_state {
    ct_ctx *ctx;
    const uint8_t *sync_key, *vkey;
    wm_embed_params prm;
    pthread_mutex_t mu; /* video: guards what follows */
    uint64_t phash;
    double ssim_sum;
    unsigned ssim_n;
} mark_state;

/* Media calls this from its marking threads, several frames at once: it
 * shares nothing writable but the quality sums (under m->mu), and passes
 * no context to wm_embed (media reports a failure in the caller's). */
static ct_status mark_frame(void *opaque, const med_vframe *f, float *delta)
{
    mark_state *m = opaque;
    /* Rooms are left to media, which clips to the code range as it
     * rounds: video Y' has headroom above white and below black. */
    wm_plane wp = {f->w, f->h, f->y, NULL, NULL, f->weight, false, 1, NULL, NULL};
    /* The tile moves with the picture's pan (media's estimate): on a
     * panning shot the encoder's motion compensation then carries the
     * mark from frame to frame instead of coding it again in every one
     * (x264 on the kid clip: 1.5x the CPU of the unmarked clip, against
     * 2.2x for a tile fixed to the frame; see media/med_motion.c). Each
     * frame still holds the whole tile, so a frame alone is found as
     * before. */
    wm_embed_params prm = m->prm;
    prm.shift_x = f->pan_x;
    prm.shift_y = f->pan_y;
    ct_status st = wm_embed(NULL, &wp, m->sync_key, m->vkey, &prm, delta);
    if (st != CT_OK) {
        return st;
    }
    uint64_t ph = f->index == 0 ? ldg_dhash(f->y, f->w, f->h) : 0;
    double psnr, ssim = 0;
    if (f->index % SSIM_EVERY == 0) {
        wm_quality(&wp, delta, &psnr, &ssim);
    }
    pthread_mutex_lock(&m->mu);
    if (f->index == 0) {
        m->phash = ph;
    }
    if (f->index % SSIM_EVERY == 0) {
        m->ssim_sum += ssim;
        m->ssim_n++;
    }
    pthread_mutex_unlock(&m->mu);
    return CT_OK;
}

static void remove_tree_flat(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
                continue;
            }
            size_t n = strlen(dir) + strlen(e->d_name) + 2;
            char *p = malloc(n);
            if (p != NULL) {
                snprintf(p, n, "%s/%s", dir, e->d_name);
                unlink(p);
                free(p);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

/* Mark every frame of folder input into folder tmp (same names). */
static ct_status embed_sequence(ct_ctx *ctx, const char *input, const char *tmp,
                                const names *nm, mark_state *m, sto_record *rec,
                                ct_embed_result *out)
{
    ct_status st = CT_OK;
    med_image *img = NULL;
    float *y = NULL, *wt = NULL, *delta = NULL;
    char *src = NULL, *dst = NULL;
    crypto_hash_sha256_state hin, hout;
    uint8_t h[32];
    double se = 0, npix = 0;
    size_t cap = 0;

    crypto_hash_sha256_init(&hin);
    crypto_hash_sha256_init(&hout);
    for (size_t i = 0; i < nm->n; i++) {
        src = join(ctx, input, nm->v[i]);
        dst = join(ctx, tmp, nm->v[i]);
        if (src == NULL || dst == NULL) {
            st = CT_ERR_NOMEM;
            goto done;
        }
        st = ldg_sha256_file(ctx, src, false, h);
        if (st != CT_OK) {
            goto done;
        }
        crypto_hash_sha256_update(&hin, h, sizeof h);
        /* A JPEG frame stays a JPEG, marked in its coefficients as images
         * are (or in its Y'CbCr planes where its layout is rarer). */
        const char *ext = strrchr(nm->v[i], '.');
        bool png = ext != NULL && strcasecmp(ext, ".png") == 0;
        st = med_read_file_as(ctx, src, png ? 0 : MED_READ_COEF, &img);
        if (st != CT_OK) {
            goto done;
        }
        uint32_t w = med_width(img), hh = med_height(img);
        size_t n = (size_t)w * hh;
        if (n > cap) {
            free(y);
            free(wt);
            free(delta);
            y = ct_mallocarray(ctx, n, sizeof *y);
            wt = ct_mallocarray(ctx, n, sizeof *wt);
            delta = ct_mallocarray(ctx, n, sizeof *delta);
            cap = n;
            if (y == NULL || wt == NULL || delta == NULL) {
                cap = 0;
                st = CT_ERR_NOMEM;
                goto done;
            }
        }
        st = med_luma(ctx, img, y, NULL, NULL, wt);
        if (st != CT_OK) {
            goto done;
        }
        if (i == 0) {
            m->phash = ldg_dhash(y, w, hh);
            out->width = w;
            out->height = hh;
        }
        bool split = png && med_depth(img) == 8 && med_channels(img) >= 3;
        /* Frames go one after the other: each uses the threads an image would. */
        /* The rooms row by row from the frame, as for an image. */
        wm_plane wp = {w, hh, y, NULL, NULL, wt, med_depth(img) == 16 || split,
                       ct_image_threads(), med_rooms_row, img};
        st = wm_embed(ctx, &wp, m->sync_key, m->vkey, &m->prm, delta);
        if (st == CT_OK) {
            st = med_realize_luma(ctx, img, delta, split, wp.threads); /* delta: what was written */
        }
        if (st != CT_OK) {
            goto done;
        }
        double psnr, ssim;
        wm_quality(&wp, delta, &psnr, &ssim);
        se += n * 65025.0 * pow(10.0, -psnr / 10.0);
        npix += (double)n;
        m->ssim_sum += ssim;
        m->ssim_n++;
        /* The frame's hash from its bytes as they are written (as for an
         * image), then the frame on disk before the record. */
        ldg_hash_stream *hs = NULL;
        st = ldg_hash_stream_start(ctx, ct_image_threads(), &hs);
        if (st == CT_OK) {
            med_write_opts wo = {.threads = ct_image_threads(),
                                 .tap = ldg_hash_stream_feed,
                                 .tap_user = hs};
            st = med_write_file(ctx, img, dst, &wo);
        }
        ldg_hash_stream_end(hs, st == CT_OK ? h : NULL);
        if (st == CT_OK) {
            st = ldg_fsync_file(ctx, dst);
        }
        if (st != CT_OK) {
            goto done;
        }
        crypto_hash_sha256_update(&hout, h, sizeof h);
        med_image_free(img);
        img = NULL;
        free(src);
        free(dst);
        src = dst = NULL;
        out->frames++;
    }
    crypto_hash_sha256_final(&hin, rec->input_sha256);
    crypto_hash_sha256_final(&hout, rec->output_sha256);
    out->psnr = se > 0 ? 10.0 * log10(65025.0 * npix / se) : 99.0;
    out->duration = (double)nm->n / SEQ_FPS;
done:
    med_image_free(img);
    free(src);
    free(dst);
    free(y);
    free(wt);
    free(delta);
    return st;
}

ct_status ct_embed_video(ct_ctx *ctx, const char *vendor, const char *input, const char *output,
                         const ct_video_opts *opts, ct_embed_result *out)
{
    ct_status st;
    ct_vendor v;
    uint8_t sync_key[WM_KEYBYTES], vkey[WM_KEYBYTES];
    sto_record rec;
    char *tmp = NULL;
    names nm = {NULL, 0};
    bool seq = false;
    double strength =
        opts != NULL && opts->strength > 0 ? opts->strength : CT_VIDEO_DEFAULT_STRENGTH;

    memset(out, 0, sizeof *out);
    out->strength = strength;
    med_libav_quiet();
    if (strength < 0.25 || strength > 4.0 || !isfinite(strength)) {
        return ct_fail(ctx, CT_ERR_MISUSE, "strength must be between 0.25 and 4");
    }
    if (opts != NULL && (opts->crf < 0 || opts->crf > 63 || opts->bitrate < 0)) {
        return ct_fail(ctx, CT_ERR_MISUSE, "CRF must be 1..63 and the bitrate positive");
    }
    ct_media_kind kind = ct_media_kind_of(input);
    if (kind == CT_MEDIA_SEQUENCE) {
        seq = true;
        struct stat sb;
        if (stat(output, &sb) == 0) {
            bool empty = false;
            if (S_ISDIR(sb.st_mode)) {
                DIR *d = opendir(output);
                empty = d != NULL;
                struct dirent *e;
                while (d != NULL && (e = readdir(d)) != NULL) {
                    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                        empty = false;
                    }
                }
                if (d != NULL) {
                    closedir(d);
                }
            }
            if (!empty) {
                return ct_fail(ctx, CT_ERR_EXISTS, "%s: exists; the marked frames go to a new "
                               "or empty folder", output);
            }
        }
    } else if (kind == CT_MEDIA_VIDEO) {
        if (!med_is_video_name(output)) {
            return ct_fail(ctx, CT_ERR_MISUSE, "%s: the output of a video must end in .mp4, "
                           ".mov, .mkv, .webm, .avi or .m4v", output);
        }
    } else {
        return ct_fail(ctx, CT_ERR_MISUSE, "%s: neither a video file nor a folder of numbered "
                       "frames", input);
    }
    st = api_embed_begin(ctx, vendor, input, output, opts != NULL ? opts->asset : NULL,
                         opts != NULL ? opts->issued_by : NULL, strength, &v, sync_key, vkey,
                         &rec);
    if (st != CT_OK) {
        goto done;
    }
    if (seq) {
        bool ok;
        st = list_frames(ctx, input, &nm, &ok);
        if (st != CT_OK) {
            goto done;
        }
    }
    st = api_temp_name(ctx, output, seq, &tmp);
    if (st != CT_OK) {
        goto done;
    }
    if (!seq) {
        st = ldg_sha256_file(ctx, input, false, rec.input_sha256);
        if (st != CT_OK) {
            goto done;
        }
    }
    st = ldg_claim_serial(ctx, &rec.serial);
    if (st != CT_OK) {
        goto done;
    }
    mark_state m = {ctx, sync_key, vkey, {.strength = strength, .serial = rec.serial},
                    PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
    if (seq) {
        st = embed_sequence(ctx, input, tmp, &nm, &m, &rec, out);
        if (st != CT_OK) {
            goto done;
        }
    } else {
        med_video_opts mo = {0};
        med_video_info info;
        if (opts != NULL) {
            mo.codec = opts->codec;
            mo.crf = opts->crf;
            mo.bitrate = opts->bitrate;
            mo.preset = opts->preset;
            mo.progress = opts->progress;
            mo.progress_opaque = opts->progress_user;
        }
        st = med_video_transcode(ctx, input, tmp, output, &mo, mark_frame, &m, &info);
        if (st != CT_OK) {
            goto done;
        }
        out->width = info.width;
        out->height = info.height;
        out->frames = info.frames;
        out->frames_declared = info.frames_declared;
        out->alpha_dropped = info.alpha_dropped;
        out->duration = info.duration;
        out->psnr = info.psnr_y;
        st = ldg_sha256_file(ctx, tmp, true, rec.output_sha256);
        if (st != CT_OK) {
            goto done;
        }
    }
    out->ssim = m.ssim_n > 0 ? m.ssim_sum / m.ssim_n : 1.0;
    for (int i = 0; i < 8; i++) {
        rec.phash[i] = (uint8_t)(m.phash >> (56 - 8 * i));
    }
    /* No output without its record: see ct_embed_file. */
    st = api_embed_commit(ctx, &v, &rec, &tmp, output, false, out);
done:
    if (tmp != NULL) {
        if (seq) {
            remove_tree_flat(tmp);
        } else {
            unlink(tmp);
        }
        free(tmp);
    }
    names_free(&nm);
    sodium_memzero(sync_key, sizeof sync_key);
    sodium_memzero(vkey, sizeof vkey);
    if (st != CT_OK) {
        memset(out, 0, sizeof *out);
    }
    return st;
}

/* ---- verification ------------------------------------------------------------ */

/* Every frame carries the whole tile: at the same place on a still shot,
 * moved with the picture on a pan (the embedder follows the pan; a frame
 * alone is found wherever its tile sits). Three ways of adding frames up,
 * tried in turn (each try is counted in the false-positive probability):
 *
 *  1. Key-frame heads. A re-encoded leak keeps the mark best in its key
 *     frames: the encoder's motion compensation then copies it along with
 *     the moving picture, so each following P/B frame carries it a little
 *     more out of place, and the residual that would restore it is
 *     quantised away. Measured on the sample clips, 480p CRF 30 and 360p
 *     CRF 28: the key frame alone decodes at sync z 10, the frames 0.7 s
 *     later have half of that, and the whole 2 s sum no longer decodes.
 *     So the first HEAD_FRAMES frames from each key frame are whitened
 *     (vfy_whiten, the detector's own matched filter) and summed, and the
 *     key frames alone as well (on a VP9 source re-encoded to 360p the
 *     third frame already weakens the sum). Two frames per head did best
 *     of 1..4 on the attacked sample clips.
 *  2. The whole span, whitened: the frames are averaged in short runs
 *     (the picture hardly moves within one), each run mean is whitened
 *     and the whitened runs are summed, so content that moves does not
 *     leave ghosts of its own edges in the sum, and a scene cut changes
 *     nothing.
 *  3. The plain average of the frames (the mark stays at full strength,
 *     what moves blurs away): best when the clip was hardly compressed.
 *  All three move every frame back by its pan since the first (the scan
 *  measures it on the leak with the embedder's own estimator, in whole
 *  pixels), so the mark that followed the camera lands in one place; on a
 *  still shot the pan is exactly 0. Measured on the kid clip marked at
 *  strength 0.5: the whole-span sum went from sync z 5-6 (no decode) to
 *  z 7.6-14 (decoded) on the 360p, x265 and VP9 cuts, and the 360p cut,
 *  not found before, is identified.
 *
 * The whitened sums are handed to vfy_detect as a picture: scaled to an
 * RMS of WHITE_RMS around mid-grey, where its own whitening is close to
 * linear (a residual of that size sits well inside the range kernel and
 * the budget's ramp), so the second whitening only evens out the level.
 * Frames over HALVE_OVER pixels are halved (2x2 mean) before whitening:
 * the detector's first pass works at half size anyway, and it keeps a
 * 1080p scan to a quarter of the cost. Memory is a few planes, whatever
 * the length. */
#define HEAD_FRAMES 2
#define HEAD_MAX    16
#define RUNS_MAX    12
#define HALVE_OVER  (1280u * 720u)
#define WHITE_RMS   0.5
/* vfy_detect's whitening windows (detect.c). */
#define WHITE_MEAN_R 11
#define WHITE_VAR_R  3

typedef struct wsum {
    float *sum;
    uint32_t n;
    double t_first, t_last;
} wsum;

typedef struct accum {
    ct_ctx *ctx;
    uint32_t w, h;   /* frames */
    uint32_t ww, wh; /* the whitened planes (halved frames when large) */
    float *sum;      /* pixel sum of all frames, aligned on the first */
    float *sum_n;    /* frames summed into each pixel of sum */
    float *half, *run, *run_n_px, *white;
    uint32_t run_n, run_len;
    double t_run; /* time of the current run's first frame */
    int since_key; /* frames since the last key frame; -1 before the first */
    wsum key, head, runs; /* key frames alone; key-frame heads; the whole span */
    double t_first, t_last, max_seconds;
    uint32_t n;
} accum;

static void accum_free(accum *a)
{
    free(a->sum);
    free(a->sum_n);
    free(a->half);
    free(a->run);
    free(a->run_n_px);
    free(a->white);
    free(a->key.sum);
    free(a->head.sum);
    free(a->runs.sum);
    memset(a, 0, sizeof *a);
}

/* dst(x, y) += src(x + sx, y + sy) where that lies inside the plane, and
 * cnt (if not NULL) counts the frames each pixel received: src moved back
 * by the picture's pan, so that a mark that follows the pan lands where
 * it was in the first frame. */
static void add_shifted(float *restrict dst, float *restrict cnt, const float *restrict src,
                        uint32_t w, uint32_t h, long sx, long sy)
{
    long y0 = sy < 0 ? -sy : 0, y1 = sy > 0 ? (long)h - sy : (long)h;
    long x0 = sx < 0 ? -sx : 0, x1 = sx > 0 ? (long)w - sx : (long)w;
    for (long y = y0; y < y1; y++) {
        float *d = dst + (size_t)y * w;
        const float *s = src + (size_t)(y + sy) * w + sx;
        for (long x = x0; x < x1; x++) {
            d[x] += s[x];
        }
        if (cnt != NULL) {
            float *c = cnt + (size_t)y * w;
            for (long x = x0; x < x1; x++) {
                c[x] += 1.0f;
            }
        }
    }
}

/* sum / cnt where a pixel got any frame; the mean of those elsewhere (a
 * flat fill the whitening ignores). */
static void mean_of(float *sum, const float *cnt, size_t n)
{
    double m = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (cnt[i] > 0) {
            sum[i] /= cnt[i];
            m += sum[i];
            k++;
        }
    }
    float fill = k > 0 ? (float)(m / (double)k) : 128.0f;
    for (size_t i = 0; i < n; i++) {
        if (!(cnt[i] > 0)) {
            sum[i] = fill;
        }
    }
}

/* Add the whitened plane of accum a to s, moved back by (sx, sy)
 * (whitened planes are about 0 where nothing was added). */
static void wsum_add(const accum *a, wsum *s, double t0, double t1, long sx, long sy)
{
    add_shifted(s->sum, NULL, a->white, a->ww, a->wh, sx, sy);
    if (s->n == 0) {
        s->t_first = t0;
    }
    s->t_last = t1;
    s->n++;
}

/* Whiten p into a->white and add it to s moved back by (sx, sy). */
static ct_status whiten_into(accum *a, const float *p, wsum *s, double t0, double t1, long sx,
                             long sy)
{
    ct_status st = vfy_whiten(a->ctx, p, NULL, a->ww, a->wh, WHITE_MEAN_R, WHITE_VAR_R, a->white);
    if (st == CT_OK) {
        wsum_add(a, s, t0, t1, sx, sy);
    }
    return st;
}

/* The run of frames summed in a->run: whiten its mean. */
static ct_status flush_run(accum *a, double t_now)
{
    if (a->run_n == 0) {
        return CT_OK;
    }
    size_t n = (size_t)a->ww * a->wh;
    mean_of(a->run, a->run_n_px, n);
    ct_status st = whiten_into(a, a->run, &a->runs, a->t_run, t_now, 0, 0);
    memset(a->run, 0, n * sizeof *a->run);
    memset(a->run_n_px, 0, n * sizeof *a->run_n_px);
    a->run_n = 0;
    return st;
}

/* expected: frames the scan will give at most (0 unknown). */
static ct_status accum_add(accum *a, const float *y, uint32_t w, uint32_t h, double t, bool key,
                           double expected, double pan_x, double pan_y)
{
    size_t n = (size_t)w * h;
    if (a->sum == NULL) {
        bool halve = n > HALVE_OVER;
        a->w = w;
        a->h = h;
        a->ww = halve ? w / 2 : w;
        a->wh = halve ? h / 2 : h;
        size_t nw = (size_t)a->ww * a->wh;
        a->sum = ct_calloc(a->ctx, n, sizeof *a->sum);
        a->sum_n = ct_calloc(a->ctx, n, sizeof *a->sum_n);
        a->half = halve ? ct_mallocarray(a->ctx, nw, sizeof *a->half) : NULL;
        a->run = ct_calloc(a->ctx, nw, sizeof *a->run);
        a->run_n_px = ct_calloc(a->ctx, nw, sizeof *a->run_n_px);
        a->white = ct_mallocarray(a->ctx, nw, sizeof *a->white);
        a->key.sum = ct_calloc(a->ctx, nw, sizeof *a->key.sum);
        a->head.sum = ct_calloc(a->ctx, nw, sizeof *a->head.sum);
        a->runs.sum = ct_calloc(a->ctx, nw, sizeof *a->runs.sum);
        if (a->sum == NULL || a->sum_n == NULL || (halve && a->half == NULL) ||
            a->run == NULL || a->run_n_px == NULL || a->white == NULL ||
            a->key.sum == NULL || a->head.sum == NULL || a->runs.sum == NULL) {
            return CT_ERR_NOMEM;
        }
        a->t_first = t;
        a->since_key = -1;
        double runs = expected > 0 ? ceil(expected / RUNS_MAX) : 6;
        a->run_len = runs < 1 ? 1 : runs > 240 ? 240 : (uint32_t)runs;
    }
    if (w != a->w || h != a->h) {
        return CT_OK; /* a frame of another size adds nothing to the sums */
    }
    /* The pan since the first frame, in whole pixels of each plane (half
     * a pixel off at most: the mark's cells are several pixels wide). */
    const long sx = lround(pan_x), sy = lround(pan_y);
    const long hx = a->half != NULL ? lround(pan_x / 2) : sx;
    const long hy = a->half != NULL ? lround(pan_y / 2) : sy;
    add_shifted(a->sum, a->sum_n, y, w, h, sx, sy);
    const float *p = y;
    if (a->half != NULL) {
        for (uint32_t r = 0; r < a->wh; r++) {
            const float *s0 = y + (size_t)(2 * r) * w, *s1 = s0 + w;
            float *o = a->half + (size_t)r * a->ww;
            for (uint32_t x = 0; x < a->ww; x++) {
                o[x] = 0.25f * (s0[2 * x] + s0[2 * x + 1] + s1[2 * x] + s1[2 * x + 1]);
            }
        }
        p = a->half;
    }
    ct_status st = CT_OK;
    if (key) {
        a->since_key = 0;
    } else if (a->since_key >= 0) {
        a->since_key++;
    }
    if (a->since_key >= 0 && a->since_key < HEAD_FRAMES && a->head.n < HEAD_MAX) {
        st = whiten_into(a, p, &a->head, t, t, hx, hy);
        if (st != CT_OK) {
            return st;
        }
        if (a->since_key == 0) {
            wsum_add(a, &a->key, t, t, hx, hy);
        }
    }
    add_shifted(a->run, a->run_n_px, p, a->ww, a->wh, hx, hy);
    if (a->run_n == 0) {
        a->t_run = t;
    }
    a->run_n++;
    if (a->run_n >= a->run_len) {
        st = flush_run(a, t);
    }
    a->t_last = t;
    a->n++;
    return st;
}

/* Flush the last run; call once after the scan. */
static ct_status accum_finish(accum *a)
{
    return flush_run(a, a->t_last);
}

static ct_status scan_cb(void *opaque, const med_vframe *f)
{
    accum *a = opaque;
    double len = a->max_seconds;
    if (f->duration > 0 && f->duration < len) {
        len = f->duration;
    }
    double expected = len * (f->fps > 0 ? f->fps : 24.0);
    return accum_add(a, f->y, f->w, f->h, f->time, f->key, expected, f->pan_x, f->pan_y);
}

typedef struct detector {
    const uint8_t *sync_key;
    const vfy_key *keys;
    size_t nkeys;
    double fpp;
    uint64_t trials;
    uint64_t issued_tests;
} detector;

static ct_status try_plane(ct_ctx *ctx, detector *d, const float *y, uint32_t w, uint32_t h,
                           vfy_result *res)
{
    vfy_input in = {w, h, y, NULL};
    ct_status st = vfy_detect(ctx, &in, d->sync_key, d->keys, d->nkeys, res);
    if (st == CT_OK) {
        /* Each attempt is another chance for noise: the probabilities add. */
        d->fpp += res->false_positive_probability;
        d->trials += res->trials;
        d->issued_tests += res->issued_tests;
    }
    return st;
}

/* A whitened sum as a picture for vfy_detect (see the note above), into
 * pic. False if the sum is empty or flat. */
static bool wsum_picture(const accum *a, const wsum *s, float *pic)
{
    size_t n = (size_t)a->ww * a->wh;
    double ss = 0;
    if (s->n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        ss += (double)s->sum[i] * s->sum[i];
    }
    if (!(ss > 0)) {
        return false;
    }
    float k = (float)(WHITE_RMS / sqrt(ss / (double)n));
    for (size_t i = 0; i < n; i++) {
        pic[i] = 128.0f + k * s->sum[i];
    }
    return true;
}

/* The map vfy_detect reported for its best candidate (spectrum.c's
 * convention: cell = (64/P) R(angle) F pixel). */
static vfy_geom geom_of(const vfy_result *r)
{
    vfy_geom g;
    double k = WM_CELLS / r->period, ang = r->angle * M_PI / 180.0, f = r->mirrored ? -1 : 1;
    ang *= f; /* detect reports atan2(b10, b11), which flips with the mirror */
    g.b[0][0] = k * cos(ang) * f;
    g.b[0][1] = -k * sin(ang);
    g.b[1][0] = k * sin(ang) * f;
    g.b[1][1] = k * cos(ang);
    g.score = 0;
    return g;
}

#define NPLANES 3
#define MAX_GEOMS (NPLANES + 2)

/* Geometries worth trying on every sum before any search: a leak is most
 * often the whole frame scaled to a standard size, and then the tile's
 * period is the embedder's own rule (wm_period_for: 2/9 of the short side)
 * applied to the leak's size, whatever the scale. The second covers a
 * 16:9 picture letterboxed into a taller frame (its width kept). The
 * blind search on a few frames of a heavily compressed leak is what fails
 * first (measured: 360p CRF 28 and 480p CRF 30 cuts whose key frames
 * decode at this geometry and not blind). */
static int prior_geoms(uint32_t w, uint32_t h, vfy_geom *g)
{
    double p[2] = {2.0 / 9.0 * (w < h ? w : h), w / 8.0};
    int n = 0;
    for (int i = 0; i < 2; i++) {
        if (p[i] < 32 || (i == 1 && fabs(p[1] - p[0]) < 0.01 * p[0])) {
            continue;
        }
        g[n++] = vfy_geom_upright(p[i]);
    }
    return n;
}

/* The state of one clip's detection: the sums as pictures, the
 * geometries collected, the attempts' counts. */
typedef struct dstate {
    ct_ctx *ctx;
    const accum *a;
    detector d;
    float *pics[NPLANES];
    bool have[NPLANES];
    vfy_geom geoms[MAX_GEOMS];
    int geom_from[MAX_GEOMS]; /* the sum a geometry was found on; -1 prior */
    int ngeom, tried;         /* geometries; those already tried everywhere */
    int won;                  /* the sum that named a vendor, or -1 */
    vfy_result res;
} dstate;

/* Blind detection on sum k; a geometry it finds without a decode is kept. */
static ct_status blind_try(dstate *x, int k)
{
    if (x->won >= 0 || !x->have[k]) {
        return CT_OK;
    }
    ct_status st = try_plane(x->ctx, &x->d, x->pics[k], x->a->ww, x->a->wh, &x->res);
    if (st != CT_OK) {
        return st;
    }
    if (x->res.nhits > 0) {
        x->won = k;
    } else if (x->res.period > 0 && x->ngeom < MAX_GEOMS) {
        x->geoms[x->ngeom] = geom_of(&x->res);
        x->geom_from[x->ngeom++] = k;
    }
    return CT_OK;
}

/* Every geometry not yet tried, on every sum it did not come from. */
static ct_status cross_try(dstate *x)
{
    for (; x->tried < x->ngeom && x->won < 0; x->tried++) {
        const vfy_geom *g = &x->geoms[x->tried];
        for (int j = 0; j < NPLANES && x->won < 0; j++) {
            if (!x->have[j] || j == x->geom_from[x->tried]) {
                continue;
            }
            vfy_input in = {x->a->ww, x->a->wh, x->pics[j], NULL};
            ct_status st = vfy_try_geometry(x->ctx, &in, x->d.sync_key, x->d.keys,
                                            x->d.nkeys, g, &x->res);
            if (st != CT_OK) {
                return st;
            }
            x->d.fpp += x->res.false_positive_probability;
            x->d.trials += x->res.trials;
            x->d.issued_tests += x->res.issued_tests;
            if (x->res.nhits > 0) {
                x->won = j;
                x->res.period = WM_CELLS / sqrt(fabs(g->b[0][0] * g->b[1][1] -
                                                     g->b[0][1] * g->b[1][0]));
            }
        }
    }
    return CT_OK;
}

static ct_status detect_accum(ct_ctx *ctx, accum *a, const vfy_key *keys, size_t nkeys,
                              const uint8_t *sync_key, const ct_vendor *vendors, size_t nv,
                              ct_verdict *out)
{
    ct_status st = CT_OK;
    size_t n = (size_t)a->w * a->h, nw = (size_t)a->ww * a->wh;
    /* Heads, key frames alone, the whole span (see the note above): the
     * heads carry the most frames of fresh evidence; a key frame alone
     * wins when the mark fades within a frame or two of it. */
    const wsum *sums[NPLANES] = {&a->head, &a->key, &a->runs};
    dstate x;

    memset(&x, 0, sizeof x);
    x.ctx = ctx;
    x.a = a;
    x.d = (detector){sync_key, keys, nkeys, 0, 0, 0};
    x.won = -1;
    out->width = a->w;
    out->height = a->h;
    out->evidence = 1;
    for (int k = 0; k < NPLANES; k++) {
        /* Skip a sum that holds nothing another does not. */
        if ((k == 1 && a->key.n == a->head.n) || (k == 2 && a->runs.n <= 1 && a->head.n >= a->n)) {
            continue;
        }
        x.pics[k] = ct_mallocarray(ctx, nw, sizeof *x.pics[k]);
        if (x.pics[k] == NULL) {
            st = CT_ERR_NOMEM;
            goto done;
        }
        x.have[k] = wsum_picture(a, sums[k], x.pics[k]);
    }
    x.ngeom = prior_geoms(a->ww, a->wh, x.geoms);
    for (int g = 0; g < x.ngeom; g++) {
        x.geom_from[g] = -1;
    }
    /* In order: blind on the heads (what usually names the vendor at
     * once); the prior geometries (and the one the heads gave) on every
     * sum; blind on the other sums; what those found, on the rest. */
    st = blind_try(&x, 0);
    if (st == CT_OK) {
        st = cross_try(&x);
    }
    for (int k = 1; k < NPLANES && st == CT_OK; k++) {
        st = blind_try(&x, k);
    }
    if (st == CT_OK) {
        st = cross_try(&x);
    }
    if (st != CT_OK) {
        goto done;
    }
    int won = x.won;
    vfy_result res = x.res;
    if (won >= 0) {
        const wsum *s = sums[won];
        out->frames_used = won == 2 ? a->n : s->n;
        out->time_first = s->t_first;
        out->time_last = s->t_last;
    } else {
        /* Last, the plain average. */
        mean_of(a->sum, a->sum_n, n);
        st = try_plane(ctx, &x.d, a->sum, a->w, a->h, &res);
        if (st != CT_OK) {
            goto done;
        }
        out->frames_used = a->n;
        out->time_first = a->t_first;
        out->time_last = a->t_last;
    }
    out->false_positive_probability = x.d.fpp < 1.0 ? x.d.fpp : 1.0;
    out->trials = x.d.trials;
    out->issued_tests = x.d.issued_tests;
    out->sync_z = res.sync_z;
    out->period = res.period;
    out->angle = res.angle;
    out->mirrored = res.mirrored;
    for (int i = 0; i < res.nhits && out->nvendors < CT_MAX_COLLUDERS; i++) {
        out->vendor_ids[out->nvendors] = res.hits[i].vendor_id;
        out->serials[out->nvendors] = res.hits[i].serial;
        out->nvendors++;
    }
    if (res.nhits > 0) {
        out->identified = 1;
        out->vendor_id = res.hits[0].vendor_id;
        out->epoch = res.hits[0].epoch;
        out->serial = res.hits[0].serial;
        out->msg_z = res.hits[0].msg_z;
        out->payload_issued = res.hits[0].issued;
        for (size_t i = 0; i < nv; i++) {
            if (vendors[i].id == out->vendor_id) {
                memcpy(out->vendor, vendors[i].name, sizeof out->vendor);
            }
        }
        st = ldg_find_serial(ctx, out->serial, out->vendor_id, &out->record, &out->has_record);
    }
done:
    for (int k = 0; k < NPLANES; k++) {
        free(x.pics[k]);
    }
    return st;
}

static ct_status scan_sequence(ct_ctx *ctx, const char *dir, double max_seconds, accum *a)
{
    names nm;
    bool ok;
    ct_status st = list_frames(ctx, dir, &nm, &ok);
    med_image *img = NULL;
    float *y = NULL;
    size_t cap = 0;
    char *p = NULL;
    if (st != CT_OK) {
        return st;
    }
    if (nm.n == 0) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: no numbered PNG or JPEG frames", dir);
        goto done;
    }
    size_t limit = (size_t)(max_seconds * SEQ_FPS);
    if (limit == 0) {
        limit = 1;
    }
    for (size_t i = 0; i < nm.n && i < limit; i++) {
        p = join(ctx, dir, nm.v[i]);
        if (p == NULL) {
            st = CT_ERR_NOMEM;
            goto done;
        }
        st = med_read_file(ctx, p, &img);
        if (st != CT_OK) {
            goto done;
        }
        uint32_t w = med_width(img), h = med_height(img);
        if ((size_t)w * h > cap) {
            free(y);
            cap = (size_t)w * h;
            y = ct_mallocarray(ctx, cap, sizeof *y);
            if (y == NULL) {
                cap = 0;
                st = CT_ERR_NOMEM;
                goto done;
            }
        }
        st = med_luma(ctx, img, y, NULL, NULL, NULL);
        if (st == CT_OK) {
            /* Every picture of a sequence stands alone, as a key frame. */
            st = accum_add(a, y, w, h, (double)i / SEQ_FPS, true,
                           (double)(nm.n < limit ? nm.n : limit), 0.0, 0.0);
        }
        if (st != CT_OK) {
            goto done;
        }
        med_image_free(img);
        img = NULL;
        free(p);
        p = NULL;
    }
done:
    free(p);
    free(y);
    med_image_free(img);
    names_free(&nm);
    return st;
}

ct_status ct_verify_video(ct_ctx *ctx, const char *path, double max_seconds, ct_verdict *out)
{
    ct_status st;
    vfy_key *keys = NULL;
    ct_vendor *vendors = NULL;
    size_t nkeys = 0, nv = 0;
    uint8_t sync_key[WM_KEYBYTES];
    accum a;

    memset(out, 0, sizeof *out);
    memset(&a, 0, sizeof a);
    a.ctx = ctx;
    med_libav_quiet();
    if (!(max_seconds > 0) || !isfinite(max_seconds)) {
        max_seconds = CT_VIDEO_DEFAULT_SECONDS;
    }
    a.max_seconds = max_seconds;
    st = key_derive_sync(ctx, sync_key);
    if (st != CT_OK) {
        goto done;
    }
    st = api_all_keys(ctx, &keys, &nkeys, &vendors, &nv);
    if (st != CT_OK) {
        goto done;
    }
    if (ct_media_kind_of(path) == CT_MEDIA_SEQUENCE) {
        st = scan_sequence(ctx, path, max_seconds, &a);
    } else {
        st = med_video_scan(ctx, path, max_seconds, 1, scan_cb, &a, NULL);
    }
    if (st == CT_OK && a.n > 0) {
        st = accum_finish(&a);
    }
    if (st != CT_OK) {
        goto done;
    }
    if (a.n == 0) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: no frame to trace", path);
        goto done;
    }
    st = detect_accum(ctx, &a, keys, nkeys, sync_key, vendors, nv, out);
done:
    sodium_memzero(sync_key, sizeof sync_key);
    api_keys_free(keys, nkeys);
    free(vendors);
    accum_free(&a);
    if (st != CT_OK) {
        memset(out, 0, sizeof *out);
    }
    return st;
}

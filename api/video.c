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
    *ok = !other && nm.n >= 2;
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
    uint64_t phash;
    double ssim_sum;
    unsigned ssim_n;
} mark_state;

static ct_status mark_frame(void *opaque, const med_vframe *f, float *delta)
{
    mark_state *m = opaque;
    /* Rooms are left to media, which clips to the code range as it
     * rounds: video Y' has headroom above white and below black. */
    wm_plane wp = {f->w, f->h, f->y, NULL, NULL, NULL, false};
    ct_status st = wm_embed(m->ctx, &wp, m->sync_key, m->vkey, &m->prm, delta);
    if (st != CT_OK) {
        return st;
    }
    if (f->index == 0) {
        m->phash = ldg_dhash(f->y, f->w, f->h);
    }
    if (f->index % SSIM_EVERY == 0) {
        double psnr, ssim;
        wm_quality(&wp, delta, &psnr, &ssim);
        m->ssim_sum += ssim;
        m->ssim_n++;
    }
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
    float *y = NULL, *up = NULL, *down = NULL, *wt = NULL, *delta = NULL;
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
        st = med_read_file(ctx, src, &img);
        if (st != CT_OK) {
            goto done;
        }
        uint32_t w = med_width(img), hh = med_height(img);
        size_t n = (size_t)w * hh;
        if (n > cap) {
            free(y);
            free(up);
            free(down);
            free(wt);
            free(delta);
            y = ct_mallocarray(ctx, n, sizeof *y);
            up = ct_mallocarray(ctx, n, sizeof *up);
            down = ct_mallocarray(ctx, n, sizeof *down);
            wt = ct_mallocarray(ctx, n, sizeof *wt);
            delta = ct_mallocarray(ctx, n, sizeof *delta);
            cap = n;
            if (y == NULL || up == NULL || down == NULL || wt == NULL || delta == NULL) {
                cap = 0;
                st = CT_ERR_NOMEM;
                goto done;
            }
        }
        st = med_luma(ctx, img, y, up, down, wt);
        if (st != CT_OK) {
            goto done;
        }
        if (i == 0) {
            m->phash = ldg_dhash(y, w, hh);
            out->width = w;
            out->height = hh;
        }
        const char *ext = strrchr(nm->v[i], '.');
        bool png = ext != NULL && strcasecmp(ext, ".png") == 0;
        bool split = png && med_depth(img) == 8 && med_channels(img) >= 3;
        wm_plane wp = {w, hh, y, up, down, wt, med_depth(img) == 16 || split};
        st = wm_embed(ctx, &wp, m->sync_key, m->vkey, &m->prm, delta);
        if (st == CT_OK) {
            st = med_realize_luma(ctx, img, delta, split);
        }
        if (st == CT_OK) {
            st = med_luma(ctx, img, delta, NULL, NULL, NULL); /* what was written */
        }
        if (st != CT_OK) {
            goto done;
        }
        for (size_t k = 0; k < n; k++) {
            delta[k] -= y[k];
        }
        double psnr, ssim;
        wm_quality(&wp, delta, &psnr, &ssim);
        se += n * 65025.0 * pow(10.0, -psnr / 10.0);
        npix += (double)n;
        m->ssim_sum += ssim;
        m->ssim_n++;
        med_write_opts wo = {0};
        st = med_write_file(ctx, img, dst, &wo);
        if (st == CT_OK) {
            st = ldg_sha256_file(ctx, dst, true, h);
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
    free(up);
    free(down);
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
    double strength = opts != NULL && opts->strength > 0 ? opts->strength : 1.0;

    memset(out, 0, sizeof *out);
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
    if (strcmp(input, output) == 0 || api_same_file(input, output)) {
        return ct_fail(ctx, CT_ERR_MISUSE, "%s: refusing to overwrite the original with its "
                       "marked copy", output);
    }
    st = ct_vendor_find(ctx, vendor, &v);
    if (st != CT_OK) {
        return st;
    }
    if (v.revoked_at != 0) {
        return ct_fail(ctx, CT_ERR_MISUSE, "vendor '%s' is revoked and can no longer receive "
                       "assets", v.name);
    }
    st = key_derive_sync(ctx, sync_key);
    if (st == CT_OK) {
        st = key_derive_mark(ctx, v.id, v.epoch, vkey);
    }
    if (st != CT_OK) {
        goto done;
    }
    st = api_record_fill(ctx, &v, input, opts != NULL ? opts->asset : NULL,
                     opts != NULL ? opts->issued_by : NULL, strength, &rec);
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
    mark_state m = {ctx, sync_key, vkey, {strength, rec.serial}, 0, 0, 0};
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
    st = ldg_issue(ctx, &rec);
    if (st != CT_OK) {
        goto done;
    }
    if (rename(tmp, output) != 0) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s (ledger record %" PRIu64 " names a file that was "
                     "not written)", output, strerror(errno), rec.id);
        goto done;
    }
    api_sync_dir_of(output);
    free(tmp);
    tmp = NULL;
    out->record_id = rec.id;
    out->vendor_id = v.id;
    memcpy(out->vendor, v.name, sizeof out->vendor);
    out->serial = rec.serial;
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

/* The mark is the same tile at the same place in every frame while the
 * picture moves, so the mean of N frames keeps the mark at full strength
 * and the (uncorrelated part of the) content and the codec noise at about
 * 1/sqrt(N). One frame near the middle and the first are kept for a
 * second chance on single frames (a clip that is one still, or with a
 * cut to black, loses nothing by averaging; a clip with a mark on part of
 * it might). */
typedef struct accum {
    ct_ctx *ctx;
    uint32_t w, h;
    float *sum, *first, *mid;
    double t_first, t_mid, t_last, mid_at, max_seconds;
    uint32_t n;
    bool have_mid;
} accum;

static void accum_free(accum *a)
{
    free(a->sum);
    free(a->first);
    free(a->mid);
    memset(a, 0, sizeof *a);
}

static ct_status accum_add(accum *a, const float *y, uint32_t w, uint32_t h, double t)
{
    size_t n = (size_t)w * h;
    if (a->sum == NULL) {
        a->w = w;
        a->h = h;
        a->sum = ct_calloc(a->ctx, n, sizeof *a->sum);
        a->first = ct_mallocarray(a->ctx, n, sizeof *a->first);
        a->mid = ct_mallocarray(a->ctx, n, sizeof *a->mid);
        if (a->sum == NULL || a->first == NULL || a->mid == NULL) {
            return CT_ERR_NOMEM;
        }
        memcpy(a->first, y, n * sizeof *y);
        a->t_first = t;
    }
    if (w != a->w || h != a->h) {
        return CT_OK; /* a frame of another size adds nothing to the mean */
    }
    for (size_t i = 0; i < n; i++) {
        a->sum[i] += y[i];
    }
    if (!a->have_mid && t >= a->mid_at && a->n > 0) {
        memcpy(a->mid, y, n * sizeof *y);
        a->t_mid = t;
        a->have_mid = true;
    }
    a->t_last = t;
    a->n++;
    return CT_OK;
}

static ct_status scan_cb(void *opaque, const med_vframe *f)
{
    accum *a = opaque;
    if (a->mid_at < 0) {
        /* The middle of what will be read, for the single-frame retry. */
        double len = a->max_seconds;
        if (f->duration > 0 && f->duration < len) {
            len = f->duration;
        }
        a->mid_at = f->time + len / 2;
    }
    return accum_add(a, f->y, f->w, f->h, f->time);
}

typedef struct detector {
    const uint8_t *sync_key;
    const vfy_key *keys;
    size_t nkeys;
    double fpp;
    uint64_t trials;
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
    }
    return st;
}

static ct_status detect_accum(ct_ctx *ctx, accum *a, const vfy_key *keys, size_t nkeys,
                              const uint8_t *sync_key, const ct_vendor *vendors, size_t nv,
                              ct_verdict *out)
{
    ct_status st;
    vfy_result res;
    detector d = {sync_key, keys, nkeys, 0, 0};
    size_t n = (size_t)a->w * a->h;
    float inv = 1.0f / (float)a->n;

    for (size_t i = 0; i < n; i++) {
        a->sum[i] *= inv;
    }
    out->width = a->w;
    out->height = a->h;
    st = try_plane(ctx, &d, a->sum, a->w, a->h, &res);
    if (st != CT_OK) {
        return st;
    }
    out->frames_used = a->n;
    out->time_first = a->t_first;
    out->time_last = a->t_last;
    out->evidence = 1;
    if (res.nhits == 0 && a->n > 1) {
        const float *single[2] = {a->have_mid ? a->mid : NULL, a->first};
        double t[2] = {a->t_mid, a->t_first};
        for (int k = 0; k < 2 && res.nhits == 0; k++) {
            if (single[k] == NULL) {
                continue;
            }
            vfy_result r2;
            st = try_plane(ctx, &d, single[k], a->w, a->h, &r2);
            if (st != CT_OK) {
                return st;
            }
            if (r2.nhits > 0) {
                res = r2;
                out->frames_used = 1;
                out->time_first = out->time_last = t[k];
                out->evidence = 2;
            }
        }
    }
    out->false_positive_probability = d.fpp < 1.0 ? d.fpp : 1.0;
    out->trials = d.trials;
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
        for (size_t i = 0; i < nv; i++) {
            if (vendors[i].id == out->vendor_id) {
                memcpy(out->vendor, vendors[i].name, sizeof out->vendor);
            }
        }
        st = ldg_find_serial(ctx, out->serial, out->vendor_id, &out->record, &out->has_record);
        if (st != CT_OK) {
            return st;
        }
    }
    return CT_OK;
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
    a->mid_at = (double)(nm.n < limit ? nm.n : limit) / SEQ_FPS / 2;
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
            st = accum_add(a, y, w, h, (double)i / SEQ_FPS);
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
        a.mid_at = -1; /* set from the clip's length at the first frame */
        st = med_video_scan(ctx, path, max_seconds, 1, scan_cb, &a, NULL);
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
    if (keys != NULL) {
        sodium_free(keys);
    }
    free(vendors);
    accum_free(&a);
    if (st != CT_OK) {
        memset(out, 0, sizeof *out);
    }
    return st;
}

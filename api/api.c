/* api: the composing layer behind ct_embed_file and ct_verify_file. Reads
 * files (media), derives keys (keys), marks or detects on luma planes
 * (watermark, verify) and writes the result atomically. */
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

#include <jansson.h>
#include <sodium.h>

#include "core/core.h"
#include "keys/keys.h"
#include "ledger/ledger.h"
#include "media/media.h"
#include "verify/vfy.h"
#include "watermark/wm.h"
#include "api/api_int.h"

typedef struct planes {
    float *y, *wt;
} planes;

static void planes_free(planes *p)
{
    free(p->y);
    free(p->wt);
    memset(p, 0, sizeof *p);
}

/* The luma (and with alpha the weight) of an image. No planes of rooms:
 * the mark takes them row by row from the image (med_rooms_row), which
 * spares two planes of 4 bytes a pixel to fill, fault in and read. */
static ct_status planes_of(ct_ctx *ctx, const med_image *img, planes *p)
{
    size_t n;
    memset(p, 0, sizeof *p);
    if (!ct_mul(&n, med_width(img), med_height(img))) {
        return ct_fail(ctx, CT_ERR_LIMIT, "image too large");
    }
    /* An opaque image has no weight plane: NULL means every pixel is seen,
     * the same to the bit as a plane of ones, and 4 bytes a pixel less to
     * fill and read. */
    const bool alpha = med_channels(img) == 2 || med_channels(img) == 4;
    p->y = ct_mallocarray(ctx, n, sizeof *p->y);
    if (alpha) {
        p->wt = ct_mallocarray(ctx, n, sizeof *p->wt);
    }
    if (p->y == NULL || (alpha && p->wt == NULL)) {
        planes_free(p);
        return CT_ERR_NOMEM;
    }
    ct_status st = med_luma_mt(ctx, img, p->y, NULL, NULL, p->wt, ct_image_threads());
    if (st != CT_OK) {
        planes_free(p);
    }
    return st;
}

/* ---- shared with video.c (declared in api_int.h) ---- */

ct_status api_temp_name(ct_ctx *ctx, const char *path, bool dir, char **out)
{
    char *a = ct_strdup(ctx, path), *b = ct_strdup(ctx, path);
    ct_status st = CT_OK;
    *out = NULL;
    if (a == NULL || b == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    const char *d = dirname(a), *base = basename(b);
    const char *ext = dir ? NULL : strrchr(base, '.');
    if (ext == NULL) {
        ext = "";
    }
    size_t n = strlen(d) + strlen(base) + strlen(ext) + 16;
    char *t = ct_malloc(ctx, n);
    if (t == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    snprintf(t, n, "%s/.%s.XXXXXX%s", d, base, ext);
    if (dir) {
        if (mkdtemp(t) == NULL) {
            st = ct_fail(ctx, CT_ERR_IO, "%s: cannot create a folder there: %s", path,
                         strerror(errno));
            free(t);
            goto done;
        }
    } else {
        int fd = mkstemps(t, (int)strlen(ext));
        if (fd < 0) {
            st = ct_fail(ctx, CT_ERR_IO, "%s: cannot create a file there: %s", path,
                         strerror(errno));
            free(t);
            goto done;
        }
        close(fd);
    }
    *out = t;
done:
    free(a);
    free(b);
    return st;
}

void api_sync_dir_of(const char *path)
{
    char *a = strdup(path);
    if (a == NULL) {
        return;
    }
    int fd = open(dirname(a), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(a);
}

bool api_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) {
        return false;
    }
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

ct_status api_embed_begin(ct_ctx *ctx, const char *vendor, const char *input, const char *output,
                          const char *asset, const char *by, double strength, ct_vendor *v,
                          uint8_t sync_key[WM_KEYBYTES], uint8_t vkey[WM_KEYBYTES],
                          sto_record *rec)
{
    if (strcmp(input, output) == 0 || api_same_file(input, output)) {
        return ct_fail(ctx, CT_ERR_MISUSE, "%s: refusing to overwrite the original with its "
                                           "marked copy", output);
    }
    ct_status st = ct_vendor_find(ctx, vendor, v);
    if (st != CT_OK) {
        return st;
    }
    if (v->revoked_at != 0) {
        return ct_fail(ctx, CT_ERR_MISUSE, "vendor '%s' is revoked and can no longer receive "
                                           "assets", v->name);
    }
    st = key_derive_sync(ctx, sync_key);
    if (st == CT_OK) {
        st = key_derive_mark(ctx, v->id, v->epoch, vkey);
    }
    if (st == CT_OK) {
        st = api_record_fill(ctx, v, input, asset, by, strength, rec);
    }
    return st;
}

/* The temporary's fsync, on a thread beside the ledger's commit. */
typedef struct sync_task {
    const char *path;
    int err;
} sync_task;

static void sync_run(void *arg)
{
    sync_task *t = arg;
    t->err = ldg_fsync_path(t->path);
}

ct_status api_embed_commit(ct_ctx *ctx, const ct_vendor *v, sto_record *rec, char **tmp,
                           const char *output, bool sync_tmp, ct_embed_result *out)
{
    /* The bytes and the record do not wait for each other: both only
     * have to be durable before the rename, which is what makes the
     * output exist. Side by side they save about 0.4 ms of the 4 ms the
     * two flushes, the commit and the rename took one after the other
     * (1080p JPEG, the 2-core test VM). */
    sync_task sy = {*tmp, 0};
    ct_task sync_tk = {0};
    if (sync_tmp) {
        ct_task_start(&sync_tk, ct_image_threads(), sync_run, &sy);
    }
    ct_status st = ldg_issue(ctx, rec);
    ct_task_join(&sync_tk);
    if (st != CT_OK) {
        return st;
    }
    /* A failed flush or rename: the record is committed, its file never
     * appears. */
    int e = sy.err != 0 ? sy.err : (rename(*tmp, output) != 0 ? errno : 0);
    if (e != 0) {
        return ct_fail(ctx, CT_ERR_IO, "%s: %s (ledger record %" PRIu64 " names a file that was "
                       "not written)", output, strerror(e), rec->id);
    }
    api_sync_dir_of(output);
    free(*tmp);
    *tmp = NULL;
    out->record_id = rec->id;
    out->vendor_id = v->id;
    memcpy(out->vendor, v->name, sizeof out->vendor);
    out->serial = rec->serial;
    return CT_OK;
}

ct_status api_record_fill(ct_ctx *ctx, const ct_vendor *v, const char *input,
                             const char *asset, const char *by, double strength,
                             sto_record *rec)
{
    ct_status st;
    memset(rec, 0, sizeof *rec);
    if (asset == NULL) {
        char *copy = ct_strdup(ctx, input);
        if (copy == NULL) {
            return CT_ERR_NOMEM;
        }
        /* a folder given as "frames/" is still named "frames" */
        size_t n = strlen(copy);
        while (n > 1 && copy[n - 1] == '/') {
            copy[--n] = '\0';
        }
        const char *slash = strrchr(copy, '/');
        const char *base = slash != NULL ? slash + 1 : copy;
        st = ldg_check_text(ctx, "asset name", base, sizeof rec->asset);
        if (st == CT_OK) {
            memcpy(rec->asset, base, strlen(base) + 1);
        }
        free(copy);
    } else {
        st = ldg_check_text(ctx, "asset name", asset, sizeof rec->asset);
        if (st == CT_OK) {
            memcpy(rec->asset, asset, strlen(asset) + 1);
        }
    }
    if (st == CT_OK && by != NULL) {
        st = ldg_check_text(ctx, "operator", by, sizeof rec->issued_by);
    }
    if (st != CT_OK) {
        return st;
    }
    if (by != NULL) {
        memcpy(rec->issued_by, by, strlen(by) + 1);
    } else {
        ldg_operator(rec->issued_by);
    }
    char *real = realpath(input, NULL);
    if (real != NULL && strlen(real) < sizeof rec->original && ldg_text_ok(real)) {
        memcpy(rec->original, real, strlen(real) + 1);
    }
    free(real);
    rec->vendor_id = v->id;
    memcpy(rec->vendor, v->name, sizeof rec->vendor);
    rec->algo_version = WM_ALGO_VERSION;
    rec->strength = strength;
    rec->issued_at = (int64_t)time(NULL);
    return CT_OK;
}

ct_status api_all_keys(ct_ctx *ctx, vfy_key **out, size_t *n, ct_vendor **vendors,
                          size_t *nv)
{
    ct_status st;
    size_t total = 0, k = 0;
    *out = NULL;
    *n = 0;
    st = ct_vendor_list(ctx, vendors, nv);
    if (st != CT_OK) {
        return st;
    }
    for (size_t i = 0; i < *nv; i++) {
        if (!ct_add(&total, total, (*vendors)[i].epoch)) {
            return ct_fail(ctx, CT_ERR_LIMIT, "too many vendor keys");
        }
    }
    if (total == 0) {
        return CT_OK;
    }
    vfy_key *keys = sodium_allocarray(total, sizeof *keys);
    if (keys == NULL) {
        return ct_fail(ctx, CT_ERR_NOMEM, "out of memory for vendor keys");
    }
    memset(keys, 0, total * sizeof *keys);
    for (size_t i = 0; i < *nv; i++) {
        for (uint32_t e = 1; e <= (*vendors)[i].epoch; e++) {
            keys[k].vendor_id = (*vendors)[i].id;
            keys[k].epoch = e;
            uint32_t *issued = NULL;
            st = key_derive_mark(ctx, keys[k].vendor_id, e, keys[k].key);
            if (st == CT_OK) {
                st = sto_vendor_serials(ctx, keys[k].vendor_id, &issued, &keys[k].nissued);
            }
            keys[k].issued = issued;
            k++;
            if (st != CT_OK) {
                api_keys_free(keys, k);
                return st;
            }
        }
    }
    *out = keys;
    *n = k;
    return CT_OK;
}

void api_keys_free(vfy_key *keys, size_t n)
{
    if (keys == NULL) {
        return;
    }
    for (size_t k = 0; k < n; k++) {
        free((void *)keys[k].issued);
    }
    sodium_free(keys);
}

/* The self-check of a small image's mark: the marked luma (y + the
 * realised change) folded at the tile's own map, as a blind verify of the
 * untouched copy would see it, and the payload's z there (decoded, or the
 * issued codeword's correlation). It costs about 60 ms a megapixel (the
 * whitening), so it runs where the risk is: small images, the ones that
 * may carry too little evidence (under 0.5 MP). */
static ct_status blind_check(ct_ctx *ctx, const wm_plane *wp, const float *delta,
                             const uint8_t sync_key[WM_KEYBYTES],
                             const uint8_t vkey[WM_KEYBYTES], const ct_vendor *v,
                             uint32_t serial, ct_embed_result *out)
{
    size_t n = (size_t)wp->w * wp->h;
    if (n > CT_BLIND_CHECK_MAX_PIXELS) {
        return CT_OK;
    }
    float *y = ct_mallocarray(ctx, n, sizeof *y);
    if (y == NULL) {
        return CT_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        y[i] = wp->y[i] + delta[i];
    }
    vfy_geom g = vfy_geom_upright(wm_period_for(wp->w, wp->h));
    vfy_key k = {v->id, v->epoch, {0}, &serial, 1};
    memcpy(k.key, vkey, WM_KEYBYTES);
    vfy_input in = {wp->w, wp->h, y, wp->weight};
    vfy_result r;
    ct_status st = vfy_try_geometry(ctx, &in, sync_key, &k, 1, &g, &r);
    sodium_memzero(k.key, sizeof k.key);
    free(y);
    if (st == CT_OK) {
        out->blind_checked = 1;
        out->blind_z = r.nhits > 0 ? r.hits[0].msg_z : fmax(r.issued_z, 0.0);
    }
    return st;
}

/* What runs beside the decode: the input's hash. */
typedef struct hash_task {
    const char *path;
    uint8_t sha[STO_HASH_BYTES];
    int err;
    atomic_bool stop; /* set when the embed fails: no wait on a huge input */
} hash_task;

static void hash_run(void *arg)
{
    hash_task *t = arg;
    t->err = ldg_sha256_path(t->path, false, &t->stop, t->sha);
}

/* What runs beside the encode: the quality of the realised change and the
 * perceptual hash of the original, both read-only on planes the encoder
 * does not touch. */
typedef struct measure_task {
    wm_plane wp;
    const float *delta;
    double psnr, ssim;
    uint64_t phash;
} measure_task;

static void measure_run(void *arg)
{
    measure_task *t = arg;
    wm_quality(&t->wp, t->delta, &t->psnr, &t->ssim);
    t->phash = ldg_dhash(t->wp.y, t->wp.w, t->wp.h);
}

ct_status ct_embed_file(ct_ctx *ctx, const char *vendor, const char *input, const char *output,
                        const ct_embed_opts *opts, ct_embed_result *out)
{
    ct_status st;
    ct_vendor v;
    med_image *img = NULL;
    planes pl = {0};
    float *delta = NULL;
    char *tmp = NULL;
    uint8_t sync_key[WM_KEYBYTES], vkey[WM_KEYBYTES];
    sto_record rec;
    uint32_t serial = 0;
    double strength = opts != NULL && opts->strength > 0 ? opts->strength : 1.0;
    med_write_opts wo = {.jpeg_quality = opts != NULL ? opts->jpeg_quality : 0,
                         .threads = ct_image_threads()};
    ct_task hash_tk = {0}, meas_tk = {0};
    hash_task hash_in = {0};
    ldg_hash_stream *out_hs = NULL;
    measure_task meas = {0};
    atomic_init(&hash_in.stop, false);

    memset(out, 0, sizeof *out);
    out->strength = strength;
    if (ct_media_kind_of(input) != CT_MEDIA_IMAGE) { /* api/video.c */
        ct_video_opts vo = {0};
        if (opts != NULL) {
            vo.strength = opts->strength;
            vo.asset = opts->asset;
            vo.issued_by = opts->issued_by;
        }
        return ct_embed_video(ctx, vendor, input, output, &vo, out);
    }
    struct stat isb;
    if (stat(input, &isb) == 0 && S_ISDIR(isb.st_mode)) {
        return ct_fail(ctx, CT_ERR_MISUSE,
                       "%s: a folder, but not a frame sequence (two or more PNG or JPEG "
                       "frames whose names differ only in their number, nothing else)",
                       input);
    }
    if (strength < 0.25 || strength > 4.0 || !isfinite(strength)) {
        return ct_fail(ctx, CT_ERR_MISUSE, "strength must be between 0.25 and 4");
    }
    if (wo.jpeg_quality < 0 || wo.jpeg_quality > 100) {
        return ct_fail(ctx, CT_ERR_MISUSE, "JPEG quality must be between 1 and 100");
    }
    const char *oext = strrchr(output, '.');
    const char *oslash = strrchr(output, '/');
    if (oext == NULL || (oslash != NULL && oext < oslash) ||
        (strcasecmp(oext, ".png") != 0 && strcasecmp(oext, ".jpg") != 0 &&
         strcasecmp(oext, ".jpeg") != 0)) {
        return ct_fail(ctx, CT_ERR_MISUSE, "%s: the output must end in .png, .jpg or .jpeg",
                       output);
    }
    st = api_embed_begin(ctx, vendor, input, output, opts != NULL ? opts->asset : NULL,
                         opts != NULL ? opts->issued_by : NULL, strength, &v, sync_key, vkey,
                         &rec);
    if (st != CT_OK) {
        goto done;
    }
    /* The temporary first: an output folder we cannot write to should
     * fail before the ledger is touched (a serial claimed). */
    st = api_temp_name(ctx, output, false, &tmp);
    if (st != CT_OK) {
        goto done;
    }
    hash_in.path = input;
    ct_task_start(&hash_tk, ct_image_threads(), hash_run, &hash_in);
    /* oext was checked above: .png, .jpg or .jpeg. */
    const bool png_out = strcasecmp(oext, ".png") == 0;
    /* A JPEG that becomes a JPEG is marked in its own Y'CbCr: only Y
     * changes. With its own tables (no --quality) the change goes straight
     * into its Y coefficients: no second generation of JPEG loss, chroma
     * and tables untouched, and no DCT of the whole image. At another
     * quality the planes are encoded again. */
    const unsigned rflags = png_out ? 0u : (wo.jpeg_quality == 0 ? MED_READ_COEF : MED_READ_YCC);
    st = med_read_file_as(ctx, input, rflags, &img);
    if (st != CT_OK) {
        goto done;
    }
    st = planes_of(ctx, img, &pl);
    if (st != CT_OK) {
        goto done;
    }
    uint32_t w = med_width(img), h = med_height(img);
    /* The serial the mark carries is claimed before marking; a crash
     * later only wastes it. */
    st = ldg_claim_serial(ctx, &serial);
    if (st != CT_OK) {
        goto done;
    }
    rec.serial = serial;
    delta = ct_mallocarray(ctx, (size_t)w * h, sizeof *delta);
    if (delta == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    /* Fractional luma over the colour channels only pays for lossless
     * output: a JPEG encoder rounds luma to whole levels again. */
    bool split = png_out && med_depth(img) == 8 && med_channels(img) >= 3;
    wm_plane wp = {w, h, pl.y, NULL, NULL, pl.wt, med_depth(img) == 16 || split,
                   ct_image_threads(), med_rooms_row, img};
    wm_embed_params prm = {.strength = strength, .serial = serial};
    st = wm_embed(ctx, &wp, sync_key, vkey, &prm, delta);
    if (st != CT_OK) {
        goto done;
    }
    st = med_realize_luma(ctx, img, delta, split, wp.threads);
    if (st != CT_OK) {
        goto done;
    }
    st = blind_check(ctx, &wp, delta, sync_key, vkey, &v, serial, out);
    if (st != CT_OK) {
        goto done;
    }
    /* Quality of what was written (delta now holds it), not of what was
     * asked for; measured while the encoder runs, on the threads it
     * leaves free. */
    meas.wp = wp;
    meas.wp.threads = wp.threads > 1 ? wp.threads - 1 : 1;
    meas.delta = delta;
    ct_task_start(&meas_tk, wp.threads, measure_run, &meas);
    /* The output's hash is taken from the bytes as the encoder writes
     * them, on a thread beside it: exactly the bytes of the file. */
    st = ldg_hash_stream_start(ctx, wp.threads, &out_hs);
    if (st == CT_OK) {
        wo.tap = ldg_hash_stream_feed;
        wo.tap_user = out_hs;
        st = med_write_file(ctx, img, tmp, &wo);
    }
    ldg_hash_stream_end(out_hs, st == CT_OK ? rec.output_sha256 : NULL);
    out_hs = NULL;
    ct_task_join(&meas_tk);
    if (st != CT_OK) {
        goto done;
    }
    out->psnr = meas.psnr;
    out->ssim = meas.ssim;
    for (int i = 0; i < 8; i++) {
        rec.phash[i] = (uint8_t)(meas.phash >> (56 - 8 * i));
    }
    ct_task_join(&hash_tk);
    st = ldg_sha256_status(ctx, input, hash_in.err);
    if (st != CT_OK) {
        goto done;
    }
    memcpy(rec.input_sha256, hash_in.sha, sizeof rec.input_sha256);
    /* No file without its record. The order makes every crash safe:
     *   1. the marked bytes are written under a hidden temporary name
     *      (.NAME.XXXXXX.ext: never an output);
     *   2. at once, those bytes are flushed to disk and the record, with
     *      the hash of exactly those bytes, is committed (one transaction:
     *      chain, signature, head; synchronous=FULL);
     *   3. only when both are durable is the temporary renamed to the
     *      output name.
     * A crash before 3 leaves at most a temporary, a claimed serial and
     * perhaps a record whose file never appeared (as does a failed flush
     * or rename). We accept that rather than delete the record: a record
     * without its file is harmless (it names a copy that was never handed
     * over), the chain is append-only, and a compensating delete could
     * itself be lost to a crash. An output without its record, or with
     * bytes that did not reach the disk, can never exist. */
    st = api_embed_commit(ctx, &v, &rec, &tmp, output, true, out);
    if (st != CT_OK) {
        goto done;
    }
    out->width = w;
    out->height = h;
    if (out->blind_checked) {
        /* What a blind verify will demand of this serial: the threshold
         * of the issued-serial tests with the ledger as it now stands
         * (record ids count the records). */
        out->blind_z_needed = vfy_issued_z_min(out->record_id);
    }
done:
    /* Neither task may outlive what it reads. */
    if (st != CT_OK) {
        atomic_store(&hash_in.stop, true);
    }
    ct_task_join(&hash_tk);
    ct_task_join(&meas_tk);
    if (tmp != NULL) {
        unlink(tmp);
        free(tmp);
    }
    sodium_memzero(sync_key, sizeof sync_key);
    sodium_memzero(vkey, sizeof vkey);
    med_image_free(img);
    planes_free(&pl);
    free(delta);
    if (st != CT_OK) {
        memset(out, 0, sizeof *out);
    }
    return st;
}

ct_status ct_verify_file(ct_ctx *ctx, const char *path, ct_verdict *out)
{
    ct_status st;
    med_image *img = NULL;
    planes pl = {0};
    vfy_key *keys = NULL;
    ct_vendor *vendors = NULL;
    size_t nkeys = 0, nv = 0;
    uint8_t sync_key[WM_KEYBYTES];
    vfy_result res;

    memset(out, 0, sizeof *out);
    if (ct_media_kind_of(path) != CT_MEDIA_IMAGE) { /* api/video.c */
        return ct_verify_video(ctx, path, 0, out);
    }
    st = key_derive_sync(ctx, sync_key);
    if (st != CT_OK) {
        goto done;
    }
    st = api_all_keys(ctx, &keys, &nkeys, &vendors, &nv);
    if (st != CT_OK) {
        goto done;
    }
    st = med_read_file(ctx, path, &img);
    if (st != CT_OK) {
        goto done;
    }
    st = planes_of(ctx, img, &pl);
    if (st != CT_OK) {
        goto done;
    }
    out->width = med_width(img);
    out->height = med_height(img);
    vfy_input in = {out->width, out->height, pl.y, pl.wt};
    st = vfy_detect(ctx, &in, sync_key, keys, nkeys, &res);
    if (st != CT_OK) {
        goto done;
    }
    out->false_positive_probability = res.false_positive_probability;
    out->sync_z = res.sync_z;
    out->period = res.period;
    out->angle = res.angle;
    out->mirrored = res.mirrored;
    out->trials = res.trials;
    out->issued_tests = res.issued_tests;
    out->payload_issued = res.nhits > 0 && res.hits[0].issued;
    for (int i = 0; i < res.nhits && out->nvendors < CT_MAX_COLLUDERS; i++) {
        out->vendor_ids[out->nvendors] = res.hits[i].vendor_id;
        out->serials[out->nvendors] = res.hits[i].serial;
        out->nvendors++;
    }
    if (res.nhits > 0) {
        out->identified = 1;
        out->named_by = CT_NAMED_BLIND;
        out->vendor_id = res.hits[0].vendor_id;
        out->epoch = res.hits[0].epoch;
        out->serial = res.hits[0].serial;
        out->msg_z = res.hits[0].msg_z;
        for (size_t i = 0; i < nv; i++) {
            if (vendors[i].id == out->vendor_id) {
                memcpy(out->vendor, vendors[i].name, sizeof out->vendor);
            }
        }
        /* The issue behind the mark; a file marked before the ledger
         * existed (or by another home) has none. */
        st = ldg_find_serial(ctx, out->serial, out->vendor_id, &out->record, &out->has_record);
        if (st != CT_OK) {
            goto done;
        }
    }
done:
    sodium_memzero(sync_key, sizeof sync_key);
    api_keys_free(keys, nkeys);
    free(vendors);
    med_image_free(img);
    planes_free(&pl);
    return st;
}

ct_status ct_verdict_json(const char *file, const ct_verdict *v, char **out)
{
    ct_status st;
    json_t *o = json_object();
    json_t *all = json_array();
    *out = NULL;
    if (o == NULL || all == NULL) {
        json_decref(o);
        json_decref(all);
        return CT_ERR_NOMEM;
    }
    json_object_set_new(o, "file", json_string(file));
    json_object_set_new(o, "status", json_string(v->identified ? "identified" : "not_found"));
    json_object_set_new(o, "vendor", v->identified ? json_string(v->vendor) : json_null());
    json_object_set_new(o, "vendor_id",
                        v->identified ? json_integer((json_int_t)v->vendor_id) : json_null());
    json_object_set_new(o, "false_positive_probability",
                        v->identified ? json_real(v->false_positive_probability) : json_null());
    json_object_set_new(o, "serial",
                        v->identified ? json_integer((json_int_t)v->serial) : json_null());
    for (int i = 0; i < v->nvendors; i++) {
        json_array_append_new(all, json_pack("{s:I, s:I}", "vendor_id",
                                             (json_int_t)v->vendor_ids[i], "serial",
                                             (json_int_t)v->serials[i]));
    }
    json_object_set_new(o, "marks", all);
    json_object_set_new(o, "sync_z", json_real(round(v->sync_z * 100) / 100));
    json_object_set_new(o, "payload_z", json_real(round(v->msg_z * 100) / 100));
    /* decoded: the 80 bits came back and authenticated; issued: the
     * codeword of a serial the ledger issued matched (detect.c) */
    json_object_set_new(o, "payload", v->identified && v->named_by != CT_NAMED_INFORMED
                                          ? json_string(v->payload_issued ? "issued" : "decoded")
                                          : json_null());
    json_object_set_new(o, "issued_tests", json_integer((json_int_t)v->issued_tests));
    json_object_set_new(o, "period_px", json_real(round(v->period * 100) / 100));
    json_object_set_new(o, "angle_deg", json_real(round(v->angle * 100) / 100));
    json_object_set_new(o, "mirrored", json_boolean(v->mirrored));
    json_object_set_new(o, "trials", json_integer((json_int_t)v->trials));
    json_object_set_new(o, "algorithm", json_integer(WM_ALGO_VERSION));
    if (v->frames_used > 0) { /* video or frame sequence (api/video.c) */
        json_object_set_new(o, "frames_used", json_integer((json_int_t)v->frames_used));
        json_object_set_new(o, "time_first_s", json_real(round(v->time_first * 1000) / 1000));
        json_object_set_new(o, "time_last_s", json_real(round(v->time_last * 1000) / 1000));
        json_object_set_new(o, "evidence",
                            json_string(v->evidence == 2 ? "single_frame" : "frame_average"));
    }
    st = api_informed_json(o, v);
    if (st != CT_OK) {
        json_decref(o);
        return st;
    }
    json_t *rec = json_null();
    if (v->identified && v->has_record) {
        rec = ldg_record_object(&v->record, 1);
    }
    if (rec == NULL || json_object_set_new(o, "record", rec) != 0) {
        json_decref(o);
        return CT_ERR_NOMEM;
    }
    *out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    return *out == NULL ? CT_ERR_NOMEM : CT_OK;
}

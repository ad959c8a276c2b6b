/* api: ct_verify_file_opts, blind detection followed by informed
 * detection against the issued originals of the ledger.
 *
 * Order of work, so that a file with no original stays cheap:
 *  1. blind detection (ct_verify_file);
 *  2. the ledger's records grouped by original (input_sha256); only
 *     records whose signature verifies take part (an edited record must
 *     not be able to aim the test at a vendor);
 *  3. originals ordered by the Hamming distance of their dHash to the
 *     suspect's, located on disk (record path, then --originals by name,
 *     then by SHA-256 of every file there) and checked by SHA-256;
 *  4. each registered to the suspect (verify/register.c) until one
 *     matches clearly; at most max_originals are tried;
 *  5. on the best match, every recipient (record x key epoch) is tested
 *     (verify/recipients.c) and the probabilities multiplied by the number
 *     of tests made. */
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "core/core.h"
#include "keys/keys.h"
#include "ledger/ledger.h"
#include "media/media.h"
#include "verify/informed.h"
#include "watermark/wm.h"
#include "api/api_int.h"

/* Scores at which the search stops looking at further originals. */
#define MATCH_SURE 0.75
/* A vendor is named at this family-wise false-positive probability. */
#define NAME_FPP 1e-9
/* ... and only if no other vendor comes within this many decoy sigmas
 * without being significant on its own. */
#define CLEAR_MARGIN 3.0
#define SCAN_FILES_MAX 4096

typedef struct group {
    size_t first;       /* index of its first record */
    int dist;           /* dHash Hamming distance to the suspect */
} group;

typedef struct found_file {
    char *path;
    uint8_t sha[32];
    bool hashed;
} found_file;

typedef struct scan {
    bool done;
    found_file *f;
    size_t n, cap;
} scan;

static void scan_free(scan *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->f[i].path);
    }
    free(s->f);
    memset(s, 0, sizeof *s);
}

static void scan_dir(scan *s, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL && s->n < SCAN_FILES_MAX) {
        if (e->d_name[0] == '.') {
            continue;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(len);
        if (p == NULL) {
            break;
        }
        snprintf(p, len, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode) && depth < 1) {
            scan_dir(s, p, depth + 1);
            free(p);
        } else if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
            if (s->n == s->cap) {
                size_t nc = s->cap ? 2 * s->cap : 64;
                found_file *nf = realloc(s->f, nc * sizeof *nf);
                if (nf == NULL) {
                    free(p);
                    break;
                }
                s->f = nf;
                s->cap = nc;
            }
            s->f[s->n].path = p;
            s->f[s->n].hashed = false;
            s->n++;
        } else {
            free(p);
        }
    }
    closedir(d);
}

static bool sha_is(ct_ctx *ctx, const char *path, const char *hexsha)
{
    uint8_t sha[32];
    char hx[65];
    if (ldg_sha256_file(ctx, path, false, sha) != CT_OK) {
        return false;
    }
    sodium_bin2hex(hx, sizeof hx, sha, sizeof sha);
    return strcmp(hx, hexsha) == 0;
}

/* Where the original of record r is: *out (caller frees) or NULL. */
static char *locate(ct_ctx *ctx, const ct_record *r, const char *dir, scan *sc)
{
    char *p = NULL;
    if (r->original[0] != '\0' && sha_is(ctx, r->original, r->input_sha256)) {
        return ct_strdup(ctx, r->original);
    }
    if (dir == NULL) {
        return NULL;
    }
    /* by name: the original's base name, then the asset name */
    const char *names[2] = {strrchr(r->original, '/'), r->asset};
    names[0] = names[0] != NULL ? names[0] + 1 : (r->original[0] ? r->original : NULL);
    for (int i = 0; i < 2; i++) {
        if (names[i] == NULL || names[i][0] == '\0' || strchr(names[i], '/') != NULL) {
            continue;
        }
        size_t len = strlen(dir) + strlen(names[i]) + 2;
        p = ct_malloc(ctx, len);
        if (p == NULL) {
            return NULL;
        }
        snprintf(p, len, "%s/%s", dir, names[i]);
        if (sha_is(ctx, p, r->input_sha256)) {
            return p;
        }
        free(p);
        p = NULL;
    }
    /* by content: every file of the folder hashed once per call */
    if (!sc->done) {
        scan_dir(sc, dir, 0);
        sc->done = true;
    }
    uint8_t want[32];
    if (sodium_hex2bin(want, sizeof want, r->input_sha256, strlen(r->input_sha256), NULL, NULL,
                       NULL) != 0) {
        return NULL;
    }
    for (size_t i = 0; i < sc->n; i++) {
        if (!sc->f[i].hashed) {
            if (ldg_sha256_file(ctx, sc->f[i].path, false, sc->f[i].sha) != CT_OK) {
                memset(sc->f[i].sha, 0, sizeof sc->f[i].sha);
            }
            sc->f[i].hashed = true;
        }
        if (memcmp(sc->f[i].sha, want, sizeof want) == 0) {
            return ct_strdup(ctx, sc->f[i].path);
        }
    }
    return NULL;
}

/* Luma planes of an image, and the luma flattened onto white. */
typedef struct lplanes {
    uint32_t w, h;
    float *y, *up, *down, *wt, *flat;
    bool fine;
} lplanes;

static void lplanes_free(lplanes *p)
{
    free(p->y);
    free(p->up);
    free(p->down);
    free(p->wt);
    free(p->flat);
    memset(p, 0, sizeof *p);
}

static ct_status lplanes_read(ct_ctx *ctx, const char *path, bool rooms, lplanes *p)
{
    med_image *img = NULL;
    size_t n;
    memset(p, 0, sizeof *p);
    ct_status st = med_read_file(ctx, path, &img);
    if (st != CT_OK) {
        return st;
    }
    p->w = med_width(img);
    p->h = med_height(img);
    /* As embed decides for a PNG output (api.c): fractional luma when the
     * output can hold it. A JPEG original is assumed to go out as JPEG. */
    p->fine = med_depth(img) == 16 ||
              (med_image_kind(img) == MED_KIND_PNG && med_channels(img) >= 3);
    if (!ct_mul(&n, p->w, p->h)) {
        st = ct_fail(ctx, CT_ERR_LIMIT, "%s: image too large", path);
        goto done;
    }
    p->y = ct_mallocarray(ctx, n, sizeof *p->y);
    p->wt = ct_mallocarray(ctx, n, sizeof *p->wt);
    p->flat = ct_mallocarray(ctx, n, sizeof *p->flat);
    if (rooms) {
        p->up = ct_mallocarray(ctx, n, sizeof *p->up);
        p->down = ct_mallocarray(ctx, n, sizeof *p->down);
    }
    if (p->y == NULL || p->wt == NULL || p->flat == NULL ||
        (rooms && (p->up == NULL || p->down == NULL))) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    st = med_luma(ctx, img, p->y, p->up, p->down, p->wt);
    if (st != CT_OK) {
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        p->flat[i] = p->wt[i] * p->y[i] + (1.0f - p->wt[i]) * 255.0f;
    }
done:
    med_image_free(img);
    if (st != CT_OK) {
        lplanes_free(p);
    }
    return st;
}

static int phash_dist(const char *hexph, uint64_t h)
{
    uint8_t b[8];
    if (sodium_hex2bin(b, sizeof b, hexph, strlen(hexph), NULL, NULL, NULL) != 0) {
        return 64;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | b[i];
    }
    return __builtin_popcountll(v ^ h);
}

static int cmp_group(const void *a, const void *b)
{
    const group *x = a, *y = b;
    if (x->dist != y->dist) {
        return x->dist < y->dist ? -1 : 1;
    }
    return x->first < y->first ? -1 : (x->first > y->first);
}

static int cmp_score(const void *a, const void *b)
{
    const ct_recipient_score *x = a, *y = b;
    return x->z > y->z ? -1 : (x->z < y->z);
}

/* A record takes part when it is of this original, its signature holds
 * and its mark is the algorithm this library embeds (an older pattern
 * would not be regenerated exactly). */
static bool usable(const ct_record *r, const char *sha)
{
    return strcmp(r->input_sha256, sha) == 0 && r->signature_valid &&
           r->algo_version == WM_ALGO_VERSION;
}

/* How many key epochs the vendor has had (1 if it is not in the list). */
static uint32_t epochs_of(const ct_vendor *vendors, size_t nv, uint32_t vendor_id)
{
    uint32_t ne = 1;
    for (size_t v = 0; v < nv; v++) {
        if (vendors[v].id == vendor_id) {
            ne = vendors[v].epoch;
        }
    }
    return ne;
}

/* Test every recipient of the original o (records with its input_sha256)
 * and name a vendor if one stands out; fills out->informed and, when a
 * vendor is named and the blind path named none, the verdict. */
static ct_status test_recipients(ct_ctx *ctx, const lplanes *o, const lplanes *sus,
                                 const vfy_reg *g, const ct_record *recs, size_t nrec,
                                 const char *sha, const ct_vendor *vendors, size_t nv,
                                 ct_verdict *out)
{
    ct_status st = CT_OK;
    vfy_recipient *rc = NULL;
    size_t *which = NULL;
    uint32_t *epochs = NULL;
    size_t nrc = 0, cap = 0;
    uint8_t sync_key[WM_KEYBYTES];
    ct_record *rec = NULL;
    ct_recipient_score *all = NULL;

    st = key_derive_sync(ctx, sync_key);
    if (st != CT_OK) {
        goto done;
    }
    for (size_t i = 0; i < nrec; i++) {
        if (!usable(&recs[i], sha)) {
            continue;
        }
        uint32_t ne = epochs_of(vendors, nv, recs[i].vendor_id);
        if (!ct_add(&cap, cap, ne)) {
            st = ct_fail(ctx, CT_ERR_LIMIT, "too many recipients");
            goto done;
        }
    }
    if (cap == 0) {
        goto done;
    }
    rc = sodium_allocarray(cap, sizeof *rc);
    which = ct_mallocarray(ctx, cap, sizeof *which);
    epochs = ct_mallocarray(ctx, cap, sizeof *epochs);
    all = ct_mallocarray(ctx, cap, sizeof *all);
    if (rc == NULL || which == NULL || epochs == NULL || all == NULL) {
        st = ct_fail(ctx, CT_ERR_NOMEM, "out of memory for the recipients");
        goto done;
    }
    /* The record does not say which key epoch marked it: each epoch the
     * vendor has had is one more hypothesis (and one more test). */
    for (size_t i = 0; i < nrec; i++) {
        if (!usable(&recs[i], sha)) {
            continue;
        }
        uint32_t ne = epochs_of(vendors, nv, recs[i].vendor_id);
        for (uint32_t e = 1; e <= ne && nrc < cap; e++) {
            st = key_derive_mark(ctx, recs[i].vendor_id, e, rc[nrc].key);
            if (st != CT_OK) {
                goto done;
            }
            rc[nrc].serial = recs[i].serial;
            rc[nrc].strength = recs[i].strength > 0 ? recs[i].strength : 1.0;
            which[nrc] = i;
            epochs[nrc] = e;
            nrc++;
        }
    }
    vfy_original vo = {o->w, o->h, o->y, o->up, o->down, o->wt, o->fine, o->flat};
    vfy_gray vs = {sus->w, sus->h, sus->flat};
    vfy_informed_stats stats;
    st = vfy_informed(ctx, &vo, &vs, sync_key, g, rc, nrc, &stats);
    if (st != CT_OK) {
        goto done;
    }
    ct_informed *inf = &out->informed;
    inf->ran = stats.decoys > 0;
    inf->decoys = stats.decoys;
    inf->tests += nrc;
    for (size_t k = 0; k < nrc; k++) {
        const ct_record *r = &recs[which[k]];
        ct_recipient_score *s = &all[k];
        memset(s, 0, sizeof *s);
        s->record_id = r->id;
        s->vendor_id = r->vendor_id;
        s->epoch = epochs[k];
        memcpy(s->vendor, r->vendor, sizeof s->vendor);
        s->serial = r->serial;
        s->z = rc[k].z;
        s->false_positive_probability = fmin(1.0, rc[k].p * (double)inf->tests);
    }
    qsort(all, nrc, sizeof *all, cmp_score);
    inf->nrecipients = (int)(nrc < CT_MAX_RECIPIENTS ? nrc : CT_MAX_RECIPIENTS);
    memcpy(inf->recipients, all, (size_t)inf->nrecipients * sizeof *all);
    if (!inf->ran || nrc == 0) {
        goto done;
    }
    /* Name the best only if it is significant on its own and no other
     * vendor comes close without being significant too (two significant
     * vendors are two marks: copies combined). */
    const ct_recipient_score *best = &all[0];
    if (!(best->false_positive_probability <= NAME_FPP)) {
        goto done;
    }
    for (size_t k = 1; k < nrc; k++) {
        if (all[k].vendor_id != best->vendor_id &&
            all[k].false_positive_probability > NAME_FPP &&
            all[k].z > best->z - CLEAR_MARGIN) {
            goto done;
        }
    }
    inf->vendor_id = best->vendor_id;
    inf->false_positive_probability = best->false_positive_probability;
    if (out->identified) {
        goto done; /* the blind verdict stands */
    }
    rec = ct_malloc(ctx, sizeof *rec);
    if (rec == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < nrec; i++) {
        if (recs[i].id == best->record_id) {
            *rec = recs[i];
        }
    }
    out->identified = 1;
    out->named_by = CT_NAMED_INFORMED;
    out->vendor_id = best->vendor_id;
    memcpy(out->vendor, best->vendor, sizeof out->vendor);
    for (size_t v = 0; v < nv; v++) {
        if (vendors[v].id == best->vendor_id) {
            memcpy(out->vendor, vendors[v].name, sizeof out->vendor);
        }
    }
    out->epoch = best->epoch;
    out->serial = best->serial;
    out->false_positive_probability = best->false_positive_probability;
    out->has_record = 1;
    out->record = *rec;
    out->nvendors = 0;
    for (size_t k = 0; k < nrc && out->nvendors < CT_MAX_COLLUDERS; k++) {
        if (all[k].false_positive_probability > NAME_FPP) {
            continue;
        }
        bool dup = false;
        for (int j = 0; j < out->nvendors; j++) {
            dup = dup || out->vendor_ids[j] == all[k].vendor_id;
        }
        if (!dup) {
            out->vendor_ids[out->nvendors] = all[k].vendor_id;
            out->serials[out->nvendors] = all[k].serial;
            out->nvendors++;
        }
    }
done:
    sodium_memzero(sync_key, sizeof sync_key);
    if (rc != NULL) {
        sodium_free(rc);
    }
    free(which);
    free(epochs);
    free(all);
    free(rec);
    return st;
}

ct_status ct_verify_file_opts(ct_ctx *ctx, const char *path, const ct_verify_opts *opts,
                              ct_verdict *out)
{
    ct_status st;
    ct_record *recs = NULL;
    size_t nrec = 0, ngroups = 0, nv = 0;
    group *groups = NULL;
    ct_vendor *vendors = NULL;
    lplanes sus = {0}, orig = {0}, best_orig = {0};
    scan sc = {0};
    char *where = NULL;
    ct_informed_mode mode = opts != NULL ? opts->informed : CT_INFORMED_AUTO;
    int max_orig = opts != NULL && opts->max_originals > 0 ? opts->max_originals
                                                          : CT_DEFAULT_MAX_ORIGINALS;
    const char *dir = opts != NULL ? opts->originals : NULL;

    st = ct_verify_file(ctx, path, out);
    if (st != CT_OK || ct_media_kind_of(path) != CT_MEDIA_IMAGE || mode == CT_INFORMED_NEVER ||
        (mode == CT_INFORMED_AUTO && out->identified)) {
        return st;
    }
    st = ct_ledger_list(ctx, NULL, &recs, &nrec);
    if (st != CT_OK || nrec == 0) {
        goto done;
    }
    st = ct_vendor_list(ctx, &vendors, &nv);
    if (st != CT_OK) {
        goto done;
    }
    st = lplanes_read(ctx, path, false, &sus);
    if (st != CT_OK) {
        goto done;
    }
    uint64_t dh = ldg_dhash(sus.y, sus.w, sus.h);
    groups = ct_mallocarray(ctx, nrec, sizeof *groups);
    if (groups == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < nrec; i++) {
        bool seen = false;
        if (!recs[i].signature_valid || recs[i].input_sha256[0] == '\0') {
            continue;
        }
        for (size_t g = 0; g < ngroups && !seen; g++) {
            seen = strcmp(recs[groups[g].first].input_sha256, recs[i].input_sha256) == 0;
        }
        if (!seen) {
            groups[ngroups].first = i;
            groups[ngroups].dist = phash_dist(recs[i].phash, dh);
            ngroups++;
        }
    }
    qsort(groups, ngroups, sizeof *groups, cmp_group);
    vfy_gray vs = {sus.w, sus.h, sus.flat};
    vfy_reg best = {0};
    best.score = -1;
    const ct_record *best_rec = NULL;
    int tried = 0;
    for (size_t g = 0; g < ngroups && tried < max_orig; g++) {
        const ct_record *r = &recs[groups[g].first];
        /* any record of the group may hold a usable path */
        char *p = NULL;
        for (size_t i = groups[g].first; i < nrec && p == NULL; i++) {
            if (strcmp(recs[i].input_sha256, r->input_sha256) == 0 && recs[i].signature_valid) {
                p = locate(ctx, &recs[i], dir, &sc);
            }
        }
        if (p == NULL) {
            continue;
        }
        if (ct_media_kind_of(p) != CT_MEDIA_IMAGE || lplanes_read(ctx, p, true, &orig) != CT_OK) {
            free(p); /* a video original, or one that no longer reads: skip it */
            continue;
        }
        tried++;
        vfy_gray vo = {orig.w, orig.h, orig.flat};
        vfy_reg reg;
        st = vfy_register(ctx, &vo, &vs, &reg);
        if (st != CT_OK) {
            free(p);
            goto done;
        }
        if (reg.score > best.score) {
            best = reg;
            best_rec = r;
            free(where);
            where = p;
            p = NULL;
            lplanes_free(&best_orig);
            best_orig = orig;
            memset(&orig, 0, sizeof orig);
        }
        free(p);
        lplanes_free(&orig);
        if (best.score >= MATCH_SURE) {
            break;
        }
    }
    out->asset_match.originals_tried = tried;
    if (best_rec == NULL || best.score < CT_MATCH_MIN_SCORE) {
        goto done;
    }
    ct_asset_match *m = &out->asset_match;
    m->matched = 1;
    m->record_id = best_rec->id;
    memcpy(m->asset, best_rec->asset, sizeof m->asset);
    snprintf(m->original, sizeof m->original, "%s", where);
    memcpy(m->input_sha256, best_rec->input_sha256, sizeof m->input_sha256);
    m->score = best.score;
    m->scale = best.scale;
    m->x = best.ox;
    m->y = best.oy;
    m->mirrored = best.mirrored;
    st = test_recipients(ctx, &best_orig, &sus, &best, recs, nrec, best_rec->input_sha256,
                         vendors, nv, out);
done:
    free(recs);
    free(groups);
    free(vendors);
    free(where);
    lplanes_free(&sus);
    lplanes_free(&orig);
    lplanes_free(&best_orig);
    scan_free(&sc);
    return st;
}

static json_t *round_real(double v, double unit)
{
    return json_real(round(v / unit) * unit);
}

ct_status api_informed_json(json_t *o, const ct_verdict *v)
{
    ct_named_by by = v->named_by;
    if (v->identified && by == CT_NAMED_NONE) {
        by = CT_NAMED_BLIND; /* video verdicts: only the blind path exists */
    }
    int bad = json_object_set_new(o, "named_by",
                                  by == CT_NAMED_BLIND      ? json_string("blind")
                                  : by == CT_NAMED_INFORMED ? json_string("informed")
                                                            : json_null());
    const ct_asset_match *m = &v->asset_match;
    json_t *am = json_null();
    if (m->matched) {
        am = json_pack("{s:I, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:b, s:i}", "record_id",
                       (json_int_t)m->record_id, "asset", m->asset, "original", m->original,
                       "input_sha256", m->input_sha256, "score", round_real(m->score, 1e-4),
                       "scale", round_real(m->scale, 1e-5), "x", round_real(m->x, 0.01), "y",
                       round_real(m->y, 0.01), "mirrored", m->mirrored, "originals_tried",
                       m->originals_tried);
    }
    bad |= am == NULL || json_object_set_new(o, "asset_match", am) != 0;
    const ct_informed *inf = &v->informed;
    json_t *io = json_null();
    if (inf->ran) {
        json_t *arr = json_array();
        for (int i = 0; arr != NULL && i < inf->nrecipients; i++) {
            const ct_recipient_score *r = &inf->recipients[i];
            json_t *e = json_pack("{s:I, s:I, s:s, s:I, s:I, s:o, s:o}", "record_id",
                                  (json_int_t)r->record_id, "vendor_id",
                                  (json_int_t)r->vendor_id, "vendor", r->vendor, "epoch",
                                  (json_int_t)r->epoch, "serial", (json_int_t)r->serial, "z",
                                  round_real(r->z, 0.01), "false_positive_probability",
                                  json_real(r->false_positive_probability));
            bad |= e == NULL || json_array_append_new(arr, e) != 0;
        }
        const char *vname = NULL;
        for (int i = 0; i < inf->nrecipients; i++) {
            if (inf->recipients[i].vendor_id == inf->vendor_id) {
                vname = inf->recipients[i].vendor;
                break;
            }
        }
        io = arr == NULL ? NULL
                         : json_pack("{s:s, s:i, s:I, s:o, s:o, s:o, s:o}", "method",
                                     "registered residual correlation, decoy-calibrated",
                                     "decoys", inf->decoys, "tests", (json_int_t)inf->tests,
                                     "vendor", vname != NULL ? json_string(vname) : json_null(),
                                     "vendor_id",
                                     inf->vendor_id ? json_integer((json_int_t)inf->vendor_id)
                                                    : json_null(),
                                     "false_positive_probability",
                                     inf->vendor_id ? json_real(inf->false_positive_probability)
                                                    : json_null(),
                                     "recipients", arr);
    }
    bad |= io == NULL || json_object_set_new(o, "informed", io) != 0;
    return bad ? CT_ERR_NOMEM : CT_OK;
}

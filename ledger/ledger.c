/* ledger: the public API: list, get, verify, export, and the check of an
 * export that needs nothing but the studio public key. */
#include "ledger.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "keys/keys.h"

#define EXPORT_FORMAT   "celtrace-ledger"
#define EXPORT_LINE_MAX (1u << 20)

/* ---- JSON -------------------------------------------------------------- */

/* Stored texts are checked UTF-8 when written; one edited into something
 * else still prints (as "") and then fails its hash. */
static json_t *jstr(const char *s)
{
    json_t *j = json_string(s);
    return j != NULL ? j : json_string("");
}

json_t *ldg_record_object(const ct_record *r, int with_valid)
{
    char iso[32] = "";
    time_t t = (time_t)r->issued_at;
    struct tm tm;
    if (gmtime_r(&t, &tm) != NULL) {
        strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    int bad = 0;
    bad |= json_object_set_new(o, "id", json_integer((json_int_t)r->id));
    bad |= json_object_set_new(o, "serial", json_integer((json_int_t)r->serial));
    bad |= json_object_set_new(o, "vendor_id", json_integer((json_int_t)r->vendor_id));
    bad |= json_object_set_new(o, "vendor", jstr(r->vendor));
    bad |= json_object_set_new(o, "asset", jstr(r->asset));
    bad |= json_object_set_new(o, "original", jstr(r->original));
    bad |= json_object_set_new(o, "input_sha256", jstr(r->input_sha256));
    bad |= json_object_set_new(o, "phash", jstr(r->phash));
    bad |= json_object_set_new(o, "output_sha256", jstr(r->output_sha256));
    bad |= json_object_set_new(o, "algorithm", json_integer((json_int_t)r->algo_version));
    bad |= json_object_set_new(o, "strength", json_real(r->strength));
    bad |= json_object_set_new(o, "issued_at", json_integer((json_int_t)r->issued_at));
    bad |= json_object_set_new(o, "issued", jstr(iso));
    bad |= json_object_set_new(o, "operator", jstr(r->issued_by));
    bad |= json_object_set_new(o, "prev_hash", jstr(r->prev_hash));
    bad |= json_object_set_new(o, "record_hash", jstr(r->record_hash));
    bad |= json_object_set_new(o, "signature", jstr(r->signature));
    if (with_valid) {
        bad |= json_object_set_new(o, "signature_valid", json_boolean(r->signature_valid));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

ct_status ct_record_json(const ct_record *r, char **out)
{
    json_t *o = ldg_record_object(r, 1);
    *out = NULL;
    if (o == NULL) {
        return CT_ERR_NOMEM;
    }
    /* Default real precision (17 digits): the strength reads back to the
     * same double, which the record hash covers. */
    *out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return *out == NULL ? CT_ERR_NOMEM : CT_OK;
}

/* ---- reading ----------------------------------------------------------- */

static ct_status collect(ct_ctx *ctx, const sto_filter *f, size_t max, ct_record **out,
                         size_t *n)
{
    ct_status st;
    uint8_t pk[CT_PUBLICKEYBYTES];
    sto_iter *it = NULL;
    ct_record *all = NULL;
    size_t cap = 0, k = 0;
    sto_record r;

    *out = NULL;
    *n = 0;
    st = ct_public_key(ctx, pk, NULL);
    if (st != CT_OK) {
        return st;
    }
    st = sto_iter_open(ctx, f, &it);
    if (st != CT_OK) {
        return st;
    }
    while (k < max && (st = sto_iter_next(it, &r)) == CT_OK) {
        if (k == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            ct_record *na = ct_reallocarray(ctx, all, ncap, sizeof *na);
            if (na == NULL) {
                st = CT_ERR_NOMEM;
                goto done;
            }
            all = na;
            cap = ncap;
        }
        ldg_to_public(&r, ldg_record_ok(&r, pk), &all[k]);
        k++;
    }
    if (st == CT_ERR_NOT_FOUND || k == max) {
        st = CT_OK;
    }
    if (st != CT_OK) {
        goto done;
    }
    *out = all;
    *n = k;
    all = NULL;
done:
    sto_iter_close(it);
    free(all);
    return st;
}

ct_status ct_ledger_list(ct_ctx *ctx, const ct_ledger_filter *filter, ct_record **out, size_t *n)
{
    sto_filter f = {0};
    *out = NULL;
    *n = 0;
    if (filter != NULL) {
        if (filter->vendor != NULL) {
            ct_vendor v;
            ct_status st = ct_vendor_find(ctx, filter->vendor, &v);
            if (st != CT_OK) {
                return st;
            }
            f.vendor_id = v.id;
        }
        f.asset = filter->asset;
        f.since = filter->since;
    }
    return collect(ctx, &f, SIZE_MAX, out, n);
}

static ct_status get_one(ct_ctx *ctx, const sto_filter *f, ct_record *out, int *found)
{
    ct_record *r = NULL;
    size_t n = 0;
    *found = 0;
    ct_status st = collect(ctx, f, 1, &r, &n);
    if (st == CT_OK && n == 1) {
        *out = r[0];
        *found = 1;
    }
    free(r);
    return st;
}

ct_status ct_ledger_get(ct_ctx *ctx, uint64_t id, ct_record *out)
{
    sto_filter f = {0};
    int found = 0;
    memset(out, 0, sizeof *out);
    if (id == 0 || id > INT64_MAX) {
        return ct_fail(ctx, CT_ERR_NOT_FOUND, "no ledger record %" PRIu64, id);
    }
    f.id = id;
    ct_status st = get_one(ctx, &f, out, &found);
    if (st == CT_OK && !found) {
        st = ct_fail(ctx, CT_ERR_NOT_FOUND, "no ledger record %" PRIu64, id);
    }
    return st;
}

ct_status ldg_find_serial(ct_ctx *ctx, uint32_t serial, uint32_t vendor_id, ct_record *out,
                          int *found)
{
    sto_filter f = {0};
    memset(out, 0, sizeof *out);
    *found = 0;
    if (serial == 0 || vendor_id == 0) {
        return CT_OK;
    }
    f.serial = serial;
    f.vendor_id = vendor_id;
    return get_one(ctx, &f, out, found);
}

ct_status ct_ledger_find_serial(ct_ctx *ctx, uint32_t serial, uint32_t vendor_id, ct_record *out)
{
    int found = 0;
    ct_status st = ldg_find_serial(ctx, serial, vendor_id, out, &found);
    if (st == CT_OK && !found) {
        st = ct_fail(ctx, CT_ERR_NOT_FOUND, "no ledger record of serial %" PRIu32
                     " for vendor %" PRIu32, serial, vendor_id);
    }
    return st;
}

/* ---- verify ------------------------------------------------------------ */

ct_status ct_ledger_verify(ct_ctx *ctx, uint64_t *count, uint64_t *bad_id)
{
    ct_status st;
    uint8_t pk[CT_PUBLICKEYBYTES];
    sto_iter *it = NULL;
    sto_record r;
    sto_head head;
    ldg_walk w;
    uint64_t bad = 0;

    if (count != NULL) {
        *count = 0;
    }
    if (bad_id != NULL) {
        *bad_id = 0;
    }
    st = ct_public_key(ctx, pk, NULL);
    if (st != CT_OK) {
        return st;
    }
    st = sto_iter_open(ctx, NULL, &it);
    if (st != CT_OK) {
        return st;
    }
    sto_iter_head(it, &head);
    ldg_walk_init(&w, pk, "ledger");
    while ((st = sto_iter_next(it, &r)) == CT_OK) {
        st = ldg_walk_step(ctx, &w, &r, &bad);
        if (st != CT_OK) {
            goto done;
        }
    }
    if (st != CT_ERR_NOT_FOUND) {
        goto done;
    }
    st = ldg_walk_end(ctx, &w, &head, &bad);
done:
    sto_iter_close(it);
    if (bad_id != NULL) {
        *bad_id = bad;
    }
    if (count != NULL && st == CT_OK) {
        *count = w.count;
    }
    return st;
}

/* ---- export ------------------------------------------------------------ */

static ct_status write_json_line(ct_ctx *ctx, FILE *f, json_t *o, const char *what)
{
    if (o == NULL) {
        return ct_fail(ctx, CT_ERR_NOMEM, "out of memory");
    }
    int rc = json_dumpf(o, f, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (rc != 0 || fputc('\n', f) == EOF) {
        return ct_fail(ctx, CT_ERR_IO, "%s: write error", what);
    }
    return CT_OK;
}

static json_t *header_object(const char *studio, const uint8_t pk[CT_PUBLICKEYBYTES],
                             const sto_head *h)
{
    char b64[sodium_base64_ENCODED_LEN(CT_PUBLICKEYBYTES, sodium_base64_VARIANT_ORIGINAL)];
    char hash[2 * STO_HASH_BYTES + 1], sig[2 * STO_SIG_BYTES + 1];
    sodium_bin2base64(b64, sizeof b64, pk, CT_PUBLICKEYBYTES, sodium_base64_VARIANT_ORIGINAL);
    sodium_bin2hex(hash, sizeof hash, h->record_hash, STO_HASH_BYTES);
    sodium_bin2hex(sig, sizeof sig, h->signature, STO_SIG_BYTES);
    int head = h->present && !h->malformed;
    return json_pack("{s:s, s:i, s:s, s:s, s:o, s:o, s:o}", "format", EXPORT_FORMAT, "version",
                     CT_LEDGER_EXPORT_VERSION, "studio", studio, "public_key", b64, "head_id",
                     head ? json_integer((json_int_t)h->id) : json_null(), "head_hash",
                     head ? json_string(hash) : json_null(), "head_signature",
                     head ? json_string(sig) : json_null());
}

/* A hidden temporary beside path, as api/ does for marked files. */
static ct_status open_temp(ct_ctx *ctx, const char *path, char **tmp, FILE **f)
{
    char *a = ct_strdup(ctx, path), *b = ct_strdup(ctx, path), *t = NULL;
    ct_status st = CT_OK;
    *tmp = NULL;
    *f = NULL;
    if (a == NULL || b == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    size_t n = strlen(path) + 16;
    t = ct_malloc(ctx, n);
    if (t == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    snprintf(t, n, "%s/.%s.XXXXXX", dirname(a), basename(b));
    int fd = mkstemp(t);
    if (fd < 0) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: cannot create a file there: %s", path, strerror(errno));
        goto done;
    }
    *f = fdopen(fd, "w");
    if (*f == NULL) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
        close(fd);
        unlink(t);
        goto done;
    }
    *tmp = t;
    t = NULL;
done:
    free(a);
    free(b);
    free(t);
    return st;
}

ct_status ct_ledger_export(ct_ctx *ctx, const char *path)
{
    ct_status st;
    uint8_t pk[CT_PUBLICKEYBYTES];
    char studio[CT_NAME_MAX];
    sto_iter *it = NULL;
    sto_record r;
    sto_head head;
    ct_record pub;
    char *tmp = NULL;
    FILE *f = NULL;
    int to_stdout = path == NULL || strcmp(path, "-") == 0;
    const char *what = to_stdout ? "standard output" : path;

    st = ct_public_key(ctx, pk, studio);
    if (st != CT_OK) {
        return st;
    }
    st = sto_iter_open(ctx, NULL, &it);
    if (st != CT_OK) {
        return st;
    }
    if (to_stdout) {
        f = stdout;
    } else {
        st = open_temp(ctx, path, &tmp, &f);
        if (st != CT_OK) {
            goto done;
        }
    }
    sto_iter_head(it, &head);
    st = write_json_line(ctx, f, header_object(studio, pk, &head), what);
    while (st == CT_OK && (st = sto_iter_next(it, &r)) == CT_OK) {
        ldg_to_public(&r, 0, &pub);
        st = write_json_line(ctx, f, ldg_record_object(&pub, 0), what);
    }
    if (st != CT_ERR_NOT_FOUND) {
        goto done;
    }
    st = CT_OK;
    if (fflush(f) != 0 || ferror(f) || (!to_stdout && fsync(fileno(f)) != 0)) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: write error: %s", what, strerror(errno));
        goto done;
    }
    if (!to_stdout) {
        int rc = fclose(f);
        f = NULL;
        if (rc != 0 || rename(tmp, path) != 0) {
            st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
            goto done;
        }
        free(tmp);
        tmp = NULL;
    }
done:
    sto_iter_close(it);
    if (f != NULL && !to_stdout) {
        fclose(f);
    }
    if (tmp != NULL) {
        unlink(tmp);
        free(tmp);
    }
    return st;
}

/* ---- checking an export ------------------------------------------------ */

static int get_hex(json_t *o, const char *key, uint8_t *out, size_t n)
{
    json_t *j = json_object_get(o, key);
    const char *s = json_string_value(j);
    size_t got = 0;
    if (s == NULL || strlen(s) != 2 * n ||
        sodium_hex2bin(out, n, s, 2 * n, NULL, &got, NULL) != 0 || got != n) {
        memset(out, 0, n);
        return -1;
    }
    return 0;
}

static int get_text(json_t *o, const char *key, char *out, size_t cap)
{
    const char *s = json_string_value(json_object_get(o, key));
    size_t n = s != NULL ? json_string_length(json_object_get(o, key)) : 0;
    if (s == NULL || n >= cap || strlen(s) != n) {
        out[0] = '\0';
        return -1;
    }
    memcpy(out, s, n + 1);
    return 0;
}

static int get_int(json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
    json_t *j = json_object_get(o, key);
    *out = 0;
    if (!json_is_integer(j)) {
        return -1;
    }
    json_int_t v = json_integer_value(j);
    if (v < lo || v > hi) {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* An export line back into the row it was written from. Anything missing
 * or of the wrong shape makes it malformed, which the walk reports as an
 * altered record. */
static void parse_record(json_t *o, sto_record *r)
{
    int bad = 0;
    int64_t v;
    memset(r, 0, sizeof *r);
    if (!json_is_object(o)) {
        r->malformed = 1;
        return;
    }
    bad |= get_int(o, "id", 1, INT64_MAX, &v);
    r->id = (uint64_t)v;
    bad |= get_int(o, "serial", 1, UINT32_MAX, &v);
    r->serial = (uint32_t)v;
    bad |= get_int(o, "vendor_id", 1, UINT32_MAX, &v);
    r->vendor_id = (uint32_t)v;
    bad |= get_text(o, "vendor", r->vendor, sizeof r->vendor);
    bad |= get_text(o, "asset", r->asset, sizeof r->asset);
    bad |= get_text(o, "original", r->original, sizeof r->original);
    bad |= get_hex(o, "input_sha256", r->input_sha256, sizeof r->input_sha256);
    bad |= get_hex(o, "phash", r->phash, sizeof r->phash);
    bad |= get_hex(o, "output_sha256", r->output_sha256, sizeof r->output_sha256);
    bad |= get_int(o, "algorithm", 0, UINT32_MAX, &v);
    r->algo_version = (uint32_t)v;
    json_t *s = json_object_get(o, "strength");
    if (!json_is_number(s)) {
        bad = -1;
    }
    r->strength = json_number_value(s);
    bad |= get_int(o, "issued_at", INT64_MIN, INT64_MAX, &r->issued_at);
    bad |= get_text(o, "operator", r->issued_by, sizeof r->issued_by);
    bad |= get_hex(o, "prev_hash", r->prev_hash, sizeof r->prev_hash);
    bad |= get_hex(o, "record_hash", r->record_hash, sizeof r->record_hash);
    bad |= get_hex(o, "signature", r->signature, sizeof r->signature);
    r->malformed = bad != 0;
}

/* The header: its format and version decide whether we can read the rest
 * (CT_ERR_FORMAT); its key must be the one the checker trusts, and its
 * head is what the chain must end at. */
static ct_status parse_header(ct_ctx *ctx, const char *path, const char *line,
                              const uint8_t pk[CT_PUBLICKEYBYTES], sto_head *h)
{
    ct_status st = CT_OK;
    json_error_t err;
    json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &err);
    const char *fmt = json_string_value(json_object_get(o, "format"));
    json_t *ver = json_object_get(o, "version");
    uint8_t got[CT_PUBLICKEYBYTES];
    size_t glen = 0;

    memset(h, 0, sizeof *h);
    if (o == NULL || fmt == NULL || strcmp(fmt, EXPORT_FORMAT) != 0 || !json_is_integer(ver)) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: not a celtrace ledger export", path);
        goto done;
    }
    if (json_integer_value(ver) != CT_LEDGER_EXPORT_VERSION) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: ledger export version %" JSON_INTEGER_FORMAT
                     " is not supported", path, json_integer_value(ver));
        goto done;
    }
    const char *b64 = json_string_value(json_object_get(o, "public_key"));
    if (b64 == NULL ||
        sodium_base642bin(got, sizeof got, b64, strlen(b64), NULL, &glen, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        glen != sizeof got || sodium_memcmp(got, pk, sizeof got) != 0) {
        st = ct_fail(ctx, CT_ERR_AUTH, "%s: line 1: the export names another studio key than "
                     "the one given", path);
        goto done;
    }
    json_t *hid = json_object_get(o, "head_id");
    if (json_is_null(hid)) {
        h->present = 0;
        if (!json_is_null(json_object_get(o, "head_hash")) ||
            !json_is_null(json_object_get(o, "head_signature"))) {
            h->malformed = 1;
        }
    } else {
        int64_t id;
        h->present = 1;
        h->malformed = get_int(o, "head_id", 1, INT64_MAX, &id) != 0 ||
                       get_hex(o, "head_hash", h->record_hash, STO_HASH_BYTES) != 0 ||
                       get_hex(o, "head_signature", h->signature, STO_SIG_BYTES) != 0;
        h->id = (uint64_t)id;
    }
done:
    json_decref(o);
    return st;
}

ct_status ct_ledger_check_export(ct_ctx *ctx, const char *export_path, const char *pubkey_path,
                                 uint64_t *count, uint64_t *bad_id)
{
    ct_status st;
    uint8_t pk[CT_PUBLICKEYBYTES];
    FILE *f = NULL;
    char *line = NULL;
    size_t cap = 0;
    uint64_t lineno = 0, bad = 0;
    sto_head head;
    ldg_walk w;
    char where[4200];

    if (count != NULL) {
        *count = 0;
    }
    if (bad_id != NULL) {
        *bad_id = 0;
    }
    st = key_read_public(ctx, pubkey_path, pk, NULL);
    if (st != CT_OK) {
        return st;
    }
    f = fopen(export_path, "rb");
    if (f == NULL) {
        return ct_fail(ctx, errno == ENOENT ? CT_ERR_NOT_FOUND : CT_ERR_IO, "%s: %s",
                       export_path, strerror(errno));
    }
    ldg_walk_init(&w, pk, where);
    for (;;) {
        errno = 0;
        ssize_t n = getline(&line, &cap, f);
        if (n < 0) {
            if (ferror(f)) {
                st = ct_fail(ctx, CT_ERR_IO, "%s: read error", export_path);
                goto done;
            }
            break;
        }
        lineno++;
        if (n > 0 && line[n - 1] == '\n') {
            line[--n] = '\0';
        }
        snprintf(where, sizeof where, "%.4000s: line %" PRIu64, export_path, lineno);
        if (lineno == 1) {
            st = parse_header(ctx, export_path, line, pk, &head);
            if (st != CT_OK) {
                goto done;
            }
            continue;
        }
        sto_record r;
        json_t *o = NULL;
        if ((size_t)n <= EXPORT_LINE_MAX && strlen(line) == (size_t)n) {
            json_error_t err;
            o = json_loads(line, JSON_REJECT_DUPLICATES, &err);
        }
        parse_record(o, &r);
        json_decref(o);
        st = ldg_walk_step(ctx, &w, &r, &bad);
        if (st != CT_OK) {
            goto done;
        }
    }
    if (lineno == 0) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: empty file, not a celtrace ledger export",
                     export_path);
        goto done;
    }
    snprintf(where, sizeof where, "%.4000s", export_path);
    st = ldg_walk_end(ctx, &w, &head, &bad);
done:
    free(line);
    fclose(f);
    if (bad_id != NULL) {
        *bad_id = bad;
    }
    if (count != NULL && st == CT_OK) {
        *count = w.count;
    }
    return st;
}

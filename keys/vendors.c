/* keys: the vendor registry (rows in the studio database). */
#include "keys.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "store/store.h"

/* Accept well-formed UTF-8 without C0/C1 control characters. */
static bool utf8_text_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p != 0) {
        unsigned c = *p;
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) {
                return false;
            }
            p++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        for (size_t i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        /* Overlong forms, surrogates, out of range, C1 controls. */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff || (cp >= 0x80 && cp < 0xa0)) {
            return false;
        }
        p += len;
    }
    return true;
}

ct_status key_check_vendor_name(ct_ctx *ctx, const char *name)
{
    size_t n = name == NULL ? 0 : strlen(name);
    if (n == 0) {
        return ct_fail(ctx, CT_ERR_MISUSE, "vendor name must not be empty");
    }
    if (n >= CT_NAME_MAX) {
        return ct_fail(ctx, CT_ERR_MISUSE, "vendor name is longer than %u bytes", CT_NAME_MAX - 1);
    }
    if (strspn(name, "0123456789") == n) {
        return ct_fail(ctx, CT_ERR_MISUSE,
                       "vendor name '%s' is all digits; digits alone name a vendor id", name);
    }
    if (!utf8_text_ok(name)) {
        return ct_fail(ctx, CT_ERR_MISUSE, "vendor name must be UTF-8 text without control "
                                           "characters");
    }
    if (name[0] == ' ' || name[n - 1] == ' ') {
        return ct_fail(ctx, CT_ERR_MISUSE, "vendor name must not start or end with a space");
    }
    return CT_OK;
}

static ct_status check_country(ct_ctx *ctx, const char *cc, char out[CT_COUNTRY_MAX])
{
    size_t n = strlen(cc);
    if (n != 2) {
        return ct_fail(ctx, CT_ERR_MISUSE, "country must be a two-letter ISO 3166 code, not '%s'",
                       cc);
    }
    for (size_t i = 0; i < n; i++) {
        if (!isalpha((unsigned char)cc[i])) {
            return ct_fail(ctx, CT_ERR_MISUSE,
                           "country must be a two-letter ISO 3166 code, not '%s'", cc);
        }
        out[i] = (char)toupper((unsigned char)cc[i]);
    }
    out[n] = '\0';
    return CT_OK;
}

static void copy_text(char *dst, size_t cap, const unsigned char *src)
{
    if (src == NULL) {
        dst[0] = '\0';
        return;
    }
    size_t n = strlen((const char *)src);
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

#define VENDOR_COLS "id, name, country, contact, epoch, created_at, revoked_at"

static void row_to_vendor(sqlite3_stmt *q, ct_vendor *v)
{
    memset(v, 0, sizeof *v);
    v->id = (uint32_t)sqlite3_column_int64(q, 0);
    copy_text(v->name, sizeof v->name, sqlite3_column_text(q, 1));
    copy_text(v->country, sizeof v->country, sqlite3_column_text(q, 2));
    copy_text(v->contact, sizeof v->contact, sqlite3_column_text(q, 3));
    v->epoch = (uint32_t)sqlite3_column_int64(q, 4);
    v->created_at = sqlite3_column_int64(q, 5);
    v->revoked_at = sqlite3_column_int64(q, 6);
}

ct_status ct_vendor_find(ct_ctx *ctx, const char *name_or_id, ct_vendor *out)
{
    ct_status st;
    sqlite3 *db;
    sqlite3_stmt *q = NULL;
    size_t n = name_or_id == NULL ? 0 : strlen(name_or_id);

    memset(out, 0, sizeof *out);
    if (n == 0) {
        return ct_fail(ctx, CT_ERR_MISUSE, "no vendor given");
    }
    st = sto_db(ctx, &db);
    if (st != CT_OK) {
        return st;
    }
    bool by_id = strspn(name_or_id, "0123456789") == n;
    const char *sql = by_id ? "SELECT " VENDOR_COLS " FROM vendors WHERE id = ?1"
                            : "SELECT " VENDOR_COLS " FROM vendors WHERE name = ?1";
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        st = sto_fail(ctx, db, "find vendor");
        goto done;
    }
    if (by_id) {
        /* Ids beyond 32 bits cannot exist; avoid strtoull wrap-around. */
        unsigned long long id = n > 10 ? 0 : strtoull(name_or_id, NULL, 10);
        sqlite3_bind_int64(q, 1, id > UINT32_MAX ? 0 : (sqlite3_int64)id);
    } else {
        sqlite3_bind_text(q, 1, name_or_id, -1, SQLITE_STATIC);
    }
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        row_to_vendor(q, out);
    } else if (rc == SQLITE_DONE) {
        st = ct_fail(ctx, CT_ERR_NOT_FOUND,
                     "unknown vendor '%s' (see 'celtrace vendor list')", name_or_id);
    } else {
        st = sto_fail(ctx, db, "find vendor");
    }
done:
    sqlite3_finalize(q);
    return st;
}

ct_status ct_vendor_add(ct_ctx *ctx, const char *name, const char *country, const char *contact,
                        ct_vendor *out)
{
    ct_status st;
    sqlite3 *db;
    sqlite3_stmt *q = NULL;
    char cc[CT_COUNTRY_MAX] = "";
    const key_secrets *sec;

    memset(out, 0, sizeof *out);
    st = key_check_vendor_name(ctx, name);
    if (st != CT_OK) {
        return st;
    }
    if (country != NULL && country[0] != '\0') {
        st = check_country(ctx, country, cc);
        if (st != CT_OK) {
            return st;
        }
    }
    if (contact == NULL) {
        contact = "";
    }
    if (strlen(contact) >= CT_CONTACT_MAX || !utf8_text_ok(contact)) {
        return ct_fail(ctx, CT_ERR_MISUSE,
                       "contact must be UTF-8 text on one line, at most %u bytes",
                       CT_CONTACT_MAX - 1);
    }
    st = key_secrets_of(ctx, &sec);
    if (st != CT_OK) {
        return st;
    }
    st = sto_db(ctx, &db);
    if (st != CT_OK) {
        return st;
    }
    st = sto_begin(ctx, db);
    if (st != CT_OK) {
        return st;
    }
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO vendors(name, country, contact, created_at) "
                           "VALUES(?1, ?2, ?3, ?4) RETURNING " VENDOR_COLS,
                           -1, &q, NULL) != SQLITE_OK) {
        st = sto_fail(ctx, db, "add vendor");
        goto done;
    }
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, cc, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, contact, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, (sqlite3_int64)time(NULL));
    int rc = sqlite3_step(q);
    if (rc == SQLITE_CONSTRAINT) {
        st = ct_fail(ctx, CT_ERR_EXISTS, "a vendor named '%s' already exists", name);
        goto done;
    }
    if (rc != SQLITE_ROW) {
        st = sto_fail(ctx, db, "add vendor");
        goto done;
    }
    row_to_vendor(q, out);
    sqlite3_finalize(q);
    q = NULL;
    st = sto_commit(ctx, db);
done:
    sqlite3_finalize(q);
    if (st != CT_OK) {
        sto_rollback(db);
        memset(out, 0, sizeof *out);
    }
    return st;
}

ct_status ct_vendor_list(ct_ctx *ctx, ct_vendor **out, size_t *count)
{
    ct_status st;
    sqlite3 *db;
    sqlite3_stmt *q = NULL;
    ct_vendor *arr = NULL;
    size_t n = 0, cap = 0;

    *out = NULL;
    *count = 0;
    st = sto_db(ctx, &db);
    if (st != CT_OK) {
        return st;
    }
    if (sqlite3_prepare_v2(db, "SELECT " VENDOR_COLS " FROM vendors ORDER BY id", -1, &q, NULL) !=
        SQLITE_OK) {
        st = sto_fail(ctx, db, "list vendors");
        goto done;
    }
    for (;;) {
        int rc = sqlite3_step(q);
        if (rc == SQLITE_DONE) {
            break;
        }
        if (rc != SQLITE_ROW) {
            st = sto_fail(ctx, db, "list vendors");
            goto done;
        }
        if (n == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            /* Through the context, so fault injection reaches it. */
            ct_vendor *na = ct_reallocarray(ctx, arr, ncap, sizeof *arr);
            if (na == NULL) {
                st = CT_ERR_NOMEM;
                goto done;
            }
            arr = na;
            cap = ncap;
        }
        row_to_vendor(q, &arr[n++]);
    }
    *out = arr;
    *count = n;
    arr = NULL;
done:
    sqlite3_finalize(q);
    free(arr);
    return st;
}

ct_status ct_vendor_revoke(ct_ctx *ctx, const char *name_or_id, ct_vendor *out)
{
    ct_status st;
    sqlite3 *db;
    sqlite3_stmt *q = NULL;
    const key_secrets *sec;

    memset(out, 0, sizeof *out);
    st = key_secrets_of(ctx, &sec);
    if (st != CT_OK) {
        return st;
    }
    st = ct_vendor_find(ctx, name_or_id, out);
    if (st != CT_OK) {
        return st;
    }
    if (out->revoked_at != 0) {
        return ct_fail(ctx, CT_ERR_MISUSE, "vendor '%s' is already revoked", out->name);
    }
    st = sto_db(ctx, &db);
    if (st != CT_OK) {
        return st;
    }
    if (sqlite3_prepare_v2(db, "UPDATE vendors SET revoked_at = ?1 WHERE id = ?2", -1, &q,
                           NULL) != SQLITE_OK) {
        st = sto_fail(ctx, db, "revoke vendor");
        goto done;
    }
    int64_t now = (int64_t)time(NULL);
    sqlite3_bind_int64(q, 1, now);
    sqlite3_bind_int64(q, 2, out->id);
    if (sqlite3_step(q) != SQLITE_DONE) {
        st = sto_fail(ctx, db, "revoke vendor");
        goto done;
    }
    out->revoked_at = now;
done:
    sqlite3_finalize(q);
    return st;
}

static void iso_time(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

ct_status ct_vendor_json(const ct_vendor *v, char **out)
{
    char created[32], revoked[32];
    json_t *o = NULL;
    *out = NULL;
    iso_time(v->created_at, created);
    iso_time(v->revoked_at, revoked);
    o = json_pack("{s:I, s:s, s:s, s:s, s:I, s:s, s:b, s:s?}", "id", (json_int_t)v->id, "name",
                  v->name, "country", v->country, "contact", v->contact, "epoch",
                  (json_int_t)v->epoch, "created_at", created, "revoked", v->revoked_at != 0,
                  "revoked_at", v->revoked_at != 0 ? revoked : NULL);
    if (o == NULL) {
        return CT_ERR_NOMEM;
    }
    *out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return *out == NULL ? CT_ERR_NOMEM : CT_OK;
}

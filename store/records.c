/* store: ledger rows (schema v2). Only persistence lives here; what the
 * hashes and signatures mean is ledger/'s business. */
#include "store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_ID   "ledger_head_id"
#define HEAD_HASH "ledger_head_hash"
#define HEAD_SIG  "ledger_head_sig"

struct sto_iter {
    ct_ctx *ctx;
    sqlite3 *db;
    sqlite3_stmt *q;
    sto_head head;
    int in_txn;
};

static const char COLUMNS[] =
    "id, serial, vendor_id, vendor, asset, original, input_sha256, phash, output_sha256,"
    " algo_version, strength, issued_at, operator, prev_hash, record_hash, signature";

ct_status sto_serial_claim(ct_ctx *ctx, uint32_t serial)
{
    sqlite3 *db;
    sqlite3_stmt *q = NULL;
    ct_status st = sto_db(ctx, &db);
    if (st != CT_OK) {
        return st;
    }
    if (serial == 0) {
        return ct_fail(ctx, CT_ERR_MISUSE, "serial 0 is reserved");
    }
    /* One statement is its own transaction; the primary key makes two
     * processes drawing the same serial fail the second one (SQLite's
     * locks, whatever the sync level). The claim alone is not synced to
     * disk (NORMAL): the record's own commit, at FULL, syncs the log with
     * the claim in it before any output appears; a power cut before that
     * can lose only a claim whose embed never finished, a serial drawn at
     * random from 2^32 - 1. Saves one fsync an embed. */
    if (sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) != SQLITE_OK) {
        return sto_fail(ctx, db, "claim serial");
    }
    int rc = sqlite3_prepare_v2(
        db, "INSERT INTO serials(serial, claimed_at) VALUES(?, strftime('%s'))", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, (sqlite3_int64)serial);
        rc = sqlite3_step(q);
    }
    if (rc == SQLITE_CONSTRAINT) {
        st = ct_fail(ctx, CT_ERR_EXISTS, "serial %" PRIu32 " is taken", serial);
    } else if (rc != SQLITE_DONE) {
        st = sto_fail(ctx, db, "claim serial");
    }
    sqlite3_finalize(q);
    /* Back to FULL before anything else commits; if that fails, the
     * connection goes (the next use opens one at FULL again). */
    if (sqlite3_exec(db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK) {
        ct_status st2 = sto_fail(ctx, db, "restore synchronous=FULL");
        ct_slot_set(ctx, CT_SLOT_STORE, NULL, NULL);
        return st2;
    }
    return st;
}

ct_status sto_vendor_serials(ct_ctx *ctx, uint32_t vendor_id, uint32_t **out, size_t *n)
{
    sqlite3 *db;
    sqlite3_stmt *q = NULL;
    uint32_t *v = NULL;
    size_t len = 0, cap = 0;
    *out = NULL;
    *n = 0;
    ct_status st = sto_db(ctx, &db);
    if (st != CT_OK) {
        return st;
    }
    if (sqlite3_prepare_v2(db, "SELECT serial FROM records WHERE vendor_id = ? ORDER BY id", -1,
                           &q, NULL) != SQLITE_OK) {
        return sto_fail(ctx, db, "read issued serials");
    }
    sqlite3_bind_int64(q, 1, (sqlite3_int64)vendor_id);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        sqlite3_int64 s = sqlite3_column_int64(q, 0);
        if (s <= 0 || s > UINT32_MAX) {
            continue; /* not a serial any mark can carry */
        }
        if (len == cap) {
            size_t nc = cap == 0 ? 64 : 2 * cap;
            uint32_t *nv = ct_reallocarray(ctx, v, nc, sizeof *v);
            if (nv == NULL) {
                st = CT_ERR_NOMEM;
                break;
            }
            v = nv;
            cap = nc;
        }
        v[len++] = (uint32_t)s;
    }
    if (st == CT_OK && rc != SQLITE_DONE) {
        st = sto_fail(ctx, db, "read issued serials");
    }
    sqlite3_finalize(q);
    if (st != CT_OK) {
        free(v);
        return st;
    }
    *out = v;
    *n = len;
    return CT_OK;
}

static int hex_to(uint8_t *out, size_t n, const unsigned char *hex)
{
    if (hex == NULL || strlen((const char *)hex) != 2 * n) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            unsigned char c = hex[2 * i + (size_t)k];
            unsigned d;
            if (c >= '0' && c <= '9') {
                d = c - '0';
            } else if (c >= 'a' && c <= 'f') {
                d = c - 'a' + 10;
            } else {
                return -1;
            }
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    return 0;
}

static void to_hex(char *out, const uint8_t *b, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Read the head from meta; values edited into something unreadable set
 * malformed rather than fail, so verify can name the problem. */
static ct_status read_head(ct_ctx *ctx, sqlite3 *db, sto_head *h)
{
    sqlite3_stmt *q = NULL;
    ct_status st = CT_OK;
    int seen = 0;
    memset(h, 0, sizeof *h);
    if (sqlite3_prepare_v2(db, "SELECT key, value FROM meta WHERE key IN (?, ?, ?)", -1, &q,
                           NULL) != SQLITE_OK) {
        return sto_fail(ctx, db, "read ledger head");
    }
    sqlite3_bind_text(q, 1, HEAD_ID, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, HEAD_HASH, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, HEAD_SIG, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(q, 0);
        const unsigned char *v = sqlite3_column_text(q, 1);
        if (k == NULL || v == NULL) {
            h->malformed = 1;
        } else if (strcmp(k, HEAD_ID) == 0) {
            char *end = NULL;
            unsigned long long id = strtoull((const char *)v, &end, 10);
            if (end == (const char *)v || *end != '\0' || id == 0 || id > INT64_MAX) {
                h->malformed = 1;
            }
            h->id = id;
            seen |= 1;
        } else if (strcmp(k, HEAD_HASH) == 0) {
            h->malformed |= hex_to(h->record_hash, sizeof h->record_hash, v) != 0;
            seen |= 2;
        } else {
            h->malformed |= hex_to(h->signature, sizeof h->signature, v) != 0;
            seen |= 4;
        }
    }
    if (rc != SQLITE_DONE) {
        st = sto_fail(ctx, db, "read ledger head");
    }
    sqlite3_finalize(q);
    h->present = seen != 0;
    if (seen != 0 && seen != 7) {
        h->malformed = 1;
    }
    return st;
}

static ct_status write_head(ct_ctx *ctx, sqlite3 *db, const sto_record *r)
{
    sqlite3_stmt *q = NULL;
    ct_status st = CT_OK;
    char id[24], hash[2 * STO_HASH_BYTES + 1], sig[2 * STO_SIG_BYTES + 1];
    snprintf(id, sizeof id, "%" PRIu64, r->id);
    to_hex(hash, r->record_hash, STO_HASH_BYTES);
    to_hex(sig, r->signature, STO_SIG_BYTES);
    const char *kv[3][2] = {{HEAD_ID, id}, {HEAD_HASH, hash}, {HEAD_SIG, sig}};
    if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", -1, &q,
                           NULL) != SQLITE_OK) {
        return sto_fail(ctx, db, "write ledger head");
    }
    for (int i = 0; i < 3 && st == CT_OK; i++) {
        sqlite3_bind_text(q, 1, kv[i][0], -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, kv[i][1], -1, SQLITE_STATIC);
        if (sqlite3_step(q) != SQLITE_DONE) {
            st = sto_fail(ctx, db, "write ledger head");
        }
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    return st;
}

static int copy_text(char *dst, size_t cap, sqlite3_stmt *q, int col)
{
    if (sqlite3_column_type(q, col) != SQLITE_TEXT) {
        dst[0] = '\0';
        return -1;
    }
    const unsigned char *s = sqlite3_column_text(q, col);
    int n = sqlite3_column_bytes(q, col);
    if (s == NULL || n < 0 || (size_t)n >= cap || memchr(s, 0, (size_t)n) != NULL) {
        dst[0] = '\0';
        return -1;
    }
    memcpy(dst, s, (size_t)n);
    dst[n] = '\0';
    return 0;
}

static int copy_blob(uint8_t *dst, size_t n, sqlite3_stmt *q, int col)
{
    if (sqlite3_column_type(q, col) != SQLITE_BLOB || sqlite3_column_bytes(q, col) != (int)n) {
        memset(dst, 0, n);
        return -1;
    }
    memcpy(dst, sqlite3_column_blob(q, col), n);
    return 0;
}

static int copy_int(int64_t *dst, int64_t lo, int64_t hi, sqlite3_stmt *q, int col)
{
    if (sqlite3_column_type(q, col) != SQLITE_INTEGER) {
        *dst = 0;
        return -1;
    }
    *dst = sqlite3_column_int64(q, col);
    return *dst < lo || *dst > hi ? -1 : 0;
}

/* A row as stored. Anything the ledger could not have written (a wrong
 * type, a wrong blob size, an id out of range) marks it malformed. */
static void row_to_record(sqlite3_stmt *q, sto_record *r)
{
    int bad = 0;
    int64_t v;
    memset(r, 0, sizeof *r);
    bad |= copy_int(&v, 1, INT64_MAX, q, 0);
    r->id = (uint64_t)(v > 0 ? v : 0);
    bad |= copy_int(&v, 1, UINT32_MAX, q, 1);
    r->serial = (uint32_t)(v >= 0 && v <= UINT32_MAX ? v : 0);
    bad |= copy_int(&v, 1, UINT32_MAX, q, 2);
    r->vendor_id = (uint32_t)(v >= 0 && v <= UINT32_MAX ? v : 0);
    bad |= copy_text(r->vendor, sizeof r->vendor, q, 3);
    bad |= copy_text(r->asset, sizeof r->asset, q, 4);
    bad |= copy_text(r->original, sizeof r->original, q, 5);
    bad |= copy_blob(r->input_sha256, sizeof r->input_sha256, q, 6);
    bad |= copy_blob(r->phash, sizeof r->phash, q, 7);
    bad |= copy_blob(r->output_sha256, sizeof r->output_sha256, q, 8);
    bad |= copy_int(&v, 0, UINT32_MAX, q, 9);
    r->algo_version = (uint32_t)(v >= 0 && v <= UINT32_MAX ? v : 0);
    if (sqlite3_column_type(q, 10) != SQLITE_FLOAT) {
        bad = -1;
    }
    r->strength = sqlite3_column_double(q, 10);
    bad |= copy_int(&r->issued_at, INT64_MIN, INT64_MAX, q, 11);
    bad |= copy_text(r->issued_by, sizeof r->issued_by, q, 12);
    bad |= copy_blob(r->prev_hash, sizeof r->prev_hash, q, 13);
    bad |= copy_blob(r->record_hash, sizeof r->record_hash, q, 14);
    bad |= copy_blob(r->signature, sizeof r->signature, q, 15);
    r->malformed = bad != 0;
}

ct_status sto_record_append(ct_ctx *ctx, sto_record *rec, sto_seal_fn seal, void *arg)
{
    sqlite3 *db;
    sqlite3_stmt *q = NULL;
    sto_head head;
    ct_status st = sto_db(ctx, &db);
    if (st != CT_OK) {
        return st;
    }
    /* IMMEDIATE takes the write lock before reading the head, so two
     * processes can never both extend the same head. */
    st = sto_begin(ctx, db);
    if (st != CT_OK) {
        return st;
    }
    st = read_head(ctx, db, &head);
    if (st != CT_OK) {
        goto done;
    }
    if (sqlite3_prepare_v2(db, "SELECT id, record_hash FROM records ORDER BY id DESC LIMIT 1", -1,
                           &q, NULL) != SQLITE_OK) {
        st = sto_fail(ctx, db, "read ledger");
        goto done;
    }
    int rc = sqlite3_step(q);
    uint64_t last = 0;
    memset(rec->prev_hash, 0, sizeof rec->prev_hash);
    if (rc == SQLITE_ROW) {
        last = (uint64_t)sqlite3_column_int64(q, 0);
        if (sqlite3_column_bytes(q, 1) == (int)STO_HASH_BYTES) {
            memcpy(rec->prev_hash, sqlite3_column_blob(q, 1), STO_HASH_BYTES);
        }
    } else if (rc != SQLITE_DONE) {
        st = sto_fail(ctx, db, "read ledger");
        goto done;
    }
    sqlite3_finalize(q);
    q = NULL;
    /* Extending a chain whose newest row is not the signed head would sign
     * over an edit or hide a deletion. */
    if (head.malformed || (head.present ? head.id != last ||
                                              memcmp(head.record_hash, rec->prev_hash,
                                                     STO_HASH_BYTES) != 0
                                        : last != 0) ||
        last >= INT64_MAX) {
        st = ct_fail(ctx, CT_ERR_AUTH, "the ledger does not end at its signed head; "
                                       "run 'celtrace ledger verify'");
        goto done;
    }
    rec->id = last + 1;
    st = seal(ctx, rec, arg);
    if (st != CT_OK) {
        goto done;
    }
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO records(%s) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", COLUMNS);
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        st = sto_fail(ctx, db, "append record");
        goto done;
    }
    sqlite3_bind_int64(q, 1, (sqlite3_int64)rec->id);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)rec->serial);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)rec->vendor_id);
    sqlite3_bind_text(q, 4, rec->vendor, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, rec->asset, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, rec->original, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 7, rec->input_sha256, STO_HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(q, 8, rec->phash, STO_PHASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(q, 9, rec->output_sha256, STO_HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_int64(q, 10, (sqlite3_int64)rec->algo_version);
    sqlite3_bind_double(q, 11, rec->strength);
    sqlite3_bind_int64(q, 12, (sqlite3_int64)rec->issued_at);
    sqlite3_bind_text(q, 13, rec->issued_by, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 14, rec->prev_hash, STO_HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(q, 15, rec->record_hash, STO_HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(q, 16, rec->signature, STO_SIG_BYTES, SQLITE_STATIC);
    rc = sqlite3_step(q);
    if (rc == SQLITE_CONSTRAINT) {
        st = ct_fail(ctx, CT_ERR_EXISTS, "serial %" PRIu32 " is already recorded", rec->serial);
        goto done;
    }
    if (rc != SQLITE_DONE) {
        st = sto_fail(ctx, db, "append record");
        goto done;
    }
    st = write_head(ctx, db, rec);
done:
    sqlite3_finalize(q);
    if (st == CT_OK) {
        st = sto_commit(ctx, db);
    } else {
        sto_rollback(db);
    }
    return st;
}

ct_status sto_iter_open(ct_ctx *ctx, const sto_filter *f, sto_iter **out)
{
    sqlite3 *db;
    sto_iter *it = NULL;
    char sql[768];
    int n = 0;
    ct_status st;

    *out = NULL;
    st = sto_db(ctx, &db);
    if (st != CT_OK) {
        return st;
    }
    it = ct_calloc(ctx, 1, sizeof *it);
    if (it == NULL) {
        return CT_ERR_NOMEM;
    }
    it->ctx = ctx;
    it->db = db;
    /* A deferred transaction: its first read pins one WAL snapshot, so the
     * head and the rows are read as of the same moment. */
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        st = sto_fail(ctx, db, "read ledger");
        goto done;
    }
    it->in_txn = 1;
    st = read_head(ctx, db, &it->head);
    if (st != CT_OK) {
        goto done;
    }
    n = snprintf(sql, sizeof sql,
                 "SELECT %s FROM records WHERE (?1 = 0 OR id = ?1) AND (?2 = 0 OR serial = ?2)"
                 " AND (?3 = 0 OR vendor_id = ?3) AND (?4 IS NULL OR asset = ?4)"
                 " AND (?5 = 0 OR issued_at >= ?5) ORDER BY id",
                 COLUMNS);
    if (n < 0 || (size_t)n >= sizeof sql) {
        st = ct_fail(ctx, CT_ERR_MISUSE, "query too long");
        goto done;
    }
    if (sqlite3_prepare_v2(db, sql, -1, &it->q, NULL) != SQLITE_OK) {
        st = sto_fail(ctx, db, "read ledger");
        goto done;
    }
    sto_filter none = {0};
    if (f == NULL) {
        f = &none;
    }
    sqlite3_bind_int64(it->q, 1, (sqlite3_int64)(f->id > INT64_MAX ? INT64_MAX : f->id));
    sqlite3_bind_int64(it->q, 2, (sqlite3_int64)f->serial);
    sqlite3_bind_int64(it->q, 3, (sqlite3_int64)f->vendor_id);
    if (f->asset != NULL) {
        sqlite3_bind_text(it->q, 4, f->asset, -1, SQLITE_TRANSIENT);
    }
    sqlite3_bind_int64(it->q, 5, (sqlite3_int64)f->since);
    *out = it;
    it = NULL;
done:
    sto_iter_close(it);
    return st;
}

void sto_iter_head(const sto_iter *it, sto_head *out)
{
    *out = it->head;
}

ct_status sto_iter_next(sto_iter *it, sto_record *out)
{
    int rc = sqlite3_step(it->q);
    if (rc == SQLITE_ROW) {
        row_to_record(it->q, out);
        return CT_OK;
    }
    if (rc == SQLITE_DONE) {
        return CT_ERR_NOT_FOUND;
    }
    return sto_fail(it->ctx, it->db, "read ledger");
}

void sto_iter_close(sto_iter *it)
{
    if (it == NULL) {
        return;
    }
    sqlite3_finalize(it->q);
    if (it->in_txn) {
        sqlite3_exec(it->db, "COMMIT", NULL, NULL, NULL);
    }
    free(it);
}

/* store: the one module that opens the studio database (SQLite, WAL).
 * The vendor registry (keys/) and the ledger (ledger/) both use it, so
 * neither imports the other; a PostgreSQL backend would replace this file. */
#ifndef CT_STORE_H
#define CT_STORE_H

#include <sqlite3.h>

#include "core/core.h"

#define STO_DB_NAME        "celtrace.db"
/* Schema versions: 1 the vendor registry; 2 adds the ledger (records,
 * serials). v1 homes are migrated to v2 when first opened. */
#define STO_SCHEMA_VERSION 2

/* Create the database and its schema in the home folder (used by init).
 * Fails with CT_ERR_EXISTS if it is already there. */
ct_status sto_create(ct_ctx *ctx);

/* The open database of ctx, opened on first use (read-write, WAL, busy
 * timeout). CT_ERR_NOT_FOUND if the home has no database (run init);
 * CT_ERR_FORMAT for an unknown schema version. Borrowed: the context owns it. */
ct_status sto_db(ct_ctx *ctx, sqlite3 **out);

/* Record a SQLite failure on ctx with the database's message. */
ct_status sto_fail(ct_ctx *ctx, sqlite3 *db, const char *what);

/* Run `BEGIN IMMEDIATE` / `COMMIT` / `ROLLBACK`. */
ct_status sto_begin(ct_ctx *ctx, sqlite3 *db);
ct_status sto_commit(ct_ctx *ctx, sqlite3 *db);
void sto_rollback(sqlite3 *db);

/* ---- ledger rows (store/records.c) --------------------------------------
 * The storage interface of the ledger: rows in, rows out, one transaction
 * per append. Hashing, signing and chain checks live in ledger/; a
 * PostgreSQL backend would reimplement only these functions. */

#define STO_HASH_BYTES  32u
#define STO_PHASH_BYTES 8u
#define STO_SIG_BYTES   64u

typedef struct sto_record {
    uint64_t id;                 /* 1, 2, ... in chain order */
    uint32_t serial;
    uint32_t vendor_id;
    char vendor[CT_NAME_MAX];
    char asset[CT_ASSET_MAX];
    char original[CT_RECORD_PATH_MAX];
    char issued_by[CT_OPERATOR_MAX];
    uint8_t input_sha256[STO_HASH_BYTES];
    uint8_t phash[STO_PHASH_BYTES];
    uint8_t output_sha256[STO_HASH_BYTES];
    uint32_t algo_version;
    double strength;
    int64_t issued_at;
    uint8_t prev_hash[STO_HASH_BYTES];
    uint8_t record_hash[STO_HASH_BYTES];
    uint8_t signature[STO_SIG_BYTES];
    /* Set when reading: a column had the wrong type or size, or a text did
     * not fit. The row cannot be what the ledger wrote (it was edited). */
    int malformed;
} sto_record;

/* The signed head kept in meta, so that deleting the newest records shows. */
typedef struct sto_head {
    int present;                 /* 0: no record appended yet */
    int malformed;               /* meta values unreadable (edited) */
    uint64_t id;
    uint8_t record_hash[STO_HASH_BYTES];
    uint8_t signature[STO_SIG_BYTES];
} sto_head;

/* Which rows to read; zero fields match everything. */
typedef struct sto_filter {
    uint64_t id;
    uint32_t serial;
    uint32_t vendor_id;          /* with serial: the record of that mark */
    const char *asset;
    int64_t since;               /* issued_at >= since */
} sto_filter;

/* Claim serial (non-zero) for an embed. CT_ERR_EXISTS if it was claimed
 * before (draw another). A claimed serial is never handed out again, even
 * if the embed that claimed it never records. */
ct_status sto_serial_claim(ct_ctx *ctx, uint32_t serial);

/* Every serial the ledger records as issued to vendor_id, in record
 * order: *out (caller frees; NULL when none) and *n. */
ct_status sto_vendor_serials(ct_ctx *ctx, uint32_t vendor_id, uint32_t **out, size_t *n);

/* Called inside the append transaction with rec->id and rec->prev_hash set
 * from the current head: fill rec->record_hash and rec->signature. */
typedef ct_status (*sto_seal_fn)(ct_ctx *ctx, sto_record *rec, void *arg);

/* Append rec as the new head, in one BEGIN IMMEDIATE transaction: read the
 * head, check that the newest row is the signed head in meta (else
 * CT_ERR_AUTH: the ledger was altered), seal, insert, move the head,
 * commit. Concurrent appends from other processes wait (busy timeout), so
 * the chain stays linear. On success rec holds the stored row. */
ct_status sto_record_append(ct_ctx *ctx, sto_record *rec, sto_seal_fn seal, void *arg);

/* Read rows in id order in one read transaction (a consistent snapshot
 * while other processes append). */
typedef struct sto_iter sto_iter;
ct_status sto_iter_open(ct_ctx *ctx, const sto_filter *f, sto_iter **out);
/* The head in meta, as of the snapshot. */
void sto_iter_head(const sto_iter *it, sto_head *out);
/* Next row: CT_OK, CT_ERR_NOT_FOUND at the end, or an I/O error. */
ct_status sto_iter_next(sto_iter *it, sto_record *out);
void sto_iter_close(sto_iter *it);

#endif

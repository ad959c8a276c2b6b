/* store: SQLite database of the studio home. */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Schema v1: the vendor registry. v2 adds the ledger (below); a new home
 * is created at v1 and migrated like an old one, so the migration is the
 * one path every home takes. Readers refuse versions they do not know. */
static const char SCHEMA_V1[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE vendors("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT NOT NULL UNIQUE,"
    "  country TEXT NOT NULL DEFAULT '',"
    "  contact TEXT NOT NULL DEFAULT '',"
    "  epoch INTEGER NOT NULL DEFAULT 1,"
    "  created_at INTEGER NOT NULL,"
    "  revoked_at INTEGER NOT NULL DEFAULT 0);"
    "PRAGMA user_version=1;";

/* Schema v2: the ledger. serials holds every serial ever handed to an
 * embed (claimed before marking, since the mark carries it); records the
 * issuance chain (see ledger/ledger.h for the encoding the hashes cover).
 * The signed head lives in meta (ledger_head_id/_hash/_sig). */
static const char SCHEMA_V2[] =
    "CREATE TABLE serials(serial INTEGER PRIMARY KEY, claimed_at INTEGER NOT NULL);"
    "CREATE TABLE records("
    "  id INTEGER PRIMARY KEY,"
    "  serial INTEGER NOT NULL UNIQUE,"
    "  vendor_id INTEGER NOT NULL,"
    "  vendor TEXT NOT NULL,"
    "  asset TEXT NOT NULL,"
    "  original TEXT NOT NULL,"
    "  input_sha256 BLOB NOT NULL,"
    "  phash BLOB NOT NULL,"
    "  output_sha256 BLOB NOT NULL,"
    "  algo_version INTEGER NOT NULL,"
    "  strength REAL NOT NULL,"
    "  issued_at INTEGER NOT NULL,"
    "  operator TEXT NOT NULL,"
    "  prev_hash BLOB NOT NULL,"
    "  record_hash BLOB NOT NULL,"
    "  signature BLOB NOT NULL);"
    "CREATE INDEX records_vendor ON records(vendor_id);"
    "CREATE INDEX records_asset ON records(asset);"
    "CREATE INDEX records_output ON records(output_sha256);"
    "PRAGMA user_version=2;";

static void db_close(void *p)
{
    sqlite3_close_v2((sqlite3 *)p);
}

ct_status sto_fail(ct_ctx *ctx, sqlite3 *db, const char *what)
{
    int code = db != NULL ? sqlite3_errcode(db) : SQLITE_ERROR;
    ct_status st = CT_ERR_IO;
    if (code == SQLITE_NOMEM) {
        st = CT_ERR_NOMEM;
    } else if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) {
        st = CT_ERR_FORMAT;
    }
    return ct_fail(ctx, st, "database: %s: %s", what, db != NULL ? sqlite3_errmsg(db) : "error");
}

static ct_status user_version(ct_ctx *ctx, sqlite3 *db, const char *path, int *ver)
{
    sqlite3_stmt *q = NULL;
    ct_status st = CT_OK;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL) != SQLITE_OK ||
        sqlite3_step(q) != SQLITE_ROW) {
        st = sto_fail(ctx, db, path);
    } else {
        *ver = sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
    return st;
}

/* Bring a v1 database to v2 in one write transaction. Another process may
 * migrate at the same time: the version is read again under the write lock,
 * so only one of them does the work. */
static ct_status migrate(ct_ctx *ctx, sqlite3 *db, const char *path)
{
    int ver = 0;
    ct_status st = sto_begin(ctx, db);
    if (st != CT_OK) {
        return st;
    }
    st = user_version(ctx, db, path, &ver);
    if (st == CT_OK && ver == 1) {
        if (sqlite3_exec(db, SCHEMA_V2, NULL, NULL, NULL) != SQLITE_OK) {
            st = sto_fail(ctx, db, "migrate to schema 2");
        }
    } else if (st == CT_OK && ver != STO_SCHEMA_VERSION) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: database schema version %d is not supported", path,
                     ver);
    }
    if (st != CT_OK) {
        sto_rollback(db);
        return st;
    }
    return sto_commit(ctx, db);
}

static ct_status open_db(ct_ctx *ctx, const char *path, int flags, sqlite3 **out)
{
    sqlite3 *db = NULL;
    *out = NULL;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        ct_status st = sto_fail(ctx, db, "open");
        sqlite3_close_v2(db);
        return st;
    }
    sqlite3_busy_timeout(db, 30000);
    sqlite3_extended_result_codes(db, 0);
    /* FULL: a committed record must survive a power cut before its output
     * file is renamed into place (WAL's NORMAL may lose the last commits). */
    sqlite3_exec(db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    *out = db;
    return CT_OK;
}

ct_status sto_create(ct_ctx *ctx)
{
    ct_status st;
    char *path = NULL;
    sqlite3 *db = NULL;
    struct stat sb;

    st = ct_home_path(ctx, STO_DB_NAME, &path);
    if (st != CT_OK) {
        goto done;
    }
    if (stat(path, &sb) == 0) {
        st = ct_fail(ctx, CT_ERR_EXISTS, "%s already exists", path);
        goto done;
    }
    st = open_db(ctx, path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &db);
    if (st != CT_OK) {
        goto done;
    }
    if (chmod(path, 0600) != 0) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (sqlite3_exec(db, SCHEMA_V1, NULL, NULL, NULL) != SQLITE_OK) {
        st = sto_fail(ctx, db, "create schema");
        goto done;
    }
    st = migrate(ctx, db, path);
done:
    sqlite3_close_v2(db);
    if (st != CT_OK && path != NULL && st != CT_ERR_EXISTS) {
        unlink(path);
    }
    free(path);
    return st;
}

ct_status sto_db(ct_ctx *ctx, sqlite3 **out)
{
    ct_status st;
    char *path = NULL;
    sqlite3 *db = ct_slot_get(ctx, CT_SLOT_STORE);
    struct stat sb;

    *out = NULL;
    if (db != NULL) {
        *out = db;
        return CT_OK;
    }
    st = ct_home_path(ctx, STO_DB_NAME, &path);
    if (st != CT_OK) {
        goto done;
    }
    if (stat(path, &sb) != 0) {
        st = ct_fail(ctx, CT_ERR_NOT_FOUND, "no celtrace home at %s: run 'celtrace init' first",
                     ctx->home);
        goto done;
    }
    st = open_db(ctx, path, SQLITE_OPEN_READWRITE, &db);
    if (st != CT_OK) {
        goto done;
    }
    int ver = 0;
    st = user_version(ctx, db, path, &ver);
    if (st != CT_OK) {
        goto done;
    }
    if (ver == 1) {
        st = migrate(ctx, db, path);
        if (st != CT_OK) {
            goto done;
        }
        ver = STO_SCHEMA_VERSION;
    }
    if (ver != STO_SCHEMA_VERSION) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: database schema version %d is not supported", path,
                     ver);
        goto done;
    }
    ct_slot_set(ctx, CT_SLOT_STORE, db, db_close);
    *out = db;
    db = NULL;
done:
    sqlite3_close_v2(db);
    free(path);
    return st;
}

ct_status sto_begin(ct_ctx *ctx, sqlite3 *db)
{
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        return sto_fail(ctx, db, "begin");
    }
    return CT_OK;
}

ct_status sto_commit(ct_ctx *ctx, sqlite3 *db)
{
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        ct_status st = sto_fail(ctx, db, "commit");
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return st;
    }
    return CT_OK;
}

void sto_rollback(sqlite3 *db)
{
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

/* store: SQLite database of the studio home. */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Schema v1: the vendor registry. The ledger adds its tables in a later
 * schema version; readers refuse versions they do not know. */
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
    sqlite3_stmt *q = NULL;
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
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL) != SQLITE_OK ||
        sqlite3_step(q) != SQLITE_ROW) {
        st = sto_fail(ctx, db, path);
        goto done;
    }
    int ver = sqlite3_column_int(q, 0);
    if (ver != STO_SCHEMA_VERSION) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: database schema version %d is not supported", path,
                     ver);
        goto done;
    }
    ct_slot_set(ctx, CT_SLOT_STORE, db, db_close);
    *out = db;
    db = NULL;
done:
    sqlite3_finalize(q);
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

/* store: the one module that opens the studio database (SQLite, WAL).
 * The vendor registry (keys/) and the ledger (ledger/) both use it, so
 * neither imports the other; a PostgreSQL backend would replace this file. */
#ifndef CT_STORE_H
#define CT_STORE_H

#include <sqlite3.h>

#include "core/core.h"

#define STO_DB_NAME        "celtrace.db"
#define STO_SCHEMA_VERSION 1

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

#endif

/* store + keys: the vendor registry through the public API. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

#include <celtrace/celtrace.h>

#include "store/store.h"
#include "testutil.h"

static const char PASS[] = "registry pass";

static void join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "path too long: %s/%s\n", dir, name);
        exit(2);
    }
}

static void test_names(ct_ctx *ctx)
{
    ct_vendor v;
    char longname[CT_NAME_MAX + 8];

    const char *bad[] = {
        "",           "123",         "0",           "\xff",        "ok\xff",
        "a\tb",       "a\nb",        "a\x7f",       " lead",       "trail ",
        " ",          "\xc0\xaf",    /* overlong '/' */
        "\xed\xa0\x80", /* surrogate */
        "\xc2\x85",   /* C1 NEL */
        "\xe6\x97",   /* cut multibyte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ct_status st = ct_vendor_add(ctx, bad[i], NULL, NULL, &v);
        if (st != CT_ERR_MISUSE) {
            fprintf(stderr, "bad name %zu accepted or wrong status %d\n", i, (int)st);
        }
        CHECK_ST(st, CT_ERR_MISUSE);
        CHECK(v.id == 0);
    }
    CHECK_ST(ct_vendor_add(ctx, NULL, NULL, NULL, &v), CT_ERR_MISUSE);

    /* 127 bytes is the longest name; 128 and more are refused. */
    memset(longname, 'x', sizeof longname);
    longname[CT_NAME_MAX + 7] = '\0';
    CHECK_ST(ct_vendor_add(ctx, longname, NULL, NULL, &v), CT_ERR_MISUSE);
    longname[CT_NAME_MAX] = '\0';
    CHECK_ST(ct_vendor_add(ctx, longname, NULL, NULL, &v), CT_ERR_MISUSE);
    longname[CT_NAME_MAX - 1] = '\0';
    CHECK_ST(ct_vendor_add(ctx, longname, NULL, NULL, &v), CT_OK);
    CHECK(strlen(v.name) == CT_NAME_MAX - 1);
    CHECK(strcmp(v.name, longname) == 0);

    /* Digits with anything else are a name, not an id. */
    CHECK_ST(ct_vendor_add(ctx, "42nd Street Ink", NULL, NULL, &v), CT_OK);
    CHECK_ST(ct_vendor_add(ctx, "Studio Ghibli 日本", "jp", NULL, &v), CT_OK);
    CHECK(strcmp(v.name, "Studio Ghibli 日本") == 0);
    CHECK(strcmp(v.country, "JP") == 0);
}

static void test_registry(const char *home)
{
    ct_ctx *ctx = NULL, *locked = NULL;
    ct_vendor a, b, c, v;
    ct_vendor *all = NULL;
    size_t n = 0;

    CHECK_ST(ct_ctx_new(home, &locked), CT_OK);
    if (locked == NULL) {
        return;
    }
    /* No home yet: reading says run init. */
    CHECK_ST(ct_vendor_list(locked, &all, &n), CT_ERR_NOT_FOUND);
    CHECK(all == NULL && n == 0);
    CHECK(strstr(ct_errmsg(locked), "init") != NULL);
    CHECK_ST(ct_vendor_find(locked, "Inkwell", &v), CT_ERR_NOT_FOUND);

    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    if (ctx == NULL) {
        goto done;
    }
    CHECK_ST(ct_init(ctx, "Registry Studio", PASS, strlen(PASS)), CT_OK);

    /* Empty registry. */
    CHECK_ST(ct_vendor_list(locked, &all, &n), CT_OK);
    CHECK(n == 0 && all == NULL);
    ct_free(all);
    all = NULL;

    /* Adding needs the keystore unlocked; reading does not. */
    CHECK_ST(ct_vendor_add(locked, "Inkwell", NULL, NULL, &v), CT_ERR_AUTH);
    CHECK(v.id == 0);

    CHECK_ST(ct_vendor_add(ctx, "Inkwell", "kr", "ops@inkwell.example", &a), CT_OK);
    CHECK(a.id == 1);
    CHECK(a.epoch == 1);
    CHECK(strcmp(a.name, "Inkwell") == 0);
    CHECK(strcmp(a.country, "KR") == 0);
    CHECK(strcmp(a.contact, "ops@inkwell.example") == 0);
    CHECK(a.created_at > 1600000000);
    CHECK(a.revoked_at == 0);

    CHECK_ST(ct_vendor_add(ctx, "Paper Crane", NULL, NULL, &b), CT_OK);
    CHECK(b.id == 2);
    CHECK(b.country[0] == '\0' && b.contact[0] == '\0');
    CHECK_ST(ct_vendor_add(ctx, "Moss & Fern", "", "", &c), CT_OK);
    CHECK(c.id == 3);

    /* Duplicate names, exact bytes; a different case is another name. */
    CHECK_ST(ct_vendor_add(ctx, "Inkwell", NULL, NULL, &v), CT_ERR_EXISTS);
    CHECK(v.id == 0);
    CHECK(strstr(ct_errmsg(ctx), "Inkwell") != NULL);
    CHECK_ST(ct_vendor_add(ctx, "Inkwell", "fr", NULL, &v), CT_ERR_EXISTS);

    /* Country: two letters, stored upper case. */
    const char *bad_cc[] = {"K", "KOR", "1A", "k-", "日本", "  "};
    for (size_t i = 0; i < sizeof bad_cc / sizeof bad_cc[0]; i++) {
        CHECK_ST(ct_vendor_add(ctx, "Country Test", bad_cc[i], NULL, &v), CT_ERR_MISUSE);
    }
    CHECK_ST(ct_vendor_add(ctx, "Country Test", "fR", NULL, &v), CT_OK);
    CHECK(strcmp(v.country, "FR") == 0);
    CHECK(v.id == 4);

    /* Contact: one line of UTF-8, bounded. */
    char longc[CT_CONTACT_MAX + 1];
    memset(longc, 'c', sizeof longc);
    longc[CT_CONTACT_MAX] = '\0';
    CHECK_ST(ct_vendor_add(ctx, "Contact Test", NULL, longc, &v), CT_ERR_MISUSE);
    CHECK_ST(ct_vendor_add(ctx, "Contact Test", NULL, "two\nlines", &v), CT_ERR_MISUSE);
    CHECK_ST(ct_vendor_add(ctx, "Contact Test", NULL, "\xff", &v), CT_ERR_MISUSE);

    test_names(ctx);

    /* Find by name and by id, from a context that never unlocked. */
    CHECK_ST(ct_vendor_find(locked, "Paper Crane", &v), CT_OK);
    CHECK(v.id == 2);
    CHECK_ST(ct_vendor_find(locked, "2", &v), CT_OK);
    CHECK(strcmp(v.name, "Paper Crane") == 0);
    CHECK_ST(ct_vendor_find(locked, "002", &v), CT_OK);
    CHECK(v.id == 2);
    CHECK_ST(ct_vendor_find(locked, "Studio Ghibli 日本", &v), CT_OK);
    CHECK(strcmp(v.country, "JP") == 0);
    CHECK_ST(ct_vendor_find(locked, "paper crane", &v), CT_ERR_NOT_FOUND);
    CHECK(v.id == 0);
    CHECK_ST(ct_vendor_find(locked, "999", &v), CT_ERR_NOT_FOUND);
    CHECK_ST(ct_vendor_find(locked, "0", &v), CT_ERR_NOT_FOUND);
    CHECK_ST(ct_vendor_find(locked, "4294967297", &v), CT_ERR_NOT_FOUND);
    CHECK_ST(ct_vendor_find(locked, "99999999999999999999999", &v), CT_ERR_NOT_FOUND);
    CHECK_ST(ct_vendor_find(locked, "", &v), CT_ERR_MISUSE);
    CHECK_ST(ct_vendor_find(locked, "nosuch", &v), CT_ERR_NOT_FOUND);
    CHECK(strstr(ct_errmsg(locked), "nosuch") != NULL);

    /* List: every vendor, by id, ids strictly increasing. */
    CHECK_ST(ct_vendor_list(locked, &all, &n), CT_OK);
    CHECK(n == 7);
    if (all != NULL && n == 7) {
        int increasing = 1;
        for (size_t i = 0; i < n; i++) {
            if (all[i].id != i + 1) {
                increasing = 0;
            }
        }
        CHECK(increasing);
        CHECK(strcmp(all[0].name, "Inkwell") == 0);
        CHECK(strcmp(all[2].name, "Moss & Fern") == 0);
        CHECK(strcmp(all[6].name, "Studio Ghibli 日本") == 0);
    }
    ct_free(all);
    all = NULL;

    /* Revoke: needs unlock, once; the vendor stays findable. */
    CHECK_ST(ct_vendor_revoke(locked, "Paper Crane", &v), CT_ERR_AUTH);
    CHECK_ST(ct_vendor_revoke(ctx, "nosuch", &v), CT_ERR_NOT_FOUND);
    CHECK_ST(ct_vendor_revoke(ctx, "2", &v), CT_OK);
    CHECK(v.id == 2 && v.revoked_at != 0);
    CHECK_ST(ct_vendor_revoke(ctx, "Paper Crane", &v), CT_ERR_MISUSE);
    CHECK(strstr(ct_errmsg(ctx), "revoked") != NULL);
    CHECK_ST(ct_vendor_find(locked, "Paper Crane", &v), CT_OK);
    CHECK(v.revoked_at >= v.created_at && v.revoked_at != 0);
    CHECK_ST(ct_vendor_find(locked, "Inkwell", &v), CT_OK);
    CHECK(v.revoked_at == 0);

    /* Ids are never reused, even after a revoke. */
    CHECK_ST(ct_vendor_add(ctx, "Late Comer", NULL, NULL, &v), CT_OK);
    CHECK(v.id == 8);
    /* A revoked vendor's name stays taken. */
    CHECK_ST(ct_vendor_add(ctx, "Paper Crane", NULL, NULL, &v), CT_ERR_EXISTS);

    /* JSON: one line, parses, has the fields. */
    char *js = NULL;
    CHECK_ST(ct_vendor_find(locked, "Paper Crane", &v), CT_OK);
    CHECK_ST(ct_vendor_json(&v, &js), CT_OK);
    CHECK(js != NULL && strchr(js, '\n') == NULL);
    json_error_t jerr;
    json_t *o = js != NULL ? json_loads(js, 0, &jerr) : NULL;
    CHECK(o != NULL && json_is_object(o));
    if (o != NULL) {
        CHECK(json_integer_value(json_object_get(o, "id")) == 2);
        CHECK(json_is_string(json_object_get(o, "name")));
        CHECK(strcmp(json_string_value(json_object_get(o, "name")), "Paper Crane") == 0);
        CHECK(json_is_string(json_object_get(o, "country")));
        CHECK(json_is_string(json_object_get(o, "contact")));
        CHECK(json_integer_value(json_object_get(o, "epoch")) == 1);
        CHECK(json_is_string(json_object_get(o, "created_at")));
        CHECK(json_is_true(json_object_get(o, "revoked")));
        CHECK(json_is_string(json_object_get(o, "revoked_at")));
        const char *ts = json_string_value(json_object_get(o, "created_at"));
        CHECK(ts != NULL && strlen(ts) == 20 && ts[10] == 'T' && ts[19] == 'Z');
    }
    json_decref(o);
    ct_free(js);
    js = NULL;

    CHECK_ST(ct_vendor_find(locked, "Studio Ghibli 日本", &v), CT_OK);
    CHECK_ST(ct_vendor_json(&v, &js), CT_OK);
    o = js != NULL ? json_loads(js, 0, &jerr) : NULL;
    CHECK(o != NULL);
    if (o != NULL) {
        CHECK(strcmp(json_string_value(json_object_get(o, "name")), "Studio Ghibli 日本") == 0);
        CHECK(json_is_false(json_object_get(o, "revoked")));
        CHECK(json_is_null(json_object_get(o, "revoked_at")));
        CHECK(strcmp(json_string_value(json_object_get(o, "country")), "JP") == 0);
    }
    json_decref(o);
    ct_free(js);
    js = NULL;

    /* Quotes and backslashes survive JSON. */
    CHECK_ST(ct_vendor_add(ctx, "Quote \"Q\" \\ Slash", NULL, "a\"b", &v), CT_OK);
    CHECK_ST(ct_vendor_json(&v, &js), CT_OK);
    o = js != NULL ? json_loads(js, 0, &jerr) : NULL;
    CHECK(o != NULL);
    if (o != NULL) {
        CHECK(strcmp(json_string_value(json_object_get(o, "name")), "Quote \"Q\" \\ Slash") == 0);
        CHECK(strcmp(json_string_value(json_object_get(o, "contact")), "a\"b") == 0);
    }
    json_decref(o);
    ct_free(js);

done:
    ct_ctx_free(ctx);
    ct_ctx_free(locked);
}

static int set_user_version(const char *db_path, int ver)
{
    sqlite3 *db = NULL;
    char sql[64];
    int rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof sql, "PRAGMA user_version=%d", ver);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    sqlite3_close(db);
    return rc;
}

/* A serial claim runs at synchronous=NORMAL (the record's own commit
 * syncs it): the connection must be back at FULL after every claim, taken
 * or refused, or later records would not be durable. */
static int sync_level(ct_ctx *ctx)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int level = -1;
    if (sto_db(ctx, &db) == CT_OK &&
        sqlite3_prepare_v2(db, "PRAGMA synchronous", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        level = sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
    return level;
}

static void test_serial_claim(const char *home)
{
    ct_ctx *ctx = NULL;
    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    if (ctx == NULL) {
        return;
    }
    CHECK(sync_level(ctx) == 2); /* FULL */
    CHECK_ST(sto_serial_claim(ctx, 77), CT_OK);
    CHECK(sync_level(ctx) == 2);
    CHECK_ST(sto_serial_claim(ctx, 77), CT_ERR_EXISTS);
    CHECK(sync_level(ctx) == 2);
    CHECK_ST(sto_serial_claim(ctx, 0), CT_ERR_MISUSE);
    CHECK(sync_level(ctx) == 2);
    ct_ctx_free(ctx);
}

static void test_schema_version(const char *home)
{
    char db_path[4300];
    ct_ctx *ctx = NULL;
    ct_vendor *all = NULL;
    ct_vendor v;
    size_t n = 0;

    join(db_path, sizeof db_path, home, STO_DB_NAME);
    CHECK(set_user_version(db_path, 99) == SQLITE_OK);

    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    if (ctx == NULL) {
        return;
    }
    CHECK_ST(ct_vendor_list(ctx, &all, &n), CT_ERR_FORMAT);
    CHECK(all == NULL && n == 0);
    CHECK(strstr(ct_errmsg(ctx), "99") != NULL);
    CHECK_ST(ct_vendor_find(ctx, "Inkwell", &v), CT_ERR_FORMAT);
    CHECK_ST(ct_unlock(ctx, PASS, strlen(PASS)), CT_OK);
    CHECK_ST(ct_vendor_add(ctx, "Newcomer", NULL, NULL, &v), CT_ERR_FORMAT);
    ct_ctx_free(ctx);
    ctx = NULL;

    /* Not a database at all. */
    CHECK(set_user_version(db_path, STO_SCHEMA_VERSION) == SQLITE_OK);
    FILE *f = fopen(db_path, "r+b");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs("this is not sqlite", f);
        fclose(f);
    }
    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    CHECK_ST(ct_vendor_list(ctx, &all, &n), CT_ERR_FORMAT);
    CHECK(all == NULL && n == 0);
    ct_ctx_free(ctx);
}

int main(void)
{
    char home[4200];
    join(home, sizeof home, tu_tmpdir("store"), "home");
    test_registry(home);
    test_serial_claim(home);
    test_schema_version(home);
    return tu_done("test_store");
}

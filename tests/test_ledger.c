/* ledger: the canonical encoding against known answers, the chain through
 * real embeds, every kind of tampering (named by record), exports checked
 * with the public key alone, and the v1 -> v2 schema migration. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>
#include <sqlite3.h>

#include <celtrace/celtrace.h>

#include "ledger/ledger.h"
#include "store/store.h"
#include "testutil.h"

static const char PASS[] = "ledger pass";
#define NREC 6

static void join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "path too long: %s/%s\n", dir, name);
        exit(2);
    }
}

/* ---- known answers ------------------------------------------------------ */

static void kat_record(sto_record *r, int which)
{
    memset(r, 0, sizeof *r);
    if (which == 1) {
        r->id = 1;
        r->serial = 0x89abcdefu;
        r->vendor_id = 7;
        strcpy(r->vendor, "Inkwell Studio");
        strcpy(r->asset, "ep12/sc04_bg.png");
        strcpy(r->original, "/studio/ep12/sc04_bg.png");
        for (int i = 0; i < 32; i++) {
            r->input_sha256[i] = (uint8_t)i;
            r->output_sha256[i] = (uint8_t)(32 + i);
        }
        uint64_t ph = 0x0123456789abcdefull;
        for (int i = 0; i < 8; i++) {
            r->phash[i] = (uint8_t)(ph >> (56 - 8 * i));
        }
        r->algo_version = 1;
        r->strength = 1.5;
        r->issued_at = 1718000000;
        strcpy(r->issued_by, "coord@ws-07");
    } else {
        r->id = 2;
        r->serial = 1;
        r->vendor_id = 1;
        strcpy(r->vendor, "\xe6\x97\xa5\xe6\x9c\xac Ink");
        strcpy(r->asset, "cel 003.png");
        memset(r->input_sha256, 0xff, 32);
        memset(r->output_sha256, 0xaa, 32);
        r->algo_version = 1;
        r->strength = 0.25;
        r->issued_at = 0;
        strcpy(r->issued_by, "a@b");
    }
}

static void test_kat(void)
{
    char path[4200], line[8192], want[8192];
    const char *kat = getenv("CT_KAT");
    uint8_t pk[32], sk[64], seed[32];
    uint8_t enc[LDG_ENC_MAX], prev[32] = {0};
    char hex[2 * LDG_ENC_MAX + 1];
    int lines = 0;

    for (int i = 0; i < 32; i++) {
        seed[i] = (uint8_t)i;
    }
    crypto_sign_seed_keypair(pk, sk, seed);
    join(path, sizeof path, kat != NULL && kat[0] != '\0' ? kat : "tests/kat", "ledger.exp");
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (f == NULL) {
        return;
    }
    /* Our answers, in the file's order. */
    char mine[8][8192];
    int nmine = 0;
    for (int k = 1; k <= 2; k++) {
        sto_record r;
        uint8_t msg[LDG_SIG_MSG_BYTES];
        kat_record(&r, k);
        memcpy(r.prev_hash, prev, 32);
        size_t n = ldg_encode(&r, enc);
        sodium_bin2hex(hex, sizeof hex, enc, n);
        snprintf(mine[nmine++], sizeof mine[0], "record %d encoding %s", k, hex);
        ldg_record_hash(&r, r.record_hash);
        sodium_bin2hex(hex, sizeof hex, r.record_hash, 32);
        snprintf(mine[nmine++], sizeof mine[0], "record %d hash %s", k, hex);
        ldg_sig_message(r.record_hash, msg);
        crypto_sign_detached(r.signature, NULL, msg, sizeof msg, sk);
        sodium_bin2hex(hex, sizeof hex, r.signature, 64);
        snprintf(mine[nmine++], sizeof mine[0], "record %d signature %s", k, hex);
        CHECK(ldg_record_ok(&r, pk));
        memcpy(prev, r.record_hash, 32);
    }
    float plane[40 * 30];
    for (int y = 0; y < 30; y++) {
        for (int x = 0; x < 40; x++) {
            plane[y * 40 + x] = (float)((7 * x + 13 * y + (x * y) % 11) % 256);
        }
    }
    snprintf(mine[nmine++], sizeof mine[0], "dhash %016" PRIx64, ldg_dhash(plane, 40, 30));
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        CHECK(lines < nmine);
        if (lines < nmine) {
            snprintf(want, sizeof want, "%s", mine[lines]);
            if (strcmp(want, line) != 0) {
                fprintf(stderr, "KAT mismatch:\n  file: %s\n  code: %s\n", line, want);
            }
            CHECK(strcmp(want, line) == 0);
        }
        lines++;
    }
    fclose(f);
    CHECK(lines == nmine);

    /* Any change to a field changes the hash. */
    sto_record a, b;
    uint8_t ha[32], hb[32];
    kat_record(&a, 1);
    ldg_record_hash(&a, ha);
    b = a;
    b.strength = 1.5000000000000002;
    ldg_record_hash(&b, hb);
    CHECK(memcmp(ha, hb, 32) != 0);
    b = a;
    b.issued_at++;
    ldg_record_hash(&b, hb);
    CHECK(memcmp(ha, hb, 32) != 0);
    /* Length prefixes: moving a byte from one string to the next differs. */
    b = a;
    strcpy(b.vendor, "Inkwell Studi");
    strcpy(b.asset, "oep12/sc04_bg.png");
    ldg_record_hash(&b, hb);
    CHECK(memcmp(ha, hb, 32) != 0);
}

/* ---- helpers ------------------------------------------------------------- */

static int sql(const char *home, const char *stmt)
{
    char db_path[4300];
    sqlite3 *db = NULL;
    char *err = NULL;
    join(db_path, sizeof db_path, home, STO_DB_NAME);
    int rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, stmt, NULL, NULL, &err);
    }
    if (rc != SQLITE_OK) {
        fprintf(stderr, "sql failed: %s: %s\n", stmt, err != NULL ? err : sqlite3_errmsg(db));
    }
    sqlite3_free(err);
    sqlite3_close(db);
    return rc;
}

static void copy_home(const char *src, const char *dst)
{
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", dst, src, dst);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot copy %s\n", src);
        exit(2);
    }
}

/* Verify the ledger of home; returns the status, *bad the record named. */
static ct_status verify_home(const char *home, uint64_t *bad, char *msg, size_t cap)
{
    ct_ctx *ctx = NULL;
    uint64_t n = 0;
    *bad = 0;
    if (ct_ctx_new(home, &ctx) != CT_OK) {
        return CT_ERR_NOMEM;
    }
    ct_status st = ct_ledger_verify(ctx, &n, bad);
    snprintf(msg, cap, "%s", ct_errmsg(ctx));
    ct_ctx_free(ctx);
    return st;
}

/* Tamper with a copy of home and expect verify to name record `want`
 * with a message containing `word`. */
static void expect_tamper(const char *home, const char *scratch, const char *desc,
                          const char *stmt, uint64_t want, const char *word)
{
    uint64_t bad = 0;
    char msg[600], rec[32];
    copy_home(home, scratch);
    CHECK(sql(scratch, stmt) == SQLITE_OK);
    ct_status st = verify_home(scratch, &bad, msg, sizeof msg);
    snprintf(rec, sizeof rec, "record %" PRIu64, want);
    if (st != CT_ERR_AUTH || bad != want || strstr(msg, rec) == NULL ||
        (word != NULL && strstr(msg, word) == NULL)) {
        fprintf(stderr, "tamper '%s': status %d, bad %" PRIu64 " (wanted %" PRIu64 "): %s\n",
                desc, (int)st, bad, want, msg);
    }
    CHECK_ST(st, CT_ERR_AUTH);
    CHECK(bad == want);
    CHECK(strstr(msg, rec) != NULL);
    CHECK(strncmp(msg, "ledger: ", 8) == 0);
    if (word != NULL) {
        CHECK(strstr(msg, word) != NULL);
    }
}

static void read_row(const char *home, uint64_t id, sto_record *r)
{
    ct_ctx *ctx = NULL;
    sto_iter *it = NULL;
    sto_filter f = {0};
    memset(r, 0, sizeof *r);
    f.id = id;
    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    CHECK_ST(sto_iter_open(ctx, &f, &it), CT_OK);
    if (it != NULL) {
        CHECK_ST(sto_iter_next(it, r), CT_OK);
    }
    sto_iter_close(it);
    ct_ctx_free(ctx);
}

/* Insert a forged record with a correct hash but a signature by another
 * key (the forger has the database, not the studio key). */
static void insert_forged(const char *home, sto_record *r, int move_head)
{
    char db_path[4300], hex[200];
    uint8_t pk[32], sk[64], msg[LDG_SIG_MSG_BYTES];
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    crypto_sign_keypair(pk, sk);
    ldg_record_hash(r, r->record_hash);
    ldg_sig_message(r->record_hash, msg);
    crypto_sign_detached(r->signature, NULL, msg, sizeof msg, sk);
    join(db_path, sizeof db_path, home, STO_DB_NAME);
    CHECK(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db,
                             "INSERT INTO records(id, serial, vendor_id, vendor, asset, original,"
                             " input_sha256, phash, output_sha256, algo_version, strength,"
                             " issued_at, operator, prev_hash, record_hash, signature)"
                             " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             -1, &q, NULL) == SQLITE_OK);
    sqlite3_bind_int64(q, 1, (sqlite3_int64)r->id);
    sqlite3_bind_int64(q, 2, r->serial);
    sqlite3_bind_int64(q, 3, r->vendor_id);
    sqlite3_bind_text(q, 4, r->vendor, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, r->asset, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, r->original, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 7, r->input_sha256, 32, SQLITE_STATIC);
    sqlite3_bind_blob(q, 8, r->phash, 8, SQLITE_STATIC);
    sqlite3_bind_blob(q, 9, r->output_sha256, 32, SQLITE_STATIC);
    sqlite3_bind_int64(q, 10, r->algo_version);
    sqlite3_bind_double(q, 11, r->strength);
    sqlite3_bind_int64(q, 12, r->issued_at);
    sqlite3_bind_text(q, 13, r->issued_by, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 14, r->prev_hash, 32, SQLITE_STATIC);
    sqlite3_bind_blob(q, 15, r->record_hash, 32, SQLITE_STATIC);
    sqlite3_bind_blob(q, 16, r->signature, 64, SQLITE_STATIC);
    CHECK(sqlite3_step(q) == SQLITE_DONE);
    sqlite3_finalize(q);
    if (move_head) {
        char stmt[600];
        snprintf(stmt, sizeof stmt, "UPDATE meta SET value='%" PRIu64 "' WHERE key='ledger_head_id';",
                 r->id);
        CHECK(sqlite3_exec(db, stmt, NULL, NULL, NULL) == SQLITE_OK);
        sodium_bin2hex(hex, sizeof hex, r->record_hash, 32);
        snprintf(stmt, sizeof stmt, "UPDATE meta SET value='%s' WHERE key='ledger_head_hash';",
                 hex);
        CHECK(sqlite3_exec(db, stmt, NULL, NULL, NULL) == SQLITE_OK);
        sodium_bin2hex(hex, sizeof hex, r->signature, 64);
        snprintf(stmt, sizeof stmt, "UPDATE meta SET value='%s' WHERE key='ledger_head_sig';",
                 hex);
        CHECK(sqlite3_exec(db, stmt, NULL, NULL, NULL) == SQLITE_OK);
    }
    sqlite3_close(db);
}

static size_t count_records(ct_ctx *ctx, const ct_ledger_filter *f)
{
    ct_record *all = NULL;
    size_t n = 0;
    CHECK_ST(ct_ledger_list(ctx, f, &all, &n), CT_OK);
    for (size_t i = 0; i < n; i++) {
        CHECK(all[i].signature_valid);
    }
    ct_free(all);
    return n;
}

/* ---- an honest ledger ------------------------------------------------------ */

static void build_home(const char *home, const char *work)
{
    ct_ctx *ctx = NULL;
    ct_vendor v;
    char out[4300], asset[32];
    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    if (ctx == NULL) {
        exit(2);
    }
    CHECK_ST(ct_init(ctx, "Ledger Test Studio", PASS, strlen(PASS)), CT_OK);
    CHECK_ST(ct_unlock(ctx, PASS, strlen(PASS)), CT_OK);
    CHECK_ST(ct_vendor_add(ctx, "Inkwell", NULL, NULL, &v), CT_OK);
    CHECK_ST(ct_vendor_add(ctx, "Birch", NULL, NULL, &v), CT_OK);
    CHECK(count_records(ctx, NULL) == 0);
    uint64_t n = 99, bad = 99;
    CHECK_ST(ct_ledger_verify(ctx, &n, &bad), CT_OK);
    CHECK(n == 0 && bad == 0);

    uint32_t serials[NREC];
    for (int i = 0; i < NREC; i++) {
        ct_embed_opts eo = {1.0, 0, NULL, NULL};
        ct_embed_result r;
        snprintf(asset, sizeof asset, "asset-%d", i + 1);
        eo.asset = asset;
        if (i == 0) {
            eo.issued_by = "coord@ws-07";
        }
        snprintf(out, sizeof out, "%s/out%d.png", work, i + 1);
        CHECK_ST(ct_embed_file(ctx, i % 2 == 0 ? "Inkwell" : "Birch",
                               tu_sample("images/cel_headmo_rgba_640x480.png"), out, &eo, &r),
                 CT_OK);
        CHECK(r.record_id == (uint64_t)i + 1);
        serials[i] = r.serial;
        for (int k = 0; k < i; k++) {
            CHECK(serials[k] != r.serial);
        }
        ct_record rec;
        CHECK_ST(ct_ledger_get(ctx, r.record_id, &rec), CT_OK);
        CHECK(rec.serial == r.serial && rec.vendor_id == r.vendor_id);
        CHECK(strcmp(rec.asset, asset) == 0);
        CHECK(rec.signature_valid);
        CHECK(rec.algo_version == 1 && rec.strength == 1.0);
        CHECK(strstr(rec.original, "cel_headmo_rgba_640x480.png") != NULL);
        CHECK(strchr(rec.issued_by, '@') != NULL);
    }
    ct_record rec;
    CHECK_ST(ct_ledger_get(ctx, 1, &rec), CT_OK);
    CHECK(strcmp(rec.issued_by, "coord@ws-07") == 0);
    CHECK(strcmp(rec.prev_hash, "0000000000000000000000000000000000000000000000000000000000000000") == 0);
    CHECK_ST(ct_ledger_get(ctx, NREC + 1, &rec), CT_ERR_NOT_FOUND);
    CHECK_ST(ct_ledger_get(ctx, 0, &rec), CT_ERR_NOT_FOUND);
    CHECK_ST(ct_ledger_find_serial(ctx, serials[2], 1, &rec), CT_OK);
    CHECK(rec.id == 3);
    CHECK_ST(ct_ledger_find_serial(ctx, serials[2], 2, &rec), CT_ERR_NOT_FOUND);

    /* Filters. */
    ct_ledger_filter f = {"Inkwell", NULL, 0};
    CHECK(count_records(ctx, &f) == NREC / 2);
    f.vendor = "2";
    CHECK(count_records(ctx, &f) == NREC / 2);
    f.vendor = NULL;
    f.asset = "asset-4";
    CHECK(count_records(ctx, &f) == 1);
    f.asset = NULL;
    f.since = 4102444800; /* 2100-01-01 */
    CHECK(count_records(ctx, &f) == 0);
    f.since = 1;
    CHECK(count_records(ctx, &f) == NREC);
    ct_record *all = NULL;
    size_t nall = 0;
    f.vendor = "Nobody";
    CHECK_ST(ct_ledger_list(ctx, &f, &all, &nall), CT_ERR_NOT_FOUND);
    CHECK(all == NULL && nall == 0);

    /* A failed embed leaves no record (and no serial is wasted when the
     * output folder is missing). Bad asset names are refused. */
    snprintf(out, sizeof out, "%s/no/such/o.png", work);
    ct_embed_result r;
    CHECK_ST(ct_embed_file(ctx, "Inkwell", tu_sample("images/cel_headmo_rgba_640x480.png"), out,
                           NULL, &r),
             CT_ERR_IO);
    ct_embed_opts bad_asset = {1.0, 0, "tab\there", NULL};
    snprintf(out, sizeof out, "%s/o.png", work);
    CHECK_ST(ct_embed_file(ctx, "Inkwell", tu_sample("images/cel_headmo_rgba_640x480.png"), out,
                           &bad_asset, &r),
             CT_ERR_MISUSE);
    CHECK(count_records(ctx, NULL) == NREC);
    CHECK_ST(ct_ledger_verify(ctx, &n, &bad), CT_OK);
    CHECK(n == NREC);

    /* The verdict carries its record. */
    ct_verdict vd;
    snprintf(out, sizeof out, "%s/out3.png", work);
    CHECK_ST(ct_verify_file(ctx, out, &vd), CT_OK);
    CHECK(vd.identified && vd.has_record);
    CHECK(vd.record.id == 3 && vd.record.serial == serials[2]);
    CHECK(strcmp(vd.record.asset, "asset-3") == 0 && vd.record.signature_valid);
    char *js = NULL;
    CHECK_ST(ct_verdict_json("out3.png", &vd, &js), CT_OK);
    json_error_t err;
    json_t *o = js != NULL ? json_loads(js, 0, &err) : NULL;
    CHECK(o != NULL);
    json_t *jr = json_object_get(o, "record");
    CHECK(json_integer_value(json_object_get(jr, "id")) == 3);
    CHECK(json_is_true(json_object_get(jr, "signature_valid")));
    CHECK(strcmp(json_string_value(json_object_get(jr, "asset")), "asset-3") == 0);
    json_decref(o);
    ct_free(js);
    /* An unmarked file: record null. */
    CHECK_ST(ct_verify_file(ctx, tu_sample("images/cel_headmo_rgba_640x480.png"), &vd), CT_OK);
    CHECK(!vd.identified && !vd.has_record);
    CHECK_ST(ct_verdict_json("x.png", &vd, &js), CT_OK);
    o = js != NULL ? json_loads(js, 0, &err) : NULL;
    CHECK(json_is_null(json_object_get(o, "record")));
    json_decref(o);
    ct_free(js);
    /* ct_record_json round trip. */
    CHECK_ST(ct_ledger_get(ctx, 2, &rec), CT_OK);
    CHECK_ST(ct_record_json(&rec, &js), CT_OK);
    o = js != NULL ? json_loads(js, 0, &err) : NULL;
    CHECK(strcmp(json_string_value(json_object_get(o, "record_hash")), rec.record_hash) == 0);
    CHECK(json_integer_value(json_object_get(o, "serial")) == (json_int_t)rec.serial);
    json_decref(o);
    ct_free(js);
    ct_ctx_free(ctx);
}

/* ---- tampering ---------------------------------------------------------------- */

static void test_tamper(const char *home, const char *scratch)
{
    expect_tamper(home, scratch, "edit asset", "UPDATE records SET asset='other' WHERE id=3", 3,
                  "altered");
    expect_tamper(home, scratch, "edit vendor", "UPDATE records SET vendor_id=2 WHERE id=1", 1,
                  "altered");
    expect_tamper(home, scratch, "edit time", "UPDATE records SET issued_at=issued_at+1 WHERE id=5",
                  5, "altered");
    expect_tamper(home, scratch, "edit strength", "UPDATE records SET strength=2.0 WHERE id=2", 2,
                  NULL);
    expect_tamper(home, scratch, "wrong type",
                  "UPDATE records SET output_sha256=hex(output_sha256) WHERE id=4", 4, "altered");
    expect_tamper(home, scratch, "bad signature",
                  "UPDATE records SET signature=zeroblob(64) WHERE id=2", 2, "signature");
    expect_tamper(home, scratch, "delete middle", "DELETE FROM records WHERE id=3", 3, "missing");
    expect_tamper(home, scratch, "delete first", "DELETE FROM records WHERE id=1", 1, "missing");
    expect_tamper(home, scratch, "delete last", "DELETE FROM records WHERE id=6", 6, "missing");
    expect_tamper(home, scratch, "delete last two", "DELETE FROM records WHERE id>=5", 5,
                  "missing");
    expect_tamper(home, scratch, "swap order",
                  "UPDATE records SET id=-2 WHERE id=2; UPDATE records SET id=2 WHERE id=3;"
                  " UPDATE records SET id=3 WHERE id=-2;",
                  2, NULL);
    expect_tamper(home, scratch, "swap contents but keep ids",
                  "UPDATE records SET id=-4 WHERE id=4; UPDATE records SET id=4 WHERE id=5;"
                  " UPDATE records SET id=5 WHERE id=-4;",
                  4, NULL);
    expect_tamper(home, scratch, "head moved back",
                  "UPDATE meta SET value='5' WHERE key='ledger_head_id'", 6, NULL);
    expect_tamper(home, scratch, "head damaged",
                  "UPDATE meta SET value='zz' WHERE key='ledger_head_hash'", 6, "head");

    /* Forged records: correct chain hashes, but not the studio's key. */
    sto_record r;
    uint64_t bad = 0;
    char msg[600];
    copy_home(home, scratch);
    read_row(scratch, NREC, &r);
    memcpy(r.prev_hash, r.record_hash, 32);
    r.id = NREC + 1;
    r.serial ^= 0x5a5a5a5au;
    strcpy(r.asset, "forged");
    insert_forged(scratch, &r, 1);
    CHECK_ST(verify_home(scratch, &bad, msg, sizeof msg), CT_ERR_AUTH);
    CHECK(bad == NREC + 1);
    CHECK(strstr(msg, "signature") != NULL);

    copy_home(home, scratch);
    read_row(scratch, 3, &r);
    CHECK(sql(scratch, "UPDATE records SET id=id+100 WHERE id>=4;"
                       " UPDATE records SET id=id-99 WHERE id>=104;") == SQLITE_OK);
    memcpy(r.prev_hash, r.record_hash, 32);
    r.id = 4;
    r.serial ^= 0x33333333u;
    strcpy(r.asset, "inserted");
    insert_forged(scratch, &r, 0);
    CHECK_ST(verify_home(scratch, &bad, msg, sizeof msg), CT_ERR_AUTH);
    CHECK(bad == 4);

    /* Nothing is appended to an altered ledger. */
    ct_ctx *ctx = NULL;
    ct_embed_result er;
    char out[4300];
    copy_home(home, scratch);
    CHECK(sql(scratch, "DELETE FROM records WHERE id=6") == SQLITE_OK);
    CHECK_ST(ct_ctx_new(scratch, &ctx), CT_OK);
    CHECK_ST(ct_unlock(ctx, PASS, strlen(PASS)), CT_OK);
    join(out, sizeof out, scratch, "o.png");
    CHECK_ST(ct_embed_file(ctx, "Inkwell", tu_sample("images/cel_headmo_rgba_640x480.png"), out,
                           NULL, &er),
             CT_ERR_AUTH);
    CHECK(strstr(ct_errmsg(ctx), "ledger verify") != NULL);
    FILE *f = fopen(out, "rb");
    CHECK(f == NULL);
    if (f != NULL) {
        fclose(f);
    }
    ct_ctx_free(ctx);
}

/* ---- export and check ---------------------------------------------------------- */

static int read_lines(const char *path, char lines[][4096], int max)
{
    FILE *f = fopen(path, "r");
    int n = 0;
    if (f == NULL) {
        return -1;
    }
    while (n < max && fgets(lines[n], 4096, f) != NULL) {
        n++;
    }
    fclose(f);
    return n;
}

/* Write lines in the given order (indices; -1 ends). */
static void write_lines(const char *path, char lines[][4096], const int *order)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f == NULL) {
        return;
    }
    for (int i = 0; order[i] >= 0; i++) {
        fputs(lines[order[i]], f);
    }
    fclose(f);
}

static void expect_check(const char *exp, const char *pub, ct_status want, uint64_t want_bad,
                         const char *desc)
{
    ct_ctx *ctx = NULL;
    uint64_t n = 0, bad = 99;
    CHECK_ST(ct_ctx_new("/nonexistent/celtrace-home", &ctx), CT_OK);
    ct_status st = ct_ledger_check_export(ctx, exp, pub, &n, &bad);
    if (st != want || (want == CT_ERR_AUTH && bad != want_bad)) {
        fprintf(stderr, "check '%s': status %d bad %" PRIu64 ": %s\n", desc, (int)st, bad,
                ct_errmsg(ctx));
    }
    CHECK_ST(st, want);
    if (want == CT_OK) {
        CHECK(n == NREC);
    }
    if (want == CT_ERR_AUTH) {
        CHECK(bad == want_bad);
        CHECK(strstr(ct_errmsg(ctx), exp) != NULL);
    }
    ct_ctx_free(ctx);
}

static void test_export(const char *home, const char *dir)
{
    char exp[4300], bad_exp[4300], pub[4300], other_pub[4300];
    static char lines[NREC + 2][4096];
    ct_ctx *ctx = NULL;
    join(exp, sizeof exp, dir, "ledger.jsonl");
    join(bad_exp, sizeof bad_exp, dir, "bad.jsonl");
    join(pub, sizeof pub, home, "studio.pub");
    join(other_pub, sizeof other_pub, dir, "other.pub");

    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    CHECK_ST(ct_ledger_export(ctx, exp), CT_OK);
    ct_ctx_free(ctx);
    expect_check(exp, pub, CT_OK, 0, "honest");

    int n = read_lines(exp, lines, NREC + 2);
    CHECK(n == NREC + 1);
    if (n != NREC + 1) {
        return;
    }
    CHECK(strstr(lines[0], "\"format\":\"celtrace-ledger\"") != NULL);
    CHECK(strstr(lines[0], "\"version\":1") != NULL);
    CHECK(strstr(lines[0], "\"studio\":\"Ledger Test Studio\"") != NULL);

    /* Edit a value in record 2's line. */
    char saved[4096];
    memcpy(saved, lines[2], sizeof saved);
    char *p = strstr(lines[2], "\"asset\":\"asset-2\"");
    CHECK(p != NULL);
    if (p != NULL) {
        p[15] = '9';
    }
    int all[] = {0, 1, 2, 3, 4, 5, 6, -1};
    write_lines(bad_exp, lines, all);
    expect_check(bad_exp, pub, CT_ERR_AUTH, 2, "edited line");
    memcpy(lines[2], saved, sizeof saved);
    /* Damaged JSON. */
    lines[4][10] = '{';
    write_lines(bad_exp, lines, all);
    expect_check(bad_exp, pub, CT_ERR_AUTH, 4, "damaged line");
    read_lines(exp, lines, NREC + 2);

    int drop_mid[] = {0, 1, 2, 4, 5, 6, -1};
    write_lines(bad_exp, lines, drop_mid);
    expect_check(bad_exp, pub, CT_ERR_AUTH, 3, "dropped line");
    int drop_last[] = {0, 1, 2, 3, 4, 5, -1};
    write_lines(bad_exp, lines, drop_last);
    expect_check(bad_exp, pub, CT_ERR_AUTH, 6, "dropped last line");
    int swap[] = {0, 1, 3, 2, 4, 5, 6, -1};
    write_lines(bad_exp, lines, swap);
    expect_check(bad_exp, pub, CT_ERR_AUTH, 2, "swapped lines");
    int dup[] = {0, 1, 2, 3, 3, 4, 5, 6, -1};
    write_lines(bad_exp, lines, dup);
    expect_check(bad_exp, pub, CT_ERR_AUTH, 3, "duplicated line");

    /* Another studio's key, a future version, not an export at all. */
    uint8_t opk[32], osk[64];
    char b64[64];
    crypto_sign_keypair(opk, osk);
    sodium_bin2base64(b64, sizeof b64, opk, 32, sodium_base64_VARIANT_ORIGINAL);
    FILE *f = fopen(other_pub, "w");
    CHECK(f != NULL);
    if (f != NULL) {
        fprintf(f, "celtrace-studio-public-key v1\nstudio: Other\ned25519: %s\n", b64);
        fclose(f);
    }
    expect_check(exp, other_pub, CT_ERR_AUTH, 0, "other key");
    p = strstr(lines[0], "\"version\":1");
    if (p != NULL) {
        p[10] = '2';
    }
    write_lines(bad_exp, lines, all);
    expect_check(bad_exp, pub, CT_ERR_FORMAT, 0, "future version");
    expect_check(pub, pub, CT_ERR_FORMAT, 0, "not an export");
    expect_check(exp, exp, CT_ERR_FORMAT, 0, "not a key file");
}

/* ---- migration ------------------------------------------------------------------- */

static int user_version(const char *home)
{
    char db_path[4300];
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int v = -1;
    join(db_path, sizeof db_path, home, STO_DB_NAME);
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        v = sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

static void test_migration(const char *home, const char *scratch)
{
    ct_ctx *ctx = NULL;
    ct_vendor *vs = NULL;
    size_t n = 0;
    uint64_t cnt = 9, bad = 9;

    CHECK(user_version(home) == STO_SCHEMA_VERSION);
    copy_home(home, scratch);
    /* Exactly what a v1 home holds: meta and vendors. */
    CHECK(sql(scratch, "DROP TABLE records; DROP TABLE serials;"
                       " DELETE FROM meta WHERE key LIKE 'ledger_%'; PRAGMA user_version=1;") ==
          SQLITE_OK);
    CHECK(user_version(scratch) == 1);
    CHECK_ST(ct_ctx_new(scratch, &ctx), CT_OK);
    CHECK_ST(ct_vendor_list(ctx, &vs, &n), CT_OK);
    CHECK(n == 2);
    ct_free(vs);
    CHECK_ST(ct_ledger_verify(ctx, &cnt, &bad), CT_OK);
    CHECK(cnt == 0);
    ct_ctx_free(ctx);
    CHECK(user_version(scratch) == 2);

    CHECK(sql(scratch, "PRAGMA user_version=3") == SQLITE_OK);
    CHECK_ST(ct_ctx_new(scratch, &ctx), CT_OK);
    CHECK_ST(ct_ledger_verify(ctx, &cnt, &bad), CT_ERR_FORMAT);
    CHECK(strstr(ct_errmsg(ctx), "3") != NULL);
    ct_ctx_free(ctx);
}

/* The output's hash taken as it is written: in pieces of every size, on a
 * hasher thread (2) and inline (1), it equals the hash of the whole; a
 * stream ended after a failed write frees what it still holds. */
static void test_hash_stream(const char *home)
{
    ct_ctx *ctx = NULL;
    CHECK_ST(ct_ctx_new(home, &ctx), CT_OK);
    size_t n = 300000;
    unsigned char *buf = malloc(n);
    CHECK(buf != NULL);
    if (buf == NULL) {
        ct_ctx_free(ctx);
        return;
    }
    randombytes_buf(buf, n);
    uint8_t want[32], got[32];
    crypto_hash_sha256(want, buf, n);
    for (unsigned threads = 1; threads <= 2; threads++) {
        ldg_hash_stream *hs = NULL;
        CHECK_ST(ldg_hash_stream_start(ctx, threads, &hs), CT_OK);
        size_t off = 0, step = 1;
        while (off < n) {
            size_t k = step < n - off ? step : n - off;
            CHECK(ldg_hash_stream_feed(hs, buf + off, k) == 0);
            off += k;
            step = step * 3 + 7;
        }
        memset(got, 0, sizeof got);
        ldg_hash_stream_end(hs, got);
        CHECK(memcmp(got, want, 32) == 0);
        CHECK_ST(ldg_hash_stream_start(ctx, threads, &hs), CT_OK);
        CHECK(ldg_hash_stream_feed(hs, buf, n / 2) == 0);
        ldg_hash_stream_end(hs, NULL);
    }
    ldg_hash_stream_end(NULL, got);
    free(buf);
    ct_ctx_free(ctx);
}

int main(void)
{
    char home[4200], scratch[4200], work[4200];
    const char *dir = tu_tmpdir("ledger");
    if (sodium_init() < 0) {
        return 2;
    }
    join(home, sizeof home, dir, "home");
    join(scratch, sizeof scratch, dir, "scratch");
    join(work, sizeof work, dir, "work");
    if (system("true") != 0) {
        return 2;
    }
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", work);
    if (system(cmd) != 0) {
        return 2;
    }
    test_kat();
    build_home(home, work);
    test_hash_stream(home);
    test_tamper(home, scratch);
    test_export(home, dir);
    test_migration(home, scratch);
    return tu_done("test_ledger");
}

/* ledger: the canonical encoding, record hashes, signatures and the chain
 * walk (see ledger.h for the byte layout). */
#include "ledger.h"

#include <inttypes.h>
#include <string.h>

#include <sodium.h>

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        *p++ = (uint8_t)(v >> (8 * i));
    }
    return p;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        *p++ = (uint8_t)(v >> (8 * i));
    }
    return p;
}

/* Strings come from fixed buffers of cap bytes; strnlen keeps a buffer
 * without a NUL (a bug elsewhere) from running off its end. */
static uint8_t *put_str(uint8_t *p, const char *s, size_t cap)
{
    size_t n = strnlen(s, cap - 1);
    p = put_u32(p, (uint32_t)n);
    memcpy(p, s, n);
    return p + n;
}

static uint8_t *put_bytes(uint8_t *p, const uint8_t *b, size_t n)
{
    memcpy(p, b, n);
    return p + n;
}

size_t ldg_encode(const sto_record *r, uint8_t out[LDG_ENC_MAX])
{
    uint8_t *p = out;
    uint64_t bits;
    memcpy(&bits, &r->strength, sizeof bits); /* IEEE 754 binary64 on every target we build */
    *p++ = (uint8_t)LDG_ENCODING_VERSION;
    p = put_u64(p, r->id);
    p = put_u32(p, r->serial);
    p = put_u32(p, r->vendor_id);
    p = put_str(p, r->vendor, sizeof r->vendor);
    p = put_str(p, r->asset, sizeof r->asset);
    p = put_str(p, r->original, sizeof r->original);
    p = put_bytes(p, r->input_sha256, sizeof r->input_sha256);
    p = put_bytes(p, r->phash, sizeof r->phash);
    p = put_bytes(p, r->output_sha256, sizeof r->output_sha256);
    p = put_u32(p, r->algo_version);
    p = put_u64(p, bits);
    p = put_u64(p, (uint64_t)r->issued_at);
    p = put_str(p, r->issued_by, sizeof r->issued_by);
    return (size_t)(p - out);
}

void ldg_record_hash(const sto_record *r, uint8_t out[STO_HASH_BYTES])
{
    uint8_t enc[LDG_ENC_MAX];
    crypto_generichash_state s;
    size_t n = ldg_encode(r, enc);
    crypto_generichash_init(&s, NULL, 0, STO_HASH_BYTES);
    crypto_generichash_update(&s, r->prev_hash, STO_HASH_BYTES);
    crypto_generichash_update(&s, enc, n);
    crypto_generichash_final(&s, out, STO_HASH_BYTES);
}

void ldg_sig_message(const uint8_t hash[STO_HASH_BYTES], uint8_t msg[LDG_SIG_MSG_BYTES])
{
    memcpy(msg, LDG_SIG_CONTEXT, LDG_SIG_CONTEXT_LEN);
    memcpy(msg + LDG_SIG_CONTEXT_LEN, hash, STO_HASH_BYTES);
}

static int hash_ok(const sto_record *r)
{
    uint8_t h[STO_HASH_BYTES];
    ldg_record_hash(r, h);
    return sodium_memcmp(h, r->record_hash, sizeof h) == 0;
}

static int sig_ok(const uint8_t hash[STO_HASH_BYTES], const uint8_t sig[STO_SIG_BYTES],
                  const uint8_t *pk)
{
    uint8_t msg[LDG_SIG_MSG_BYTES];
    ldg_sig_message(hash, msg);
    return crypto_sign_verify_detached(sig, msg, sizeof msg, pk) == 0;
}

int ldg_record_ok(const sto_record *r, const uint8_t pk[CT_PUBLICKEYBYTES])
{
    return !r->malformed && hash_ok(r) && sig_ok(r->record_hash, r->signature, pk);
}

void ldg_walk_init(ldg_walk *w, const uint8_t pk[CT_PUBLICKEYBYTES], const char *where)
{
    memset(w, 0, sizeof *w);
    w->pk = pk;
    w->where = where;
    w->next_id = 1;
}

ct_status ldg_walk_step(ct_ctx *ctx, ldg_walk *w, const sto_record *r, uint64_t *bad)
{
    uint64_t id = r->id;
    if (r->malformed) {
        *bad = id != 0 ? id : w->next_id;
        return ct_fail(ctx, CT_ERR_AUTH, "%s: record %" PRIu64 " was altered (a field is not "
                       "what the ledger writes)", w->where, *bad);
    }
    if (id < w->next_id) {
        *bad = id;
        return ct_fail(ctx, CT_ERR_AUTH, "%s: record %" PRIu64 " is out of order (after record "
                       "%" PRIu64 ")", w->where, id, w->next_id - 1);
    }
    if (id > w->next_id) {
        *bad = w->next_id;
        return ct_fail(ctx, CT_ERR_AUTH, "%s: record %" PRIu64 " is missing (the next is %"
                       PRIu64 ")", w->where, w->next_id, id);
    }
    if (sodium_memcmp(r->prev_hash, w->prev, STO_HASH_BYTES) != 0) {
        *bad = id;
        return ct_fail(ctx, CT_ERR_AUTH, "%s: record %" PRIu64 " does not follow record %"
                       PRIu64 " (moved, replaced or inserted)", w->where, id, id - 1);
    }
    if (!hash_ok(r)) {
        *bad = id;
        return ct_fail(ctx, CT_ERR_AUTH, "%s: record %" PRIu64 " was altered (its hash does "
                       "not match its fields)", w->where, id);
    }
    if (!sig_ok(r->record_hash, r->signature, w->pk)) {
        *bad = id;
        return ct_fail(ctx, CT_ERR_AUTH, "%s: record %" PRIu64 " has no valid studio "
                       "signature", w->where, id);
    }
    memcpy(w->prev, r->record_hash, STO_HASH_BYTES);
    w->next_id++;
    w->count++;
    return CT_OK;
}

ct_status ldg_walk_end(ct_ctx *ctx, ldg_walk *w, const sto_head *h, uint64_t *bad)
{
    uint64_t last = w->next_id - 1;
    if (h->malformed) {
        *bad = last != 0 ? last : 1;
        return ct_fail(ctx, CT_ERR_AUTH, "%s: the signed head was altered (the newest record "
                       "is record %" PRIu64 ")", w->where, *bad);
    }
    if (!h->present) {
        if (last == 0) {
            return CT_OK;
        }
        *bad = last;
        return ct_fail(ctx, CT_ERR_AUTH, "%s: record %" PRIu64 " and those before it have no "
                       "signed head", w->where, last);
    }
    if (h->id > last) {
        *bad = last + 1;
        if (h->id == last + 1) {
            return ct_fail(ctx, CT_ERR_AUTH, "%s: record %" PRIu64 " is missing (the signed "
                           "head)", w->where, h->id);
        }
        return ct_fail(ctx, CT_ERR_AUTH, "%s: record %" PRIu64 " is missing, and those after "
                       "it up to the signed head, record %" PRIu64, w->where, last + 1, h->id);
    }
    if (h->id < last) {
        *bad = h->id + 1;
        return ct_fail(ctx, CT_ERR_AUTH, "%s: record %" PRIu64 " comes after the signed head "
                       "(record %" PRIu64 ")", w->where, h->id + 1, h->id);
    }
    if (sodium_memcmp(h->record_hash, w->prev, STO_HASH_BYTES) != 0 ||
        !sig_ok(h->record_hash, h->signature, w->pk)) {
        *bad = last;
        return ct_fail(ctx, CT_ERR_AUTH, "%s: the signed head does not match record %" PRIu64,
                       w->where, last);
    }
    return CT_OK;
}

static void hex(char *out, const uint8_t *b, size_t n)
{
    sodium_bin2hex(out, 2 * n + 1, b, n);
}

void ldg_to_public(const sto_record *r, int valid, ct_record *out)
{
    memset(out, 0, sizeof *out);
    out->id = r->id;
    out->serial = r->serial;
    out->vendor_id = r->vendor_id;
    memcpy(out->vendor, r->vendor, sizeof out->vendor);
    memcpy(out->asset, r->asset, sizeof out->asset);
    memcpy(out->original, r->original, sizeof out->original);
    memcpy(out->issued_by, r->issued_by, sizeof out->issued_by);
    hex(out->input_sha256, r->input_sha256, sizeof r->input_sha256);
    hex(out->phash, r->phash, sizeof r->phash);
    hex(out->output_sha256, r->output_sha256, sizeof r->output_sha256);
    hex(out->prev_hash, r->prev_hash, sizeof r->prev_hash);
    hex(out->record_hash, r->record_hash, sizeof r->record_hash);
    hex(out->signature, r->signature, sizeof r->signature);
    out->algo_version = r->algo_version;
    out->strength = r->strength;
    out->issued_at = r->issued_at;
    out->signature_valid = valid;
}

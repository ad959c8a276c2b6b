/* ledger: issuance records, their hash chain and signatures. Rows are kept
 * by store/ (sto_record_append, sto_iter_*); this module decides what they
 * contain and what makes them valid.
 *
 * Canonical encoding of a record, version 1 (integers little-endian;
 * a string is a u32 byte length then its UTF-8 bytes, no NUL):
 *   u8  version (1)       u64 id              u32 serial
 *   u32 vendor_id         str vendor          str asset
 *   str original          [32] input_sha256   [8] phash (dHash, MSB first)
 *   [32] output_sha256    u32 algo_version    u64 strength (IEEE 754 bits)
 *   i64 issued_at         str operator
 * record_hash = BLAKE2b-256(prev_hash || encoding) (crypto_generichash,
 * no key); the first record's prev_hash is 32 zero bytes. The signature is
 * Ed25519 (studio key) over "celtrace-ledger1" || record_hash: a 16-byte
 * context, so a ledger signature is never valid as anything else.
 * tests/kat/ledger.exp holds a known answer; changing any of this is a new
 * encoding version.
 */
#ifndef CT_LEDGER_H
#define CT_LEDGER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/core.h"
#include "store/store.h"

#define LDG_ENCODING_VERSION 1u
#define LDG_SIG_CONTEXT      "celtrace-ledger1"
#define LDG_SIG_CONTEXT_LEN  16u
#define LDG_SIG_MSG_BYTES    (LDG_SIG_CONTEXT_LEN + STO_HASH_BYTES)
#define LDG_ENC_MAX                                                                       \
    (1u + 8u + 4u + 4u + 4u * 4u + CT_NAME_MAX + CT_ASSET_MAX + CT_RECORD_PATH_MAX +      \
     CT_OPERATOR_MAX + 2u * STO_HASH_BYTES + STO_PHASH_BYTES + 4u + 8u + 8u)

/* The canonical encoding of r (its chain fields excluded); returns its
 * length (at most LDG_ENC_MAX). */
size_t ldg_encode(const sto_record *r, uint8_t out[LDG_ENC_MAX]);

/* BLAKE2b-256(r->prev_hash || encoding of r). */
void ldg_record_hash(const sto_record *r, uint8_t out[STO_HASH_BYTES]);

/* The message the studio key signs for a record hash. */
void ldg_sig_message(const uint8_t hash[STO_HASH_BYTES], uint8_t msg[LDG_SIG_MSG_BYTES]);

/* 1 if r is well formed, its record_hash is its own and its signature
 * verifies under pk; else 0. */
int ldg_record_ok(const sto_record *r, const uint8_t pk[CT_PUBLICKEYBYTES]);

/* Walk a chain record by record (ct_ledger_verify and the export check
 * share it). `where` prefixes messages ("ledger", or the export's path). */
typedef struct ldg_walk {
    const uint8_t *pk;
    const char *where;
    uint64_t next_id;
    uint64_t count;
    uint8_t prev[STO_HASH_BYTES];
} ldg_walk;

void ldg_walk_init(ldg_walk *w, const uint8_t pk[CT_PUBLICKEYBYTES], const char *where);
/* CT_OK, or CT_ERR_AUTH with *bad the record concerned and a message. */
ct_status ldg_walk_step(ct_ctx *ctx, ldg_walk *w, const sto_record *r, uint64_t *bad);
/* After the last record: the chain must end at the signed head h. */
ct_status ldg_walk_end(ct_ctx *ctx, ldg_walk *w, const sto_head *h, uint64_t *bad);

/* Stored row to public record (hex strings); valid goes to
 * signature_valid. */
void ldg_to_public(const sto_record *r, int valid, ct_record *out);

/* A record as a JSON object (ct_record_json's fields; signature_valid only
 * when with_valid). New reference, NULL when out of memory. */
json_t *ldg_record_object(const ct_record *r, int with_valid);

/* ---- issuing (ledger/issue.c) ---- */

/* A fresh serial (random, non-zero), claimed in the store so no other
 * embed, in this process or another, gets it. */
ct_status ldg_claim_serial(ct_ctx *ctx, uint32_t *serial);

/* Append rec (content fields filled) as the new head: id, prev_hash,
 * record_hash and signature are set under the store's write lock.
 * Requires ct_unlock (the studio key signs). */
ct_status ldg_issue(ct_ctx *ctx, sto_record *rec);

/* CT_OK if s is a usable record text: UTF-8, no control characters,
 * 1..cap-1 bytes. CT_ERR_MISUSE (message names `what`) otherwise. */
ct_status ldg_check_text(ct_ctx *ctx, const char *what, const char *s, size_t cap);

/* 1 if s is valid UTF-8 without control characters. */
bool ldg_text_ok(const char *s);

/* "user@host" of this process, truncated to fit. */
void ldg_operator(char out[CT_OPERATOR_MAX]);

/* SHA-256 of a file's bytes. With sync, fsync it first (the output must be
 * on disk before its record is committed). */
ct_status ldg_sha256_file(ct_ctx *ctx, const char *path, bool sync, uint8_t out[STO_HASH_BYTES]);
/* The same without a context, for a thread of its own: 0 or an errno;
 * ldg_sha256_status turns that into the status ldg_sha256_file returns.
 * If stop (may be NULL) becomes true the hash gives up between reads and
 * returns ECANCELED: its caller has failed and must not wait on a large
 * file. */
int ldg_sha256_path(const char *path, bool sync, const atomic_bool *stop,
                    uint8_t out[STO_HASH_BYTES]);
ct_status ldg_sha256_status(ct_ctx *ctx, const char *path, int err);

/* fsync a file written and closed earlier (its bytes on disk before it
 * is renamed into place). ldg_fsync_path touches no context (for a
 * thread beside the ledger's commit) and returns 0 or an errno value. */
ct_status ldg_fsync_file(ct_ctx *ctx, const char *path);
int ldg_fsync_path(const char *path);

/* SHA-256 of bytes as they are written (med_write_opts' tap), on a thread
 * of its own beside the encoder that writes them, so the output's hash is
 * ready when the file is, instead of being read back and hashed after.
 * With threads 0 or 1 the bytes are hashed as they come. */
typedef struct ldg_hash_stream ldg_hash_stream;
ct_status ldg_hash_stream_start(ct_ctx *ctx, unsigned threads, ldg_hash_stream **out);
/* The tap: hs is the stream; 0, or -1 if the bytes could not be kept. */
int ldg_hash_stream_feed(void *hs, const void *bytes, size_t n);
/* No more bytes: waits for the hash (out may be NULL when the write
 * failed) and frees hs. NULL is a no-op. */
void ldg_hash_stream_end(ldg_hash_stream *hs, uint8_t out[STO_HASH_BYTES]);

/* 64-bit difference hash of a luma plane (w*h floats): the plane averaged
 * down to 9x8 cells, one bit per horizontal neighbour pair, row by row,
 * first bit the most significant (set when the left cell is brighter).
 * Survives re-encoding and resizing; used to find the original of a leak. */
uint64_t ldg_dhash(const float *y, uint32_t w, uint32_t h);

/* The record of mark (serial, vendor_id) without a message when there is
 * none: CT_OK (*found 1 or 0) or an I/O error. */
ct_status ldg_find_serial(ct_ctx *ctx, uint32_t serial, uint32_t vendor_id, ct_record *out,
                          int *found);

#endif

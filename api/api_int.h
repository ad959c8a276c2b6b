/* api: helpers shared by the image (api.c) and video (video.c) paths of
 * the composing layer. Internal: not part of the public API. */
#ifndef CT_API_INT_H
#define CT_API_INT_H

#include <stdbool.h>

#include <jansson.h>

#include "core/core.h"
#include "store/store.h"
#include "verify/vfy.h"

/* A hidden temporary beside `path` (dir/.name.XXXXXX.ext, same extension so
 * writers pick the same format), created empty; a folder when dir is set.
 * *out: caller frees. */
ct_status api_temp_name(ct_ctx *ctx, const char *path, bool dir, char **out);

/* Make a rename durable: fsync the folder that holds the new name. */
void api_sync_dir_of(const char *path);

/* true if a and b name the same existing file. */
bool api_same_file(const char *a, const char *b);

/* A ledger record's content fields for an embed (asset defaults to the
 * input's base name, operator to user@host); the chain fields and the
 * serial are set by the caller and ldg_issue. */
ct_status api_record_fill(ct_ctx *ctx, const ct_vendor *v, const char *input, const char *asset,
                          const char *by, double strength, sto_record *rec);

/* The start of every embed, image or video: refuses to overwrite the
 * original, finds the vendor (and refuses a revoked one), derives the
 * studio's sync key and the vendor's mark key, and fills the record's
 * content fields. The keys are the caller's to wipe, whatever the status. */
ct_status api_embed_begin(ct_ctx *ctx, const char *vendor, const char *input, const char *output,
                          const char *asset, const char *by, double strength, ct_vendor *v,
                          uint8_t sync_key[WM_KEYBYTES], uint8_t vkey[WM_KEYBYTES],
                          sto_record *rec);

/* The end of every embed: commit the record (output_sha256 already set),
 * then rename the temporary *tmp into place and make the rename durable
 * (the order is explained in ct_embed_file). With sync_tmp the
 * temporary's bytes are made durable here too, beside the commit; without
 * it the caller has done so. On success *tmp is freed and NULL, and out
 * has vendor, serial and record id. */
ct_status api_embed_commit(ct_ctx *ctx, const ct_vendor *v, sto_record *rec, char **tmp,
                           const char *output, bool sync_tmp, ct_embed_result *out);

/* Every key a file of this studio can carry: each vendor at each epoch it
 * has had, revoked vendors included (their files stay traceable), each
 * with the serials the ledger records as issued to that vendor (the
 * record does not say under which epoch, so every epoch gets them all).
 * Free *out with api_keys_free, *vendors with free(). */
ct_status api_all_keys(ct_ctx *ctx, vfy_key **out, size_t *n, ct_vendor **vendors, size_t *nv);
void api_keys_free(vfy_key *keys, size_t n);

/* Add the informed-detection members of a verdict to its JSON object o:
 * "named_by", "asset_match", "informed" (api/informed.c). */
ct_status api_informed_json(json_t *o, const ct_verdict *v);

#endif

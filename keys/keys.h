/* keys: the sealed keystore, the key hierarchy and the vendor registry.
 *
 * Hierarchy: a 32-byte master secret and an Ed25519 signing key, sealed
 * together on disk. Every other key is derived from the master secret with
 * crypto_kdf_derive_from_key and never stored:
 *   mark key of vendor v at epoch e:  context "ctvmark1", subkey (e << 32) | v
 *   studio sync key (the pattern every copy shares so the detector can find
 *   the geometry before it knows the vendor): context "ctsync01", subkey 0
 */
#ifndef CT_KEYS_H
#define CT_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

#define KEY_MASTER_BYTES   32u
#define KEY_SIGN_SK_BYTES  64u
#define KEY_SIGN_PK_BYTES  32u
#define KEY_SIG_BYTES      64u
#define KEY_FILE_NAME      "keystore"
#define KEY_PUB_NAME       "studio.pub"

/* Keystore file format, version 1 (all integers little-endian):
 *   0  magic "CTKS"          4  version (1)      5  kdf alg (2 = Argon2id v1.3)
 *   6  aead (1 = XChaCha20-Poly1305-IETF)        7  reserved (0)
 *   8  opslimit u32          12 memlimit in KiB u32
 *   16 salt[16]              32 nonce[24]
 *   56 ciphertext of master[32] || ed25519 sk[64], then the 16-byte tag.
 * The 56 header bytes are the AEAD's associated data, so any change to them
 * fails authentication. */
#define KEY_FILE_VERSION   1u
#define KEY_HEADER_BYTES   56u
#define KEY_PLAIN_BYTES    (KEY_MASTER_BYTES + KEY_SIGN_SK_BYTES)
#define KEY_FILE_BYTES     (KEY_HEADER_BYTES + KEY_PLAIN_BYTES + 16u)
/* Refuse headers asking for more than this, so a hostile file cannot make
 * unlock run for minutes or allocate gigabytes. */
#define KEY_MAX_OPSLIMIT   64u
#define KEY_MAX_MEMLIMIT_KIB (1024u * 1024u)

/* Unsealed secrets; lives in sodium_malloc memory (wiped on free). */
typedef struct key_secrets {
    uint8_t master[KEY_MASTER_BYTES];
    uint8_t sign_sk[KEY_SIGN_SK_BYTES];
} key_secrets;

/* Seal secrets into a keystore file image (out is KEY_FILE_BYTES). */
ct_status key_seal(ct_ctx *ctx, const key_secrets *sec, const char *pass, size_t pass_len,
                   uint32_t opslimit, uint32_t memlimit_kib, uint8_t out[KEY_FILE_BYTES]);

/* Open a keystore file image. *out: free with key_secrets_free. */
ct_status key_unseal(ct_ctx *ctx, const uint8_t *raw, size_t n, const char *pass, size_t pass_len,
                     key_secrets **out);

void key_secrets_free(key_secrets *sec);

/* The unlocked secrets of ctx, borrowed; CT_ERR_AUTH if ct_unlock was not
 * called. */
ct_status key_secrets_of(ct_ctx *ctx, const key_secrets **out);

/* Derivations (see the hierarchy above). Require ct_unlock. */
ct_status key_derive_mark(ct_ctx *ctx, uint32_t vendor_id, uint32_t epoch,
                          uint8_t out[CT_MARK_KEYBYTES]);
ct_status key_derive_sync(ct_ctx *ctx, uint8_t out[CT_MARK_KEYBYTES]);

/* Pure derivation from a master secret, for tests and known answers. */
void key_derive_mark_raw(const uint8_t master[KEY_MASTER_BYTES], uint32_t vendor_id,
                         uint32_t epoch, uint8_t out[CT_MARK_KEYBYTES]);

/* Detached Ed25519 signature with the studio key. Requires ct_unlock. */
ct_status key_sign(ct_ctx *ctx, const uint8_t *msg, size_t len, uint8_t sig[KEY_SIG_BYTES]);

/* Read a public key file in the format ct_public_key_export writes (any
 * path: a third party checking an export has only this file). studio may
 * be NULL. CT_ERR_NOT_FOUND (no file), CT_ERR_FORMAT (not a key file). */
ct_status key_read_public(ct_ctx *ctx, const char *path, uint8_t pk[CT_PUBLICKEYBYTES],
                          char studio[CT_NAME_MAX]);

/* Validate a vendor name (UTF-8, no control characters, not empty, not all
 * digits, shorter than CT_NAME_MAX). Returns CT_OK or CT_ERR_MISUSE. */
ct_status key_check_vendor_name(ct_ctx *ctx, const char *name);

#endif

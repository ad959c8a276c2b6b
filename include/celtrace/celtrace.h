/*
 * celtrace: per-vendor forensic watermarking and provenance tracking.
 *
 * This header is the reference for the library. Every function that can fail
 * returns a ct_status and passes results back through out-parameters; the
 * detail of the last failure on a context is ct_errmsg(ctx).
 *
 * Threading: a ct_ctx and everything made from it belong to one thread at a
 * time. Two contexts on two threads never interfere (the library keeps no
 * mutable global state).
 */
#ifndef CELTRACE_H
#define CELTRACE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CT_VERSION_MAJOR  0
#define CT_VERSION_MINOR  1
#define CT_VERSION_PATCH  0
#define CT_VERSION_STRING "0.1.0"
#define CT_VERSION_NUMBER (CT_VERSION_MAJOR * 10000 + CT_VERSION_MINOR * 100 + CT_VERSION_PATCH)

#if defined(CT_BUILDING_LIBRARY) && defined(__GNUC__)
#define CT_API __attribute__((visibility("default")))
#else
#define CT_API
#endif

#if defined(__GNUC__)
#define CT_NODISCARD __attribute__((warn_unused_result))
#else
#define CT_NODISCARD
#endif

/* Status codes. Append only: a code keeps its number forever. */
typedef enum ct_status {
    CT_OK = 0,
    CT_ERR_NOMEM = 1,
    CT_ERR_IO = 2,
    CT_ERR_FORMAT = 3,    /* input is corrupt or unsupported */
    CT_ERR_LIMIT = 4,     /* input exceeds a configured limit */
    CT_ERR_AUTH = 5,      /* wrong passphrase or tampered data */
    CT_ERR_NOT_FOUND = 6, /* no such vendor, record or file */
    CT_ERR_MISUSE = 7,    /* bad argument, or a call out of order */
    CT_ERR_EXISTS = 8     /* refusing to overwrite (keystore, vendor name) */
} ct_status;

/* Sizes, libsodium style. */
#define CT_MARK_KEYBYTES    32u /* per-vendor mark key */
#define CT_PUBLICKEYBYTES   32u /* studio Ed25519 public key */
#define CT_NAME_MAX         128u /* vendor and studio names, bytes incl. NUL */
#define CT_COUNTRY_MAX      8u
#define CT_CONTACT_MAX      256u
#define CT_DEFAULT_MAX_PIXELS 300000000ull /* images larger than this are refused */

/* ---- version and errors ------------------------------------------------ */

/* CT_VERSION_NUMBER of the library actually linked, to compare with the
 * header a program was built against. Thread safe. */
CT_API int ct_version_number(void);
CT_API const char *ct_version_string(void);

/* Static English text for a status; never NULL. Thread safe. */
CT_API const char *ct_strerror(ct_status st);

/* ---- context ----------------------------------------------------------- */

typedef struct ct_ctx ct_ctx;

/* Create a context on the celtrace home folder `home` (copied). If home is
 * NULL, $CELTRACE_HOME is used, else ~/.celtrace. Nothing on disk is touched
 * until a function needs it. Calls sodium_init().
 * Returns CT_OK, CT_ERR_NOMEM, or CT_ERR_MISUSE (no home can be found).
 * On failure *out is NULL. */
CT_API CT_NODISCARD ct_status ct_ctx_new(const char *home, ct_ctx **out);

/* Destroy a context and wipe every secret it holds. NULL is a no-op. */
CT_API void ct_ctx_free(ct_ctx *ctx);

/* Message describing the last failure on ctx ("" if none). Borrowed: valid
 * until the next call on ctx. Never contains a key or passphrase. */
CT_API const char *ct_errmsg(const ct_ctx *ctx);

/* The home folder this context uses. Borrowed. */
CT_API const char *ct_home(const ct_ctx *ctx);

/* Largest image, in pixels, that reading accepts (default
 * CT_DEFAULT_MAX_PIXELS). Images over it fail with CT_ERR_LIMIT before any
 * pixel buffer is allocated. */
CT_API void ct_set_max_pixels(ct_ctx *ctx, uint64_t max_pixels);

/* Free memory the library returned (JSON strings, lists). NULL is a no-op. */
CT_API void ct_free(void *p);

/* ---- keystore ---------------------------------------------------------- */

/* Create a new studio home: the folder (mode 0700), a fresh master secret
 * and Ed25519 signing key sealed with `pass` (Argon2id + XChaCha20-Poly1305,
 * file mode 0600), the public key in the clear, and the registry database.
 * Returns CT_ERR_EXISTS if a keystore is already there (nothing is changed),
 * CT_ERR_MISUSE for an empty studio name or passphrase, CT_ERR_IO.
 * On failure nothing new is left in the home folder. */
CT_API CT_NODISCARD ct_status ct_init(ct_ctx *ctx, const char *studio, const char *pass,
                                      size_t pass_len);

/* Unseal the keystore with `pass` and keep its secrets in guarded memory in
 * ctx until ct_ctx_free. Returns CT_ERR_NOT_FOUND (no keystore: run init),
 * CT_ERR_AUTH (wrong passphrase, or the file was altered), CT_ERR_FORMAT
 * (truncated, not a keystore, or a version this library does not know). */
CT_API CT_NODISCARD ct_status ct_unlock(ct_ctx *ctx, const char *pass, size_t pass_len);

/* 1 if ct_unlock succeeded on ctx, else 0. */
CT_API int ct_is_unlocked(const ct_ctx *ctx);

/* The studio's Ed25519 public key (raw bytes) and name, from the clear
 * public file; no passphrase needed. studio may be NULL; else it receives at
 * most CT_NAME_MAX bytes, NUL-terminated. */
CT_API CT_NODISCARD ct_status ct_public_key(ct_ctx *ctx, uint8_t pk[CT_PUBLICKEYBYTES],
                                            char studio[CT_NAME_MAX]);

/* The public key file's text (PEM-like, with the studio name), to hand to
 * anyone who must check ledger records. *out: caller frees with ct_free. */
CT_API CT_NODISCARD ct_status ct_public_key_export(ct_ctx *ctx, char **out);

/* ---- vendors ----------------------------------------------------------- */

typedef struct ct_vendor {
    uint32_t id;               /* 1, 2, ...; never reused */
    uint32_t epoch;            /* mark-key epoch; starts at 1 */
    char name[CT_NAME_MAX];    /* UTF-8, unique, not empty, not all digits */
    char country[CT_COUNTRY_MAX];
    char contact[CT_CONTACT_MAX];
    int64_t created_at;        /* Unix seconds, UTC */
    int64_t revoked_at;        /* 0 if active */
} ct_vendor;

/* Register a vendor. Requires ct_unlock (onboarding is a studio act).
 * country and contact may be NULL. Returns CT_ERR_EXISTS for a name already
 * registered, CT_ERR_MISUSE for an invalid name (empty, all digits, too
 * long, not UTF-8, control characters), CT_ERR_AUTH if not unlocked. */
CT_API CT_NODISCARD ct_status ct_vendor_add(ct_ctx *ctx, const char *name, const char *country,
                                            const char *contact, ct_vendor *out);

/* Find a vendor by id (a string of digits) or exact name.
 * CT_ERR_NOT_FOUND if there is none. */
CT_API CT_NODISCARD ct_status ct_vendor_find(ct_ctx *ctx, const char *name_or_id, ct_vendor *out);

/* All vendors, by id. *out: an array of *count entries; caller frees with
 * ct_free (NULL when count is 0). */
CT_API CT_NODISCARD ct_status ct_vendor_list(ct_ctx *ctx, ct_vendor **out, size_t *count);

/* Mark a vendor revoked: it can no longer receive assets but stays
 * traceable. Requires ct_unlock. Revoking twice is CT_ERR_MISUSE. */
CT_API CT_NODISCARD ct_status ct_vendor_revoke(ct_ctx *ctx, const char *name_or_id,
                                               ct_vendor *out);

/* One vendor as a JSON object on one line. Caller frees with ct_free. */
CT_API CT_NODISCARD ct_status ct_vendor_json(const ct_vendor *v, char **out);

/* The per-vendor mark key for (vendor id, epoch), derived from the master
 * secret with crypto_kdf_derive_from_key; never stored. Requires ct_unlock.
 * The caller should wipe `key` after use (sodium_memzero). */
CT_API CT_NODISCARD ct_status ct_vendor_mark_key(ct_ctx *ctx, uint32_t vendor_id, uint32_t epoch,
                                                 uint8_t key[CT_MARK_KEYBYTES]);

/* ---- marking and tracing images --------------------------------------- */

typedef struct ct_embed_opts {
    double strength;   /* 1.0 (the default, when 0) is what the published
                          figures are measured at; 0.25..4 accepted */
    int jpeg_quality;  /* JPEG output quality 1..100; 0 follows the input */
} ct_embed_opts;

typedef struct ct_embed_result {
    uint32_t vendor_id;
    char vendor[CT_NAME_MAX];
    uint32_t serial;   /* issuance serial carried by the mark */
    uint32_t width, height;
    double psnr;       /* luma PSNR of the output against the input, dB */
    double ssim;       /* mean luma SSIM of the output against the input */
} ct_embed_result;

/* Mark the image at `input` for vendor `vendor` (name or id) and write it
 * to `output`; the output format follows output's extension (.png, .jpg,
 * .jpeg). The output is written to a temporary file beside it and renamed
 * into place only when complete: on any failure no output file exists.
 * Requires ct_unlock. Returns CT_ERR_NOT_FOUND (unknown vendor),
 * CT_ERR_MISUSE (revoked vendor, bad options, output == input), CT_ERR_IO,
 * CT_ERR_FORMAT (corrupt or unsupported input), CT_ERR_LIMIT (too large).
 * opts may be NULL. */
CT_API CT_NODISCARD ct_status ct_embed_file(ct_ctx *ctx, const char *vendor, const char *input,
                                            const char *output, const ct_embed_opts *opts,
                                            ct_embed_result *out);

#define CT_MAX_COLLUDERS 8

typedef struct ct_verdict {
    int identified;                 /* 1 if a vendor's authenticated mark was found */
    uint32_t vendor_id;             /* first vendor named (0 if none) */
    char vendor[CT_NAME_MAX];
    uint32_t epoch;
    uint32_t serial;
    int nvendors;                   /* vendors whose marks were all found (collusion) */
    uint32_t vendor_ids[CT_MAX_COLLUDERS];
    uint32_t serials[CT_MAX_COLLUDERS];
    double false_positive_probability; /* of naming any vendor on an unmarked file */
    double sync_z;                  /* sync correlation, standard deviations */
    double msg_z;                   /* payload correlation, standard deviations */
    double period;                  /* tile period found in the file, pixels */
    double angle;                   /* rotation found, degrees */
    int mirrored;
    uint32_t width, height;
    uint64_t trials;                /* candidate decodes the probability counts */
} ct_verdict;

/* Trace a file blind: decide whether it carries a mark of one of the
 * studio's vendors. Reads PNG, JPEG and every still format libavcodec
 * decodes. Requires ct_unlock (the vendors' mark keys derive from the
 * master secret). A file without a mark is CT_OK with identified = 0.
 * Returns CT_ERR_IO, CT_ERR_FORMAT, CT_ERR_LIMIT for unreadable input. */
CT_API CT_NODISCARD ct_status ct_verify_file(ct_ctx *ctx, const char *path, ct_verdict *out);

/* The verdict as one line of JSON, per DESIGN.md's contract. `file` is
 * the name to print. Caller frees with ct_free. */
CT_API CT_NODISCARD ct_status ct_verdict_json(const char *file, const ct_verdict *v, char **out);

#ifdef __cplusplus
}
#endif
#endif /* CELTRACE_H */

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
#include <stdio.h>

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

/* A new context for another thread: the same home and settings and, if
 * ctx is unlocked, its own guarded copy of the unlocked secrets (no second
 * passphrase, no second Argon2id). The two are independent from then on:
 * each has its own database connection and error message, and each is
 * freed on its own. For worker pools, e.g. verifying a leak dump on every
 * core. Returns CT_ERR_NOMEM; on failure *out is NULL. */
CT_API CT_NODISCARD ct_status ct_ctx_clone(ct_ctx *ctx, ct_ctx **out);

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
    const char *asset; /* asset name for the ledger record (copied; UTF-8,
                          under CT_ASSET_MAX bytes, no control characters);
                          NULL: the input's file name */
    const char *issued_by; /* operator for the record; NULL: user@host of
                              this process */
} ct_embed_opts;

typedef struct ct_embed_result {
    uint32_t vendor_id;
    char vendor[CT_NAME_MAX];
    uint32_t serial;   /* issuance serial carried by the mark */
    uint32_t width, height;
    double psnr;       /* luma PSNR of the output against the input, dB */
    double ssim;       /* mean luma SSIM of the output against the input */
    uint64_t record_id; /* ledger record of this issue */
    /* Video and frame sequences (ct_embed_video); 0 for a still image. */
    uint64_t frames;   /* frames marked */
    double duration;   /* seconds, from the container (0 unknown) */
    double strength;   /* the strength the mark was embedded at */
    /* Still images of at most CT_BLIND_CHECK_MAX_PIXELS: the mark read back
     * blind from the marked pixels at their own geometry. blind_z is its
     * payload correlation (standard deviations), blind_z_needed what a blind
     * verify needs with the ledger as it now stands. blind_z below it means
     * the image is too small or too flat to be traced blind even untouched;
     * informed verify (against the original) still names the vendor.
     * blind_checked is 0 when the check did not run (larger images). */
    int blind_checked;
    double blind_z, blind_z_needed;
    /* Video: the frame count the input's container states (0 unknown). Well
     * above `frames`, the input ended early (a cut-off copy): the output
     * holds only the frames that could be read. */
    uint64_t frames_declared;
    /* Video: 1 when the input has an alpha channel and the encoder has no
     * pixel format that keeps it (libx264): the output is opaque. */
    int alpha_dropped;
} ct_embed_result;

#define CT_BLIND_CHECK_MAX_PIXELS 524288u

/* Mark the image at `input` for vendor `vendor` (name or id) and write it
 * to `output`; the output format follows output's extension (.png, .jpg,
 * .jpeg). The output is written to a temporary file beside it
 * (.NAME.XXXXXX.ext), flushed to disk, its issuance record appended to the
 * ledger and committed, and only then renamed into place: no output file
 * exists without its record. A failure before the commit leaves neither
 * output nor record; a failure of the final rename leaves a record whose
 * file never appeared (harmless, and reported as CT_ERR_IO).
 * Requires ct_unlock. Returns CT_ERR_NOT_FOUND (unknown vendor),
 * CT_ERR_MISUSE (revoked vendor, bad options or asset name, output ==
 * input), CT_ERR_IO, CT_ERR_FORMAT (corrupt or unsupported input),
 * CT_ERR_LIMIT (too large), CT_ERR_AUTH (the ledger does not end at its
 * signed head: it was altered; nothing is appended to it).
 * opts may be NULL. */
CT_API CT_NODISCARD ct_status ct_embed_file(ct_ctx *ctx, const char *vendor, const char *input,
                                            const char *output, const ct_embed_opts *opts,
                                            ct_embed_result *out);

#define CT_MAX_COLLUDERS 8

/* ---- ledger records (declared here: a verdict carries one) ------------- */

#define CT_ASSET_MAX        512u  /* asset names, bytes incl. NUL */
#define CT_OPERATOR_MAX     256u  /* "user@host", bytes incl. NUL */
#define CT_RECORD_PATH_MAX  1024u /* path of the original, bytes incl. NUL */
#define CT_HASH_HEXBYTES    65u   /* 32-byte hash as hex, incl. NUL */
#define CT_PHASH_HEXBYTES   17u   /* 64-bit perceptual hash as hex, incl. NUL */
#define CT_SIG_HEXBYTES     129u  /* Ed25519 signature as hex, incl. NUL */

/* One issuance record of the ledger: who received which asset, when, from
 * whom, and the hashes that tie it to the files and to the chain. */
typedef struct ct_record {
    uint64_t id;                          /* 1, 2, ... in chain order */
    uint32_t serial;                      /* payload serial carried by the mark */
    uint32_t vendor_id;
    char vendor[CT_NAME_MAX];             /* vendor name at issue time */
    char asset[CT_ASSET_MAX];
    char original[CT_RECORD_PATH_MAX];    /* absolute path of the original at
                                             issue time ("" if too long) */
    char input_sha256[CT_HASH_HEXBYTES];  /* SHA-256 of the original's bytes */
    char phash[CT_PHASH_HEXBYTES];        /* 64-bit dHash of the original luma */
    char output_sha256[CT_HASH_HEXBYTES]; /* SHA-256 of the marked file's bytes */
    uint32_t algo_version;                /* mark algorithm version */
    double strength;
    int64_t issued_at;                    /* Unix seconds, UTC */
    char issued_by[CT_OPERATOR_MAX];      /* operator, user@host */
    char prev_hash[CT_HASH_HEXBYTES];     /* record_hash of record id - 1 */
    char record_hash[CT_HASH_HEXBYTES];   /* BLAKE2b-256(prev_hash || encoding) */
    char signature[CT_SIG_HEXBYTES];      /* Ed25519 over the record hash */
    int signature_valid;                  /* 1 if this record's hash and
                                             signature check out under the
                                             studio public key (the chain as
                                             a whole: ct_ledger_verify) */
} ct_record;

/* ---- informed detection: the original is known ----------------------- */

#define CT_MAX_RECIPIENTS        16
#define CT_DEFAULT_MAX_ORIGINALS 32

/* Which path named the vendor of a verdict. */
typedef enum ct_named_by {
    CT_NAMED_NONE = 0,
    CT_NAMED_BLIND = 1,    /* the payload, from the file alone: decoded and
                              authenticated, or the codeword of a serial the
                              ledger issued (payload_issued) */
    CT_NAMED_INFORMED = 2  /* the recipient's pattern, against the original */
} ct_named_by;

/* The issued original a suspect was registered to. */
typedef struct ct_asset_match {
    int matched;                         /* 1 if an original matched */
    uint64_t record_id;                  /* first ledger record of that original */
    char asset[CT_ASSET_MAX];
    char original[CT_RECORD_PATH_MAX];   /* where the original was read */
    char input_sha256[CT_HASH_HEXBYTES]; /* SHA-256 of the original's bytes */
    double score;                        /* registration NCC, -1..1; a match
                                            needs CT_MATCH_MIN_SCORE */
    double scale;                        /* suspect pixels per original pixel */
    double x, y;                         /* original pixel at the suspect's
                                            top-left corner (its top-right
                                            one when mirrored) */
    int mirrored;
    int originals_tried;                 /* originals registered against */
} ct_asset_match;

#define CT_MATCH_MIN_SCORE 0.40

/* One recipient of the matched asset, tested for its pattern. */
typedef struct ct_recipient_score {
    uint64_t record_id;
    uint32_t vendor_id;
    uint32_t epoch;                      /* mark-key epoch tested */
    char vendor[CT_NAME_MAX];
    uint32_t serial;
    double z;                            /* correlation in decoy standard deviations */
    double false_positive_probability;   /* of a z this high for a copy not issued to
                                            this recipient, times every test made */
} ct_recipient_score;

typedef struct ct_informed {
    int ran;                  /* 1 if recipients were tested */
    int decoys;               /* random-key patterns that gave the null spread */
    uint64_t tests;           /* recipient hypotheses tested (records x epochs, over
                                 every asset tried); each probability counts them */
    uint32_t vendor_id;       /* the vendor the informed path names (0: none), whether
                                 or not the blind path named one first */
    double false_positive_probability; /* of that naming (0 when none) */
    int nrecipients;          /* entries in recipients (the best CT_MAX_RECIPIENTS) */
    ct_recipient_score recipients[CT_MAX_RECIPIENTS]; /* highest z first */
} ct_informed;

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
    int payload_issued;             /* 1 if the payload was found by testing the
                                       serials the ledger issued, not decoded */
    uint64_t issued_tests;          /* issued-serial tests the probability counts */
    int has_record;                 /* 1 if the ledger holds the issue of the
                                       first mark found (vendor_id, serial) */
    ct_record record;               /* that issue, when has_record */
    /* Video and frame sequences (ct_verify_video); 0 for a still image.
     * The evidence came from frames_used frames between time_first and
     * time_last (seconds from the start of the clip; frame index / 24
     * for a sequence). evidence says how: 1 the average of those frames,
     * 2 a single frame (at time_first). */
    uint32_t frames_used;
    double time_first, time_last;
    int evidence;
    /* Informed detection (ct_verify_file_opts; all zero from the other
     * verify calls). named_by says which path named the vendor. */
    ct_named_by named_by;
    ct_asset_match asset_match;     /* the issued original the file derives from */
    ct_informed informed;
} ct_verdict;

/* Trace a file blind: decide whether it carries a mark of one of the
 * studio's vendors. Reads PNG, JPEG and every still format libavcodec
 * decodes. Requires ct_unlock (the vendors' mark keys derive from the
 * master secret). A file without a mark is CT_OK with identified = 0.
 * An identified verdict carries the ledger record of that issue
 * (has_record, record) when the ledger has one.
 * Returns CT_ERR_IO, CT_ERR_FORMAT, CT_ERR_LIMIT for unreadable input. */
CT_API CT_NODISCARD ct_status ct_verify_file(ct_ctx *ctx, const char *path, ct_verdict *out);

/* When informed detection runs. */
typedef enum ct_informed_mode {
    CT_INFORMED_AUTO = 0,   /* when blind detection names no vendor (the default) */
    CT_INFORMED_NEVER = 1,  /* blind only: ct_verify_file */
    CT_INFORMED_ALWAYS = 2  /* also after a blind identification (for comparison;
                               the blind verdict stands) */
} ct_informed_mode;

typedef struct ct_verify_opts {
    const char *originals;    /* folder holding originals (searched two levels
                                 deep, matched by file name, then by SHA-256 of
                                 the bytes); NULL: only the paths in the records */
    ct_informed_mode informed;
    int max_originals;        /* originals registered at most (0: the default
                                 CT_DEFAULT_MAX_ORIGINALS), nearest dHash first */
} ct_verify_opts;

/* Trace a still image blind (as ct_verify_file), then informed: find the
 * issued original it derives from among the ledger's records (each
 * distinct original whose file is found, at the path in the record or in
 * opts->originals, and whose SHA-256 is the recorded one; the records'
 * dHash orders the search, never gates it), register the file to it
 * (scale 0.15x..2x, any crop, mirror) and, when it matches, test every
 * recipient of that asset: the recipient's exact mark is regenerated from
 * the original with that record's serial and strength, and correlated
 * with the file minus the original. A vendor is named by the informed path
 * only when its false-positive probability (decoy-calibrated, times every
 * test made) is at most 1e-9 and it beats every other vendor clearly.
 * The verdict carries asset_match even when no vendor is named.
 * Videos and frame folders go to ct_verify_video (blind). opts may be NULL
 * (defaults). Requires ct_unlock. Returns what ct_verify_file returns; an
 * original that cannot be read is skipped, not an error. */
CT_API CT_NODISCARD ct_status ct_verify_file_opts(ct_ctx *ctx, const char *path,
                                                  const ct_verify_opts *opts, ct_verdict *out);

/* The verdict as one line of JSON, per DESIGN.md's contract. `file` is
 * the name to print. "record" is the ledger record as ct_record_json
 * gives it, or null. "named_by" is "blind", "informed" or null;
 * "asset_match" the original the file derives from (or null) and
 * "informed" the recipients tested (or null when informed detection did
 * not run). Caller frees with ct_free. */
CT_API CT_NODISCARD ct_status ct_verdict_json(const char *file, const ct_verdict *v, char **out);

/* ---- ledger ------------------------------------------------------------ */

/* The ledger lives in the studio database (SQLite, WAL). Every embed
 * appends one record. Records are chained: record_hash =
 * BLAKE2b-256(prev_hash || encoding), where the encoding is the fixed
 * byte layout of ledger/ledger.h (version byte, fields in order,
 * little-endian integers, length-prefixed strings) and the first record's
 * prev_hash is 32 zero bytes. Every record carries the studio's Ed25519
 * signature over its hash, and the newest (the head) is also kept in the
 * database's meta table, so any prefix of the chain can be checked and
 * dropping the newest records shows. Readers refuse encodings and export
 * versions they do not know (CT_ERR_FORMAT). */

#define CT_LEDGER_EXPORT_VERSION 1

typedef struct ct_ledger_filter {
    const char *vendor; /* vendor name or id; NULL: every vendor */
    const char *asset;  /* exact asset name; NULL: every asset */
    int64_t since;      /* issued at or after (Unix seconds); 0: all */
} ct_ledger_filter;

/* Records matching filter (NULL: all), in chain order. No passphrase
 * needed. *out: an array of *n records, caller frees with ct_free (NULL
 * when n is 0). signature_valid is set per record. Returns CT_ERR_NOT_FOUND
 * (no home, or filter->vendor is no vendor), CT_ERR_FORMAT (unknown schema
 * version), CT_ERR_IO, CT_ERR_NOMEM. */
CT_API CT_NODISCARD ct_status ct_ledger_list(ct_ctx *ctx, const ct_ledger_filter *filter,
                                             ct_record **out, size_t *n);

/* Record `id`. CT_ERR_NOT_FOUND if there is none. */
CT_API CT_NODISCARD ct_status ct_ledger_get(ct_ctx *ctx, uint64_t id, ct_record *out);

/* The record of the mark (serial, vendor_id), as a verdict reports it.
 * CT_ERR_NOT_FOUND if the ledger has none. */
CT_API CT_NODISCARD ct_status ct_ledger_find_serial(ct_ctx *ctx, uint32_t serial,
                                                    uint32_t vendor_id, ct_record *out);

/* Walk the whole chain: ids 1..N without gaps, each prev_hash equal to the
 * previous record_hash, each record_hash recomputed from the fields, each
 * signature valid under the studio public key, and the newest record equal
 * to the signed head kept in meta. Returns CT_OK (count = N), or
 * CT_ERR_AUTH on the first problem, with *bad_id the record it concerns
 * (the missing one, for a deletion) and ct_errmsg naming it. count and
 * bad_id may be NULL. Needs no passphrase.
 * Limit: someone who can write the database may drop the newest records
 * AND roll the head back to an older signed head; only an earlier export
 * (ct_ledger_check_export) or the issued files show that. */
CT_API CT_NODISCARD ct_status ct_ledger_verify(ct_ctx *ctx, uint64_t *count, uint64_t *bad_id);

/* Write the ledger as JSON lines: first a header object {"format":
 * "celtrace-ledger", "version": CT_LEDGER_EXPORT_VERSION, "studio",
 * "public_key" (base64), "head_id", "head_hash", "head_signature"} (the
 * signed head; null for an empty ledger), then one object per record as ct_record_json writes
 * it, without "signature_valid". path NULL or "-" writes to stdout;
 * otherwise the file appears complete or not at all (temporary file and
 * rename). The records are one consistent snapshot. Returns CT_ERR_IO,
 * CT_ERR_NOMEM, CT_ERR_NOT_FOUND (no home). */
CT_API CT_NODISCARD ct_status ct_ledger_export(ct_ctx *ctx, const char *path);

/* Check an export with nothing but the studio public key file (the text of
 * ct_public_key_export): the header's key must be that key, and the
 * records must chain, hash and verify as ct_ledger_verify checks, ending
 * at the signed head the header names. ctx only carries the message; its
 * home is not touched. Returns CT_OK (count = records), CT_ERR_AUTH (a
 * line was altered, dropped, added or moved, or the key differs; *bad_id
 * the record concerned, 0 for the header; ct_errmsg names the line),
 * CT_ERR_FORMAT (not an export, or a version this library does not know;
 * or a damaged public key file), CT_ERR_IO. count, bad_id may be NULL. */
CT_API CT_NODISCARD ct_status ct_ledger_check_export(ct_ctx *ctx, const char *export_path,
                                                     const char *pubkey_path, uint64_t *count,
                                                     uint64_t *bad_id);

/* One record as a JSON object on one line: id, serial, vendor_id, vendor,
 * asset, original, input_sha256, phash, output_sha256, algorithm,
 * strength, issued_at, issued (ISO 8601 UTC), operator, prev_hash,
 * record_hash, signature, signature_valid. Caller frees with ct_free. */
CT_API CT_NODISCARD ct_status ct_record_json(const ct_record *r, char **out);


/* ---- video and frame sequences ----------------------------------------- */

/* Options of ct_embed_video. All-zero means the defaults. */
/* Default strength of video marks. A frame is seen for a twenty-fourth of
 * a second and a leak is typically downscaled and re-encoded hard: at 1.0
 * the 480p CRF 35 re-encode of issue 6 erased the payload of both sample
 * clips, at 1.5 both identify (measured), and the luma PSNR ceiling
 * (42.5 dB before rounding) holds the visible change where it was. */
#define CT_VIDEO_DEFAULT_STRENGTH 1.5

typedef struct ct_video_opts {
    double strength;      /* 0.25..4; 0: CT_VIDEO_DEFAULT_STRENGTH */
    const char *codec;    /* FFmpeg video encoder name (libx264, libx265,
                             libvpx-vp9, prores_ks, ffv1...); NULL: libx264 */
    int crf;              /* > 0: CRF (0..51 for x264); 0: 17 (visually
                             lossless) for encoders that have a CRF */
    int64_t bitrate;      /* > 0: target bits/s instead of CRF */
    const char *preset;   /* x264/x265 preset; NULL: "medium" */
    const char *asset;    /* as ct_embed_opts */
    const char *issued_by;
    /* Called from the embedding thread at most five times a second and
     * once at the end: frames done, frames expected (0 unknown), seconds
     * elapsed. May be NULL. */
    void (*progress)(void *user, uint64_t frames, uint64_t total, double elapsed);
    void *progress_user;
} ct_video_opts;

/* What a path holds, as the video functions see it. */
typedef enum ct_media_kind {
    CT_MEDIA_IMAGE = 0,    /* anything else: a still image for ct_*_file */
    CT_MEDIA_VIDEO = 1,    /* .mp4 .mov .mkv .webm .avi .m4v */
    CT_MEDIA_SEQUENCE = 2  /* a folder of numbered PNG/JPEG frames (at least
                              two, names that differ only in the digits
                              before one extension, nothing else there) */
} ct_media_kind;

/* Classify path by its extension or, for a folder, its contents.
 * Never fails: unreadable paths are CT_MEDIA_IMAGE (and fail later). */
CT_API ct_media_kind ct_media_kind_of(const char *path);

/* Mark a video or a frame sequence for vendor (name or id), with the same
 * keys, pattern and payload as ct_embed_file and one ledger record for the
 * whole clip (input_sha256: of the file; for a sequence, SHA-256 over the
 * frames' SHA-256s in name order; phash of the first frame).
 * Video: every frame's luma is marked; the video is re-encoded (opts), every
 * other stream copied untouched, metadata and timing kept; the output's
 * container follows its extension. Sequence: input is a folder, output a
 * new folder with every frame under the same name and format. The output
 * appears only complete, after its record (temporary beside it, then
 * rename). out->psnr is the luma PSNR of the marked frames against the
 * decoded input before the encoder; out->ssim that of a sample of frames
 * (before rounding). Requires ct_unlock. Returns what ct_embed_file
 * returns, plus CT_ERR_EXISTS (the output folder of a sequence exists and
 * is not empty). opts may be NULL. Thread safety: as ct_embed_file. */
CT_API CT_NODISCARD ct_status ct_embed_video(ct_ctx *ctx, const char *vendor, const char *input,
                                             const char *output, const ct_video_opts *opts,
                                             ct_embed_result *out);

#define CT_VIDEO_DEFAULT_SECONDS 10.0

/* Trace a video file or a frame-sequence folder. Decodes at most
 * max_seconds from the start (<= 0: CT_VIDEO_DEFAULT_SECONDS) and adds up
 * the evidence of the frames (every frame carries the whole mark; it
 * stays put on a still shot and moves with the picture on a pan, so each
 * frame is moved back by the pan measured on the leak before it is
 * added): first the whitened key frames and the frames just after them
 * (a re-encoded leak keeps the mark best there), then the whitened frames
 * of the whole span, then the plain average of the luma.
 * false_positive_probability and trials count every attempt. The verdict
 * says which frames and times the evidence came from (frames_used,
 * time_first, time_last, evidence). Requires ct_unlock. Returns CT_OK
 * (identified or not), CT_ERR_IO, CT_ERR_FORMAT (not a video, no frame
 * decodes), CT_ERR_LIMIT. Damaged packets are skipped. */
CT_API CT_NODISCARD ct_status ct_verify_video(ct_ctx *ctx, const char *path, double max_seconds,
                                              ct_verdict *out);

#ifdef __cplusplus
}
#endif
#endif /* CELTRACE_H */

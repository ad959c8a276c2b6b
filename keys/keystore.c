/* keys: keystore sealing, init/unlock, derivations, signing. */
#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "store/store.h"

#define MAGIC "CTKS"
#define KDF_ALG_ARGON2ID13 2u
#define AEAD_XCHACHA20POLY1305 1u
/* Argon2id cost of new keystores: about 0.1-0.2 s on a workstation core,
 * cheap enough for onboarding scripts that run a command per vendor, dear
 * enough to make passphrase guessing on a stolen file slow. */
#define INIT_OPSLIMIT 3u
#define INIT_MEMLIMIT_KIB (64u * 1024u)

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void key_secrets_free(key_secrets *sec)
{
    if (sec != NULL) {
        sodium_free(sec);
    }
}

static void secrets_free_void(void *p)
{
    key_secrets_free(p);
}

static key_secrets *secrets_new(ct_ctx *ctx)
{
    key_secrets *sec = sodium_malloc(sizeof *sec);
    if (sec == NULL) {
        ct_fail(ctx, CT_ERR_NOMEM, "out of memory for secrets");
    }
    return sec;
}

static ct_status derive_key(ct_ctx *ctx, const uint8_t *master, const char *pass, size_t pass_len,
                            const uint8_t *salt, uint32_t ops, uint32_t mem_kib,
                            uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES])
{
    if (crypto_pwhash(key, crypto_aead_xchacha20poly1305_ietf_KEYBYTES, pass, pass_len, salt,
                      ops, (size_t)mem_kib * 1024u, crypto_pwhash_ALG_ARGON2ID13) != 0) {
        return ct_fail(ctx, CT_ERR_NOMEM, "key derivation ran out of memory");
    }
    (void)master;
    return CT_OK;
}

ct_status key_seal(ct_ctx *ctx, const key_secrets *sec, const char *pass, size_t pass_len,
                   uint32_t opslimit, uint32_t memlimit_kib, uint8_t out[KEY_FILE_BYTES])
{
    uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    unsigned long long clen = 0;
    ct_status st;

    memcpy(out, MAGIC, 4);
    out[4] = KEY_FILE_VERSION;
    out[5] = KDF_ALG_ARGON2ID13;
    out[6] = AEAD_XCHACHA20POLY1305;
    out[7] = 0;
    put32(out + 8, opslimit);
    put32(out + 12, memlimit_kib);
    randombytes_buf(out + 16, crypto_pwhash_SALTBYTES);
    randombytes_buf(out + 32, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    st = derive_key(ctx, NULL, pass, pass_len, out + 16, opslimit, memlimit_kib, key);
    if (st != CT_OK) {
        goto done;
    }
    /* The plaintext is exactly the key_secrets struct: two byte arrays, no
     * padding. */
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + KEY_HEADER_BYTES, &clen,
                                               (const uint8_t *)sec, KEY_PLAIN_BYTES, out,
                                               KEY_HEADER_BYTES, NULL, out + 32, key);
done:
    sodium_memzero(key, sizeof key);
    return st;
}

ct_status key_unseal(ct_ctx *ctx, const uint8_t *raw, size_t n, const char *pass, size_t pass_len,
                     key_secrets **out)
{
    uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    key_secrets *sec = NULL;
    unsigned long long mlen = 0;
    ct_status st = CT_OK;

    *out = NULL;
    if (n < 8 || memcmp(raw, MAGIC, 4) != 0) {
        return ct_fail(ctx, CT_ERR_FORMAT, "keystore: not a celtrace keystore");
    }
    if (raw[4] != KEY_FILE_VERSION) {
        return ct_fail(ctx, CT_ERR_FORMAT,
                       "keystore: format version %u is not supported by celtrace %s", raw[4],
                       CT_VERSION_STRING);
    }
    if (n != KEY_FILE_BYTES) {
        return ct_fail(ctx, CT_ERR_FORMAT, "keystore: truncated or damaged (%zu bytes, want %u)",
                       n, KEY_FILE_BYTES);
    }
    if (raw[5] != KDF_ALG_ARGON2ID13 || raw[6] != AEAD_XCHACHA20POLY1305 || raw[7] != 0) {
        return ct_fail(ctx, CT_ERR_FORMAT, "keystore: unknown algorithm");
    }
    uint32_t ops = get32(raw + 8);
    uint32_t mem = get32(raw + 12);
    if (ops < crypto_pwhash_OPSLIMIT_MIN || ops > KEY_MAX_OPSLIMIT ||
        mem < crypto_pwhash_MEMLIMIT_MIN / 1024u || mem > KEY_MAX_MEMLIMIT_KIB) {
        return ct_fail(ctx, CT_ERR_FORMAT, "keystore: damaged header (cost parameters)");
    }
    sec = secrets_new(ctx);
    if (sec == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    st = derive_key(ctx, NULL, pass, pass_len, raw + 16, ops, mem, key);
    if (st != CT_OK) {
        goto done;
    }
    if (crypto_aead_xchacha20poly1305_ietf_decrypt((uint8_t *)sec, &mlen, NULL,
                                                   raw + KEY_HEADER_BYTES,
                                                   KEY_PLAIN_BYTES + 16u, raw, KEY_HEADER_BYTES,
                                                   raw + 32, key) != 0 ||
        mlen != KEY_PLAIN_BYTES) {
        st = ct_fail(ctx, CT_ERR_AUTH, "wrong passphrase, or the keystore was altered");
        goto done;
    }
    *out = sec;
    sec = NULL;
done:
    sodium_memzero(key, sizeof key);
    key_secrets_free(sec);
    return st;
}

/* Write data to a new file (O_EXCL) with the given mode and fsync it. */
static ct_status write_new_file(ct_ctx *ctx, const char *path, const void *data, size_t n,
                                mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        return ct_fail(ctx, errno == EEXIST ? CT_ERR_EXISTS : CT_ERR_IO, "%s: %s", path,
                       strerror(errno));
    }
    const uint8_t *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(path);
            return ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(path);
        return ct_fail(ctx, CT_ERR_IO, "%s: %s", path, strerror(e));
    }
    return CT_OK;
}

/* Read a small file fully; CT_ERR_NOT_FOUND if missing. */
static ct_status read_small(ct_ctx *ctx, const char *path, size_t max, uint8_t **out, size_t *n)
{
    ct_status st = CT_OK;
    uint8_t *buf = NULL;
    size_t len = 0;
    FILE *f = fopen(path, "rb");

    *out = NULL;
    *n = 0;
    if (f == NULL) {
        return ct_fail(ctx, errno == ENOENT ? CT_ERR_NOT_FOUND : CT_ERR_IO, "%s: %s", path,
                       strerror(errno));
    }
    buf = ct_malloc(ctx, max + 1);
    if (buf == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    len = fread(buf, 1, max + 1, f);
    if (ferror(f)) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: read error", path);
        goto done;
    }
    if (len > max) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: too large for a keystore file", path);
        goto done;
    }
    *out = buf;
    *n = len;
    buf = NULL;
done:
    free(buf);
    fclose(f);
    return st;
}

static ct_status pub_text(ct_ctx *ctx, const char *studio, const uint8_t *pk, char **out)
{
    char b64[sodium_base64_ENCODED_LEN(KEY_SIGN_PK_BYTES, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof b64, pk, KEY_SIGN_PK_BYTES, sodium_base64_VARIANT_ORIGINAL);
    size_t n = strlen(studio) + strlen(b64) + 128;
    char *s = ct_malloc(ctx, n);
    if (s == NULL) {
        return CT_ERR_NOMEM;
    }
    snprintf(s, n, "celtrace-studio-public-key v1\nstudio: %s\ned25519: %s\n", studio, b64);
    *out = s;
    return CT_OK;
}

ct_status ct_init(ct_ctx *ctx, const char *studio, const char *pass, size_t pass_len)
{
    ct_status st;
    key_secrets *sec = NULL;
    uint8_t file[KEY_FILE_BYTES];
    uint8_t pk[KEY_SIGN_PK_BYTES];
    char *ks_path = NULL, *ks_tmp = NULL, *pub_path = NULL, *pub_tmp = NULL, *db_path = NULL;
    char *text = NULL;
    bool made_home = false, made_db = false, made_ks_tmp = false, made_pub_tmp = false;
    struct stat sb;

    if (studio == NULL || studio[0] == '\0' || strlen(studio) >= CT_NAME_MAX ||
        strchr(studio, '\n') != NULL) {
        return ct_fail(ctx, CT_ERR_MISUSE, "studio name must be 1 to %u bytes on one line",
                       CT_NAME_MAX - 1);
    }
    if (pass == NULL || pass_len == 0) {
        return ct_fail(ctx, CT_ERR_MISUSE, "the passphrase must not be empty");
    }
    if (mkdir(ctx->home, 0700) == 0) {
        made_home = true;
    } else if (errno != EEXIST) {
        return ct_fail(ctx, CT_ERR_IO, "cannot create %s: %s", ctx->home, strerror(errno));
    } else if (stat(ctx->home, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        return ct_fail(ctx, CT_ERR_IO, "%s exists and is not a folder", ctx->home);
    }
    st = ct_home_path(ctx, KEY_FILE_NAME, &ks_path);
    if (st == CT_OK) {
        st = ct_home_path(ctx, KEY_FILE_NAME ".tmp", &ks_tmp);
    }
    if (st == CT_OK) {
        st = ct_home_path(ctx, KEY_PUB_NAME, &pub_path);
    }
    if (st == CT_OK) {
        st = ct_home_path(ctx, KEY_PUB_NAME ".tmp", &pub_tmp);
    }
    if (st == CT_OK) {
        st = ct_home_path(ctx, STO_DB_NAME, &db_path);
    }
    if (st != CT_OK) {
        goto done;
    }
    if (stat(ks_path, &sb) == 0) {
        st = ct_fail(ctx, CT_ERR_EXISTS,
                     "%s already holds a keystore; refusing to overwrite it", ctx->home);
        goto done;
    }
    if (chmod(ctx->home, 0700) != 0) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", ctx->home, strerror(errno));
        goto done;
    }
    sec = secrets_new(ctx);
    if (sec == NULL) {
        st = CT_ERR_NOMEM;
        goto done;
    }
    randombytes_buf(sec->master, sizeof sec->master);
    crypto_sign_keypair(pk, sec->sign_sk);
    st = key_seal(ctx, sec, pass, pass_len, INIT_OPSLIMIT, INIT_MEMLIMIT_KIB, file);
    if (st != CT_OK) {
        goto done;
    }
    st = pub_text(ctx, studio, pk, &text);
    if (st != CT_OK) {
        goto done;
    }
    st = write_new_file(ctx, ks_tmp, file, sizeof file, 0600);
    if (st != CT_OK) {
        goto done;
    }
    made_ks_tmp = true;
    st = write_new_file(ctx, pub_tmp, text, strlen(text), 0644);
    if (st != CT_OK) {
        goto done;
    }
    made_pub_tmp = true;
    st = sto_create(ctx);
    if (st != CT_OK) {
        goto done;
    }
    made_db = true;
    /* The keystore is renamed into place last: its presence is what marks a
     * home as initialised, so a failure before this leaves none. */
    if (rename(pub_tmp, pub_path) != 0) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", pub_path, strerror(errno));
        goto done;
    }
    made_pub_tmp = false;
    if (rename(ks_tmp, ks_path) != 0) {
        st = ct_fail(ctx, CT_ERR_IO, "%s: %s", ks_path, strerror(errno));
        unlink(pub_path);
        goto done;
    }
    made_ks_tmp = false;
    ct_slot_set(ctx, CT_SLOT_KEYS, sec, secrets_free_void);
    sec = NULL;
done:
    if (st != CT_OK) {
        if (made_ks_tmp) {
            unlink(ks_tmp);
        }
        if (made_pub_tmp) {
            unlink(pub_tmp);
        }
        if (made_db) {
            char side[4200];
            unlink(db_path);
            snprintf(side, sizeof side, "%s-wal", db_path);
            unlink(side);
            snprintf(side, sizeof side, "%s-shm", db_path);
            unlink(side);
        }
        if (made_home) {
            rmdir(ctx->home);
        }
    }
    sodium_memzero(file, sizeof file);
    key_secrets_free(sec);
    free(text);
    free(ks_path);
    free(ks_tmp);
    free(pub_path);
    free(pub_tmp);
    free(db_path);
    return st;
}

ct_status ct_unlock(ct_ctx *ctx, const char *pass, size_t pass_len)
{
    ct_status st;
    char *path = NULL;
    uint8_t *raw = NULL;
    size_t n = 0;
    key_secrets *sec = NULL;

    st = ct_home_path(ctx, KEY_FILE_NAME, &path);
    if (st != CT_OK) {
        goto done;
    }
    st = read_small(ctx, path, 4096, &raw, &n);
    if (st == CT_ERR_NOT_FOUND) {
        st = ct_fail(ctx, CT_ERR_NOT_FOUND, "no keystore in %s: run 'celtrace init' first",
                     ctx->home);
        goto done;
    }
    if (st != CT_OK) {
        goto done;
    }
    st = key_unseal(ctx, raw, n, pass, pass_len, &sec);
    if (st != CT_OK) {
        goto done;
    }
    ct_slot_set(ctx, CT_SLOT_KEYS, sec, secrets_free_void);
    sec = NULL;
done:
    if (raw != NULL) {
        sodium_memzero(raw, n);
    }
    free(raw);
    free(path);
    key_secrets_free(sec);
    return st;
}

ct_status ct_ctx_clone(ct_ctx *ctx, ct_ctx **out)
{
    *out = NULL;
    ct_ctx *c = NULL;
    ct_status st = ct_ctx_new(ctx->home, &c);
    if (st != CT_OK) {
        return ct_fail(ctx, st, "cannot create a context: %s", ct_strerror(st));
    }
    c->max_pixels = ctx->max_pixels;
    const key_secrets *sec = ct_slot_get(ctx, CT_SLOT_KEYS);
    if (sec != NULL) {
        /* The worker gets its own guarded copy: each context wipes its
         * secrets when freed, whatever the other does meanwhile. */
        key_secrets *copy = secrets_new(ctx);
        if (copy == NULL) {
            ct_ctx_free(c);
            return CT_ERR_NOMEM;
        }
        memcpy(copy, sec, sizeof *copy);
        ct_slot_set(c, CT_SLOT_KEYS, copy, secrets_free_void);
    }
    *out = c;
    return CT_OK;
}

int ct_is_unlocked(const ct_ctx *ctx)
{
    return ct_slot_get(ctx, CT_SLOT_KEYS) != NULL;
}

ct_status key_secrets_of(ct_ctx *ctx, const key_secrets **out)
{
    *out = ct_slot_get(ctx, CT_SLOT_KEYS);
    if (*out == NULL) {
        return ct_fail(ctx, CT_ERR_AUTH, "the keystore is locked (no passphrase given)");
    }
    return CT_OK;
}

void key_derive_mark_raw(const uint8_t master[KEY_MASTER_BYTES], uint32_t vendor_id,
                         uint32_t epoch, uint8_t out[CT_MARK_KEYBYTES])
{
    uint64_t sub = ((uint64_t)epoch << 32) | vendor_id;
    crypto_kdf_derive_from_key(out, CT_MARK_KEYBYTES, sub, "ctvmark1", master);
}

ct_status key_derive_mark(ct_ctx *ctx, uint32_t vendor_id, uint32_t epoch,
                          uint8_t out[CT_MARK_KEYBYTES])
{
    const key_secrets *sec;
    ct_status st = key_secrets_of(ctx, &sec);
    if (st != CT_OK) {
        return st;
    }
    key_derive_mark_raw(sec->master, vendor_id, epoch, out);
    return CT_OK;
}

ct_status ct_vendor_mark_key(ct_ctx *ctx, uint32_t vendor_id, uint32_t epoch,
                             uint8_t key[CT_MARK_KEYBYTES])
{
    if (vendor_id == 0 || epoch == 0) {
        return ct_fail(ctx, CT_ERR_MISUSE, "vendor id and epoch start at 1");
    }
    return key_derive_mark(ctx, vendor_id, epoch, key);
}

ct_status key_derive_sync(ct_ctx *ctx, uint8_t out[CT_MARK_KEYBYTES])
{
    const key_secrets *sec;
    ct_status st = key_secrets_of(ctx, &sec);
    if (st != CT_OK) {
        return st;
    }
    crypto_kdf_derive_from_key(out, CT_MARK_KEYBYTES, 0, "ctsync01", sec->master);
    return CT_OK;
}

ct_status key_sign(ct_ctx *ctx, const uint8_t *msg, size_t len, uint8_t sig[KEY_SIG_BYTES])
{
    const key_secrets *sec;
    ct_status st = key_secrets_of(ctx, &sec);
    if (st != CT_OK) {
        return st;
    }
    crypto_sign_detached(sig, NULL, msg, len, sec->sign_sk);
    return CT_OK;
}

ct_status key_read_public(ct_ctx *ctx, const char *path, uint8_t pk[CT_PUBLICKEYBYTES],
                          char studio[CT_NAME_MAX])
{
    ct_status st;
    uint8_t *raw = NULL;
    size_t n = 0, binlen = 0;

    st = read_small(ctx, path, 4096, &raw, &n);
    if (st != CT_OK) {
        goto done;
    }
    raw[n] = '\0';
    const char *s = (const char *)raw;
    const char *hdr = "celtrace-studio-public-key v1\nstudio: ";
    const char *nl, *k;
    nl = strncmp(s, hdr, strlen(hdr)) == 0 ? strchr(s + strlen(hdr), '\n') : NULL;
    if (nl == NULL || strncmp(nl + 1, "ed25519: ", 9) != 0) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: not a celtrace public key file", path);
        goto done;
    }
    k = nl + 10;
    size_t klen = strcspn(k, "\n");
    if (sodium_base642bin(pk, CT_PUBLICKEYBYTES, k, klen, NULL, &binlen, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        binlen != CT_PUBLICKEYBYTES) {
        st = ct_fail(ctx, CT_ERR_FORMAT, "%s: damaged public key", path);
        goto done;
    }
    if (studio != NULL) {
        size_t sl = (size_t)(nl - (s + strlen(hdr)));
        if (sl >= CT_NAME_MAX) {
            sl = CT_NAME_MAX - 1;
        }
        memcpy(studio, s + strlen(hdr), sl);
        studio[sl] = '\0';
    }
done:
    free(raw);
    return st;
}

ct_status ct_public_key(ct_ctx *ctx, uint8_t pk[CT_PUBLICKEYBYTES], char studio[CT_NAME_MAX])
{
    char *path = NULL;
    ct_status st = ct_home_path(ctx, KEY_PUB_NAME, &path);
    if (st == CT_OK) {
        st = key_read_public(ctx, path, pk, studio);
        if (st == CT_ERR_NOT_FOUND) {
            st = ct_fail(ctx, CT_ERR_NOT_FOUND,
                         "no studio public key in %s: run 'celtrace init' first", ctx->home);
        }
    }
    free(path);
    return st;
}

ct_status ct_public_key_export(ct_ctx *ctx, char **out)
{
    uint8_t pk[CT_PUBLICKEYBYTES];
    char studio[CT_NAME_MAX];
    *out = NULL;
    ct_status st = ct_public_key(ctx, pk, studio);
    if (st != CT_OK) {
        return st;
    }
    return pub_text(ctx, studio, pk, out);
}

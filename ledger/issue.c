/* ledger: what an embed needs to issue a record: a unique serial, the
 * hashes of its files, the operator, and the signed append. */
#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "keys/keys.h"

/* Random rather than sequential: a vendor holding two copies learns
 * nothing about how many assets went out in between. 32 bits leave
 * collisions rare even at millions of issues; a taken serial is drawn
 * again, and the store's primary key decides races between processes. */
ct_status ldg_claim_serial(ct_ctx *ctx, uint32_t *serial)
{
    for (int i = 0; i < 64; i++) {
        uint32_t s = randombytes_uniform(UINT32_MAX) + 1u; /* 1 .. 2^32-1 */
        ct_status st = sto_serial_claim(ctx, s);
        if (st == CT_OK) {
            *serial = s;
            return CT_OK;
        }
        if (st != CT_ERR_EXISTS) {
            return st;
        }
    }
    return ct_fail(ctx, CT_ERR_LIMIT, "no free serial found in 64 draws");
}

static ct_status seal(ct_ctx *ctx, sto_record *rec, void *arg)
{
    uint8_t msg[LDG_SIG_MSG_BYTES];
    (void)arg;
    ldg_record_hash(rec, rec->record_hash);
    ldg_sig_message(rec->record_hash, msg);
    return key_sign(ctx, msg, sizeof msg, rec->signature);
}

ct_status ldg_issue(ct_ctx *ctx, sto_record *rec)
{
    rec->malformed = 0;
    return sto_record_append(ctx, rec, seal, NULL);
}

/* RFC 3629 UTF-8, no overlongs or surrogates; and no C0/C1 controls or
 * DEL, which would break one-line output. */
bool ldg_text_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p != 0) {
        unsigned c = *p;
        if (c < 0x20 || c == 0x7f) {
            return false;
        }
        if (c < 0x80) {
            p++;
            continue;
        }
        int n;
        unsigned cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        for (int k = 1; k <= n; k++) {
            if ((p[k] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (p[k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f)) {
            return false;
        }
        p += n + 1;
    }
    return true;
}

ct_status ldg_check_text(ct_ctx *ctx, const char *what, const char *s, size_t cap)
{
    if (s == NULL || s[0] == '\0' || strlen(s) >= cap || !ldg_text_ok(s)) {
        return ct_fail(ctx, CT_ERR_MISUSE,
                       "the %s must be 1 to %zu bytes of UTF-8 text without control characters",
                       what, cap - 1);
    }
    return CT_OK;
}

void ldg_operator(char out[CT_OPERATOR_MAX])
{
    char host[256] = "";
    const char *user = NULL;
    struct passwd pw, *res = NULL;
    char buf[1024];
    if (getpwuid_r(geteuid(), &pw, buf, sizeof buf, &res) == 0 && res != NULL) {
        user = res->pw_name;
    }
    if (user == NULL || user[0] == '\0') {
        user = getenv("USER");
    }
    if (user == NULL || user[0] == '\0' || !ldg_text_ok(user)) {
        user = "unknown";
    }
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0' || !ldg_text_ok(host)) {
        snprintf(host, sizeof host, "unknown");
    }
    host[sizeof host - 1] = '\0';
    snprintf(out, CT_OPERATOR_MAX, "%.100s@%.150s", user, host);
}

int ldg_sha256_path(const char *path, bool sync, const atomic_bool *stop,
                    uint8_t out[STO_HASH_BYTES])
{
    crypto_hash_sha256_state s;
    uint8_t buf[65536];
    int err = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno != 0 ? errno : EIO;
    }
    if (sync && fsync(fd) != 0) {
        err = errno != 0 ? errno : EIO;
        goto done;
    }
    crypto_hash_sha256_init(&s);
    for (;;) {
        if (stop != NULL && atomic_load(stop)) {
            err = ECANCELED;
            goto done;
        }
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            err = errno != 0 ? errno : EIO;
            goto done;
        }
        if (n == 0) {
            break;
        }
        crypto_hash_sha256_update(&s, buf, (unsigned long long)n);
    }
    crypto_hash_sha256_final(&s, out);
done:
    close(fd);
    return err;
}

int ldg_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno != 0 ? errno : EIO;
        if (fd >= 0) {
            close(fd);
        }
        return e;
    }
    close(fd);
    return 0;
}

ct_status ldg_fsync_file(ct_ctx *ctx, const char *path)
{
    return ldg_sha256_status(ctx, path, ldg_fsync_path(path));
}

/* One piece of the output waiting for the hasher. */
typedef struct hs_chunk {
    struct hs_chunk *next;
    size_t n;
    unsigned char bytes[];
} hs_chunk;

struct ldg_hash_stream {
    crypto_hash_sha256_state st;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    hs_chunk *head, *tail; /* queued, oldest first */
    bool ended;
    ct_task task;
};

/* The hasher: takes pieces in order until the stream has ended. */
static void hs_run(void *arg)
{
    ldg_hash_stream *hs = arg;
    for (;;) {
        pthread_mutex_lock(&hs->mu);
        while (hs->head == NULL && !hs->ended) {
            pthread_cond_wait(&hs->cv, &hs->mu);
        }
        hs_chunk *c = hs->head;
        if (c != NULL) {
            hs->head = c->next;
            if (hs->head == NULL) {
                hs->tail = NULL;
            }
        }
        pthread_mutex_unlock(&hs->mu);
        if (c == NULL) {
            return; /* ended and drained */
        }
        crypto_hash_sha256_update(&hs->st, c->bytes, (unsigned long long)c->n);
        free(c);
    }
}

ct_status ldg_hash_stream_start(ct_ctx *ctx, unsigned threads, ldg_hash_stream **out)
{
    ldg_hash_stream *hs = ct_calloc(ctx, 1, sizeof *hs);
    *out = NULL;
    if (hs == NULL) {
        return CT_ERR_NOMEM;
    }
    crypto_hash_sha256_init(&hs->st);
    if (pthread_mutex_init(&hs->mu, NULL) != 0) {
        free(hs);
        return ct_fail(ctx, CT_ERR_NOMEM, "cannot create a lock");
    }
    if (pthread_cond_init(&hs->cv, NULL) != 0) {
        pthread_mutex_destroy(&hs->mu);
        free(hs);
        return ct_fail(ctx, CT_ERR_NOMEM, "cannot create a condition variable");
    }
    ct_task_start(&hs->task, threads, hs_run, hs);
    *out = hs;
    return CT_OK;
}

int ldg_hash_stream_feed(void *arg, const void *bytes, size_t n)
{
    ldg_hash_stream *hs = arg;
    if (!hs->task.started) {
        /* No hasher thread (one core): hash here, nothing queued. */
        crypto_hash_sha256_update(&hs->st, bytes, (unsigned long long)n);
        return 0;
    }
    hs_chunk *c = malloc(sizeof *c + n);
    if (c == NULL) {
        return -1;
    }
    c->next = NULL;
    c->n = n;
    memcpy(c->bytes, bytes, n);
    pthread_mutex_lock(&hs->mu);
    if (hs->tail != NULL) {
        hs->tail->next = c;
    } else {
        hs->head = c;
    }
    hs->tail = c;
    pthread_cond_signal(&hs->cv);
    pthread_mutex_unlock(&hs->mu);
    return 0;
}

void ldg_hash_stream_end(ldg_hash_stream *hs, uint8_t out[STO_HASH_BYTES])
{
    if (hs == NULL) {
        return;
    }
    pthread_mutex_lock(&hs->mu);
    hs->ended = true;
    pthread_cond_signal(&hs->cv);
    pthread_mutex_unlock(&hs->mu);
    ct_task_join(&hs->task); /* without a thread, this drains nothing: all hashed */
    if (out != NULL) {
        crypto_hash_sha256_final(&hs->st, out);
    }
    sodium_memzero(&hs->st, sizeof hs->st);
    pthread_cond_destroy(&hs->cv);
    pthread_mutex_destroy(&hs->mu);
    free(hs);
}

ct_status ldg_sha256_status(ct_ctx *ctx, const char *path, int err)
{
    if (err == 0) {
        return CT_OK;
    }
    return ct_fail(ctx, err == ENOENT ? CT_ERR_NOT_FOUND : CT_ERR_IO, "%s: %s", path,
                   strerror(err));
}

ct_status ldg_sha256_file(ct_ctx *ctx, const char *path, bool sync, uint8_t out[STO_HASH_BYTES])
{
    return ldg_sha256_status(ctx, path, ldg_sha256_path(path, sync, NULL, out));
}

/* Sum of y over rows [y0, y1), columns [x0, x1): eight sums side by side,
 * which vectorise (one running sum is a chain of dependent adds, 4 cycles
 * a pixel). Static: a clone's resolver must not become an exported
 * symbol of the shared library. */
CT_SIMD_CLONES
static double box_sum(const float *y, uint32_t w, uint64_t x0, uint64_t x1, uint64_t y0,
                      uint64_t y1)
{
    double lane[8] = {0};
    for (uint64_t yy = y0; yy < y1; yy++) {
        const float *row = y + yy * w;
        uint64_t xx = x0;
        for (; xx + 8 <= x1; xx += 8) {
            for (int l = 0; l < 8; l++) {
                lane[l] += row[xx + l];
            }
        }
        for (; xx < x1; xx++) {
            lane[0] += row[xx];
        }
    }
    double sum = 0;
    for (int l = 0; l < 8; l++) {
        sum += lane[l];
    }
    return sum;
}

uint64_t ldg_dhash(const float *y, uint32_t w, uint32_t h)
{
    double cell[8][9];
    uint64_t bits = 0;
    for (uint32_t cy = 0; cy < 8; cy++) {
        /* Cell edges by proportion; an image smaller than the grid reuses
         * pixels rather than leaving a cell empty. */
        uint64_t y0 = (uint64_t)cy * h / 8, y1 = (uint64_t)(cy + 1) * h / 8;
        if (y1 <= y0) {
            y1 = y0 + 1 < h ? y0 + 1 : h;
            y0 = y1 - 1;
        }
        for (uint32_t cx = 0; cx < 9; cx++) {
            uint64_t x0 = (uint64_t)cx * w / 9, x1 = (uint64_t)(cx + 1) * w / 9;
            if (x1 <= x0) {
                x1 = x0 + 1 < w ? x0 + 1 : w;
                x0 = x1 - 1;
            }
            cell[cy][cx] = box_sum(y, w, x0, x1, y0, y1) / (double)((y1 - y0) * (x1 - x0));
        }
    }
    for (int cy = 0; cy < 8; cy++) {
        for (int cx = 0; cx < 8; cx++) {
            bits = (bits << 1) | (cell[cy][cx] > cell[cy][cx + 1] ? 1u : 0u);
        }
    }
    return bits;
}

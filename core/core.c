/* core: context, errors, allocation. */
#include "core.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <pthread.h>

#include <sodium.h>

int ct_version_number(void)
{
    return CT_VERSION_NUMBER;
}

const char *ct_version_string(void)
{
    return CT_VERSION_STRING;
}

const char *ct_strerror(ct_status st)
{
    switch (st) {
    case CT_OK:
        return "success";
    case CT_ERR_NOMEM:
        return "out of memory";
    case CT_ERR_IO:
        return "input/output error";
    case CT_ERR_FORMAT:
        return "corrupt or unsupported input";
    case CT_ERR_LIMIT:
        return "input exceeds a limit";
    case CT_ERR_AUTH:
        return "wrong passphrase or tampered data";
    case CT_ERR_NOT_FOUND:
        return "not found";
    case CT_ERR_MISUSE:
        return "invalid argument or misuse";
    case CT_ERR_EXISTS:
        return "already exists";
    }
    return "unknown status";
}

ct_status ct_fail(ct_ctx *ctx, ct_status st, const char *fmt, ...)
{
    if (ctx == NULL) {
        return st;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
    va_end(ap);
    /* One line on stderr is the CLI's contract: never let a message carry a
     * newline from a file name or a library's text. */
    for (char *p = ctx->errmsg; *p != '\0'; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    ctx->last = st;
    return st;
}

static bool alloc_should_fail(ct_ctx *ctx)
{
    if (ctx == NULL || ctx->fail_alloc_after <= 0) {
        return false;
    }
    ctx->fail_alloc_after--;
    return ctx->fail_alloc_after == 0;
}

/* Planes of a large image (a float per pixel: 8 MB at 1080p) are touched
 * once, page by page. On virtual machines a first touch of a 4 KiB page
 * costs several microseconds, and it dominated embedding (measured: 24 ms
 * to first touch 8 MB, 0.8 ms in 2 MiB pages). Large blocks are therefore
 * 2 MiB aligned and offered to transparent huge pages; free() releases
 * them like any other block. */
#define BIG_BLOCK ((size_t)4 << 20)
#define HUGE_PAGE ((size_t)2 << 20)

static void *big_alloc(size_t n)
{
#ifdef MADV_HUGEPAGE
    void *p = NULL;
    /* Rounded up to whole huge pages: a tail in small pages would cost
     * as much as the rest (measured: 8 MB blocks, 6 ms of 7.5). */
    if (n > SIZE_MAX - HUGE_PAGE) {
        return NULL;
    }
    size_t whole = (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    if (posix_memalign(&p, HUGE_PAGE, whole) != 0) {
        return NULL;
    }
    (void)madvise(p, whole, MADV_HUGEPAGE); /* advice only */
    return p;
#else
    return malloc(n);
#endif
}

void *ct_malloc(ct_ctx *ctx, size_t n)
{
    void *p = NULL;
    if (!alloc_should_fail(ctx)) {
        p = n >= BIG_BLOCK ? big_alloc(n) : malloc(n == 0 ? 1 : n);
    }
    if (p == NULL) {
        ct_fail(ctx, CT_ERR_NOMEM, "out of memory (%zu bytes)", n);
    }
    return p;
}

void *ct_calloc(ct_ctx *ctx, size_t count, size_t size)
{
    size_t n;
    if (!ct_mul(&n, count, size)) {
        ct_fail(ctx, CT_ERR_NOMEM, "allocation size overflow");
        return NULL;
    }
    void *p = ct_malloc(ctx, n);
    if (p != NULL) {
        memset(p, 0, n);
    }
    return p;
}

void *ct_mallocarray(ct_ctx *ctx, size_t count, size_t size)
{
    size_t n;
    if (!ct_mul(&n, count, size)) {
        ct_fail(ctx, CT_ERR_NOMEM, "allocation size overflow");
        return NULL;
    }
    return ct_malloc(ctx, n);
}

void *ct_reallocarray(ct_ctx *ctx, void *p, size_t count, size_t size)
{
    size_t n;
    if (!ct_mul(&n, count, size)) {
        ct_fail(ctx, CT_ERR_NOMEM, "allocation size overflow");
        return NULL;
    }
    void *q = alloc_should_fail(ctx) ? NULL : realloc(p, n == 0 ? 1 : n);
    if (q == NULL) {
        ct_fail(ctx, CT_ERR_NOMEM, "out of memory (%zu bytes)", n);
    }
    return q;
}

char *ct_strdup(ct_ctx *ctx, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = ct_malloc(ctx, n);
    if (p != NULL) {
        memcpy(p, s, n);
    }
    return p;
}

void ct_free(void *p)
{
    free(p);
}

void *ct_slot_get(const ct_ctx *ctx, ct_slot s)
{
    return ctx->slot[s];
}

void ct_slot_set(ct_ctx *ctx, ct_slot s, void *p, void (*destroy)(void *))
{
    if (ctx->slot[s] != NULL && ctx->slot_free[s] != NULL) {
        ctx->slot_free[s](ctx->slot[s]);
    }
    ctx->slot[s] = p;
    ctx->slot_free[s] = destroy;
}

ct_status ct_ctx_new(const char *home, ct_ctx **out)
{
    char buf[4096];
    ct_ctx *ctx = NULL;

    *out = NULL;
    if (sodium_init() < 0) {
        return CT_ERR_NOMEM;
    }
    if (home == NULL || home[0] == '\0') {
        const char *env = getenv("CELTRACE_HOME");
        if (env != NULL && env[0] != '\0') {
            home = env;
        } else {
            const char *h = getenv("HOME");
            if (h == NULL || h[0] == '\0') {
                return CT_ERR_MISUSE;
            }
            int n = snprintf(buf, sizeof buf, "%s/.celtrace", h);
            if (n < 0 || (size_t)n >= sizeof buf) {
                return CT_ERR_MISUSE;
            }
            home = buf;
        }
    }
    ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL) {
        return CT_ERR_NOMEM;
    }
    ctx->home = strdup(home);
    if (ctx->home == NULL) {
        free(ctx);
        return CT_ERR_NOMEM;
    }
    /* Trailing slashes would double up in joined paths. */
    size_t len = strlen(ctx->home);
    while (len > 1 && ctx->home[len - 1] == '/') {
        ctx->home[--len] = '\0';
    }
    ctx->max_pixels = CT_DEFAULT_MAX_PIXELS;
    *out = ctx;
    return CT_OK;
}

void ct_ctx_free(ct_ctx *ctx)
{
    if (ctx == NULL) {
        return;
    }
    for (int s = 0; s < CT_SLOT_COUNT; s++) {
        ct_slot_set(ctx, (ct_slot)s, NULL, NULL);
    }
    free(ctx->home);
    free(ctx);
}

const char *ct_errmsg(const ct_ctx *ctx)
{
    return ctx == NULL ? "" : ctx->errmsg;
}

const char *ct_home(const ct_ctx *ctx)
{
    return ctx->home;
}

void ct_set_max_pixels(ct_ctx *ctx, uint64_t max_pixels)
{
    ctx->max_pixels = max_pixels;
}

ct_status ct_home_path(ct_ctx *ctx, const char *name, char **out)
{
    size_t a = strlen(ctx->home);
    size_t b = strlen(name);
    size_t n;
    *out = NULL;
    if (!ct_add(&n, a, b) || !ct_add(&n, n, 2)) {
        return ct_fail(ctx, CT_ERR_LIMIT, "path too long");
    }
    char *p = ct_malloc(ctx, n);
    if (p == NULL) {
        return CT_ERR_NOMEM;
    }
    memcpy(p, ctx->home, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    *out = p;
    return CT_OK;
}

/* ---- bands on threads ---- */

/* The threads take the next band not yet taken until none is left: a
 * thread that shares its core with other work, or gets the light bands,
 * does not hold the others up. Which thread runs a band never changes
 * what the band computes. */
typedef struct par_job {
    void (*fn)(void *arg, unsigned band);
    void *arg;
    unsigned nbands;
    atomic_uint next;
} par_job;

static void *par_run(void *p)
{
    par_job *j = p;
    for (unsigned b; (b = atomic_fetch_add(&j->next, 1u)) < j->nbands;) {
        j->fn(j->arg, b);
    }
    return NULL;
}

#define CT_MAX_THREADS 8

void ct_parallel(unsigned nbands, unsigned threads, void (*fn)(void *arg, unsigned band),
                 void *arg)
{
    if (nbands == 0) {
        return;
    }
    unsigned t = threads < 1 ? 1 : threads;
    t = t > nbands ? nbands : t;
    t = t > CT_MAX_THREADS ? CT_MAX_THREADS : t;
    pthread_t th[CT_MAX_THREADS];
    par_job job = {fn, arg, nbands, 0};
    atomic_init(&job.next, 0u);
    bool started[CT_MAX_THREADS] = {false};
    for (unsigned i = 1; i < t; i++) {
        started[i] = pthread_create(&th[i], NULL, par_run, &job) == 0;
    }
    /* The caller takes bands too, and whatever a thread that could not
     * start would have taken. */
    par_run(&job);
    for (unsigned i = 1; i < t; i++) {
        if (started[i]) {
            pthread_join(th[i], NULL);
        }
    }
}

static void *task_run(void *p)
{
    ct_task *t = p;
    t->fn(t->arg);
    return NULL;
}

void ct_task_start(ct_task *t, unsigned threads, void (*fn)(void *arg), void *arg)
{
    t->fn = fn;
    t->arg = arg;
    t->pending = true;
    t->started = threads > 1 && pthread_create(&t->th, NULL, task_run, t) == 0;
}

void ct_task_join(ct_task *t)
{
    if (!t->pending) {
        return;
    }
    if (t->started) {
        pthread_join(t->th, NULL);
    } else {
        t->fn(t->arg);
    }
    t->pending = false;
    t->started = false;
}

unsigned ct_image_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1u : (n > 4 ? 4u : (unsigned)n);
}

/* core: the context handle, error reporting, allocation and checked
 * arithmetic. Depends on nothing else in celtrace. */
#ifndef CT_CORE_H
#define CT_CORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <celtrace/celtrace.h>

#if defined(__GNUC__)
#define CT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CT_PRINTF(a, b)
#endif

#define CT_ERRMSG_MAX 512

/* The hottest per-pixel loops are built twice, for the x86-64 baseline
 * (SSE2) and for AVX2, and the loader picks the one the CPU runs (function
 * multiversioning through an ifunc): twice the lanes on any machine of the
 * last decade, one portable binary. Both versions do the same arithmetic in
 * the same order (AVX2 without FMA, so nothing is contracted; the compiler
 * never reassociates float sums), so they give the same bits: a mark or a
 * verdict does not depend on the machine. Put it on the loop itself: a
 * plain function called from a clone is not inlined into it. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CT_NO_CLONES /* their resolvers run at load time, before the sanitizer is up */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CT_NO_CLONES
#endif
#endif
#if defined(__x86_64__) && defined(__ELF__) && defined(__has_attribute) && !defined(CT_NO_CLONES)
#if __has_attribute(target_clones)
#define CT_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef CT_SIMD_CLONES
#define CT_SIMD_CLONES
#endif

/* A module that keeps state in the context registers it in a slot with its
 * own destructor, so core never has to know the module (dependencies point
 * one way: core <- keys, store, ...). */
typedef enum ct_slot {
    CT_SLOT_KEYS = 0,  /* unsealed secrets (keys/) */
    CT_SLOT_STORE = 1, /* open database (store/) */
    CT_SLOT_COUNT
} ct_slot;

struct ct_ctx {
    char *home;
    char errmsg[CT_ERRMSG_MAX];
    ct_status last;
    uint64_t max_pixels;
    void *slot[CT_SLOT_COUNT];
    void (*slot_free[CT_SLOT_COUNT])(void *);
    /* Fault injection for tests: when > 0, the Nth ct_malloc from now
     * fails (1 = the next one). 0 disables it. */
    long fail_alloc_after;
};

/* Record a failure on ctx and return st, so callers can write
 * `return ct_fail(ctx, CT_ERR_FORMAT, "%s: bad header", path);`.
 * ctx may be NULL (the message is then dropped). */
ct_status ct_fail(ct_ctx *ctx, ct_status st, const char *fmt, ...) CT_PRINTF(3, 4);

/* Allocation through the context, so tests can make the Nth one fail.
 * Sizes are counts times element sizes, checked for overflow. They record
 * CT_ERR_NOMEM on ctx when they fail. */
void *ct_malloc(ct_ctx *ctx, size_t n);
void *ct_calloc(ct_ctx *ctx, size_t count, size_t size);
void *ct_mallocarray(ct_ctx *ctx, size_t count, size_t size);
char *ct_strdup(ct_ctx *ctx, const char *s);
/* Resize p to count * size bytes. On failure p is left as it was (the
 * caller still frees it) and NULL is returned. */
void *ct_reallocarray(ct_ctx *ctx, void *p, size_t count, size_t size);

/* Checked arithmetic: return false on overflow (and leave *out alone). */
static inline bool ct_mul(size_t *out, size_t a, size_t b)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) {
        return false;
    }
    *out = r;
    return true;
}

static inline bool ct_mul3(size_t *out, size_t a, size_t b, size_t c)
{
    size_t r;
    if (!ct_mul(&r, a, b) || !ct_mul(&r, r, c)) {
        return false;
    }
    *out = r;
    return true;
}

static inline bool ct_add(size_t *out, size_t a, size_t b)
{
    size_t r;
    if (__builtin_add_overflow(a, b, &r)) {
        return false;
    }
    *out = r;
    return true;
}

/* Slots (see ct_slot). Setting a slot frees what was there. */
void *ct_slot_get(const ct_ctx *ctx, ct_slot s);
void ct_slot_set(ct_ctx *ctx, ct_slot s, void *p, void (*destroy)(void *));

/* Run fn(arg, b) for every band b in 0..nbands-1, on up to `threads`
 * threads (the caller's among them; 0 or 1: all on the caller's). The
 * caller fixes the bands, so what fn computes never depends on how many
 * threads ran it. A thread that cannot start leaves its bands to the
 * caller. fn must not touch a shared ct_ctx. */
void ct_parallel(unsigned nbands, unsigned threads, void (*fn)(void *arg, unsigned band),
                 void *arg);

/* One function on a thread of its own while the caller goes on (work that
 * would otherwise wait its turn: a hash beside a decode, a measurement
 * beside an encode). ct_task_join waits for it. With threads 0 or 1 (one
 * core), or if no thread can start, the function runs inside ct_task_join
 * instead: same result, no overlap. fn must not touch a shared ct_ctx. */
typedef struct ct_task {
    void (*fn)(void *arg);
    void *arg;
    pthread_t th;
    bool started, pending;
} ct_task;
void ct_task_start(ct_task *t, unsigned threads, void (*fn)(void *arg), void *arg);
void ct_task_join(ct_task *t);

/* Threads worth using for one image's per-pixel work: the online CPUs,
 * at most 4. */
unsigned ct_image_threads(void);

/* Join home and a file name into a new string (caller frees with free()). */
ct_status ct_home_path(ct_ctx *ctx, const char *name, char **out);

#endif /* CT_CORE_H */

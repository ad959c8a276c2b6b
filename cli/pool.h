/* cli: work on many files at once, results in input order.
 *
 * Workers each hold their own context (ct_ctx_clone: a context belongs to
 * one thread) and claim the next item; each result lands in a window of
 * slots and the calling thread hands them to `done` in input order, so
 * what is printed does not depend on the number of workers. Workers run
 * at most `window` items ahead of the printer, which bounds the memory
 * held by finished results. verify (leak dumps) and embed (deliveries)
 * both use it. */
#ifndef CT_CLI_POOL_H
#define CT_CLI_POOL_H

#include <stddef.h>

#include <celtrace/celtrace.h>

typedef struct cli_pool_ops {
    size_t n;         /* items 0..n-1 */
    size_t res_size;  /* bytes of one result */
    /* Work on item i with ctx (the caller's, or a worker's own clone),
     * filling res. Must not print. */
    void (*run)(void *arg, ct_ctx *ctx, size_t i, void *res);
    /* On the calling thread, item by item in order: print res. A non-zero
     * return stops the pool (nothing more is claimed) and is returned. */
    int (*done)(void *arg, size_t i, void *res);
    /* Shown as "[i/n] label" on standard error while item i is awaited
     * (NULL: no progress line). */
    const char *(*label)(void *arg, size_t i);
    void *arg;
} cli_pool_ops;

/* Run the items on up to `jobs` workers (1: all on the calling thread,
 * with ctx). Returns 0, the first non-zero `done` return, or -1 when out
 * of memory before any work. */
int cli_pool_run(ct_ctx *ctx, unsigned jobs, const cli_pool_ops *ops);

/* Workers to use when the user gave none: one per CPU, at most 4. */
unsigned cli_pool_default_jobs(void);

#endif /* CT_CLI_POOL_H */

/* cli: the ordered worker pool (see pool.h). */
#include "pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const cli_pool_ops *ops;
    size_t n, next, printed, window;
    unsigned char *slots; /* window results of ops->res_size bytes */
    unsigned char *ready;
} pool;

typedef struct worker {
    pool *p;
    ct_ctx *ctx;
} worker;

static void *work(void *arg)
{
    worker *wk = arg;
    pool *p = wk->p;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->next < p->n && p->next >= p->printed + p->window) {
            pthread_cond_wait(&p->cv, &p->mu);
        }
        if (p->next >= p->n) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        size_t i = p->next++;
        pthread_mutex_unlock(&p->mu);
        /* Slot i % window is ours: the printer has moved past its last
         * user (next < printed + window) and waits for `ready`. */
        p->ops->run(p->ops->arg, wk->ctx, i, p->slots + (i % p->window) * p->ops->res_size);
        pthread_mutex_lock(&p->mu);
        p->ready[i % p->window] = 1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

unsigned cli_pool_default_jobs(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus < 1 ? 1u : (cpus > 4 ? 4u : (unsigned)cpus);
}

int cli_pool_run(ct_ctx *ctx, unsigned jobs, const cli_pool_ops *ops)
{
    pool p = {.ops = ops, .n = ops->n};
    worker *wk = NULL;
    pthread_t *th = NULL;
    unsigned started = 0;
    int rc = 0;
    const int progress = ops->label != NULL && isatty(STDERR_FILENO) && ops->n > 1;

    if (ops->n == 0) {
        return 0;
    }
    if (jobs < 1) {
        jobs = 1;
    }
    if (jobs > ops->n) {
        jobs = (unsigned)ops->n;
    }
    p.window = 2 * (size_t)jobs;
    p.slots = calloc(p.window, ops->res_size);
    p.ready = calloc(p.window, 1);
    wk = calloc(jobs, sizeof *wk);
    th = calloc(jobs, sizeof *th);
    if (p.slots == NULL || p.ready == NULL || wk == NULL || th == NULL) {
        rc = -1;
        goto done;
    }
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    if (jobs > 1) {
        for (unsigned j = 0; j < jobs; j++) {
            wk[j].p = &p;
            if (ct_ctx_clone(ctx, &wk[j].ctx) != CT_OK ||
                pthread_create(&th[j], NULL, work, &wk[j]) != 0) {
                ct_ctx_free(wk[j].ctx);
                wk[j].ctx = NULL;
                break; /* fewer workers; the ones started do the work */
            }
            started++;
        }
    }
    for (size_t i = 0; i < p.n; i++) {
        unsigned char *res = p.slots + (i % p.window) * ops->res_size;
        if (progress) {
            fprintf(stderr, "\r[%zu/%zu] %.60s\033[K", i + 1, ops->n, ops->label(ops->arg, i));
        }
        if (started == 0) {
            ops->run(ops->arg, ctx, i, res);
        } else {
            pthread_mutex_lock(&p.mu);
            while (!p.ready[i % p.window]) {
                pthread_cond_wait(&p.cv, &p.mu);
            }
            pthread_mutex_unlock(&p.mu);
        }
        if (progress) {
            fputs("\r\033[K", stderr);
        }
        /* No worker writes this slot until `printed` moves past i. */
        int dr = ops->done(ops->arg, i, res);
        pthread_mutex_lock(&p.mu);
        p.ready[i % p.window] = 0;
        p.printed = i + 1;
        if (dr != 0) {
            p.n = p.next; /* claim nothing more; wait for what is running */
        }
        pthread_cond_broadcast(&p.cv);
        pthread_mutex_unlock(&p.mu);
        if (dr != 0) {
            rc = dr;
            break;
        }
    }
    for (unsigned j = 0; j < started; j++) {
        pthread_join(th[j], NULL);
    }
    for (unsigned j = 0; j < jobs; j++) {
        ct_ctx_free(wk[j].ctx);
    }
    pthread_cond_destroy(&p.cv);
    pthread_mutex_destroy(&p.mu);
done:
    free(p.slots);
    free(p.ready);
    free(wk);
    free(th);
    return rc;
}

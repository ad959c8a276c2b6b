/* bench/speed: embed and verify time against the floor a file-to-file tool
 * pays, measured side by side in one process: a plain decode and re-encode
 * of the same file with the same libraries and settings (media/'s reader
 * and writer, which is what celtrace embed uses). Medians over N runs.
 *
 * Peak memory: each of the three operations once more in a child process
 * of its own (fork, the operation, _exit), its peak resident set read with
 * wait4's rusage (ru_maxrss). The children fork from this process before
 * the timing loop, when it holds only the unlocked context, and a child
 * that does nothing gives the baseline that every child starts from.
 *
 * Usage: speed HOME PASSPHRASE VENDOR FILE [N]
 * The home must exist (celtrace init) and hold VENDOR. Prints one line of
 * JSON per measurement: times in ms (medians), peaks in MB (ru_maxrss,
 * 1 MB = 1024 KiB), *_peak_mb including the baseline base_peak_mb. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <celtrace/celtrace.h>

#include "media/media.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

enum op { OP_NONE, OP_PLAIN, OP_EMBED, OP_VERIFY };

/* One operation; 0 on success. */
static int run_op(ct_ctx *ctx, enum op op, const char *vendor, const char *file, const char *plain,
                  const char *out)
{
    if (op == OP_PLAIN) {
        med_image *img = NULL;
        med_write_opts wo = {0};
        int bad = med_read_file(ctx, file, &img) != CT_OK || med_write_file(ctx, img, plain, &wo) != CT_OK;
        med_image_free(img);
        return bad;
    }
    if (op == OP_EMBED) {
        ct_embed_result r;
        return ct_embed_file(ctx, vendor, file, out, NULL, &r) != CT_OK;
    }
    if (op == OP_VERIFY) {
        ct_verdict v;
        return ct_verify_file(ctx, out, &v) != CT_OK || !v.identified;
    }
    return 0;
}

/* Peak resident set of a child doing `op` once, in MB; -1 on failure. */
static double peak_mb(ct_ctx *ctx, enum op op, const char *vendor, const char *file,
                      const char *plain, const char *out)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        _exit(run_op(ctx, op, vendor, file, plain, out) ? 1 : 0);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        return -1;
    }
    return ru.ru_maxrss / 1024.0;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: speed HOME PASSPHRASE VENDOR FILE [N]\n");
        return 2;
    }
    int n = argc > 5 ? atoi(argv[5]) : 7;
    if (n < 1 || n > 1000) {
        n = 7;
    }
    const char *file = argv[4];
    const char *ext = strrchr(file, '.');
    char out[4096], plain[4096];
    snprintf(out, sizeof out, "/tmp/ct-speed-%d-marked%s", (int)getpid(), ext ? ext : ".png");
    snprintf(plain, sizeof plain, "/tmp/ct-speed-%d-plain%s", (int)getpid(), ext ? ext : ".png");
    ct_ctx *ctx = NULL;
    if (ct_ctx_new(argv[1], &ctx) != CT_OK || ct_unlock(ctx, argv[2], strlen(argv[2])) != CT_OK) {
        fprintf(stderr, "speed: %s\n", ct_errmsg(ctx));
        return 2;
    }
    /* Peaks first, while this process is small: plain, embed (writes the
     * marked copy the verify child reads), verify. */
    double pk_base = peak_mb(ctx, OP_NONE, argv[3], file, plain, out);
    double pk_plain = peak_mb(ctx, OP_PLAIN, argv[3], file, plain, out);
    double pk_embed = peak_mb(ctx, OP_EMBED, argv[3], file, plain, out);
    double pk_verify = peak_mb(ctx, OP_VERIFY, argv[3], file, plain, out);
    if (pk_base < 0 || pk_plain < 0 || pk_embed < 0 || pk_verify < 0) {
        fprintf(stderr, "speed: a peak-memory child failed\n");
        return 2;
    }
    double *tp = calloc((size_t)n, sizeof *tp), *te = calloc((size_t)n, sizeof *te);
    double *tv = calloc((size_t)n, sizeof *tv);
    for (int i = 0; i < n; i++) {
        /* Alternate the two so drift in machine load hits both alike. */
        double t0 = now();
        med_image *img = NULL;
        med_write_opts wo = {0};
        if (med_read_file(ctx, file, &img) != CT_OK || med_write_file(ctx, img, plain, &wo) != CT_OK) {
            fprintf(stderr, "speed: %s\n", ct_errmsg(ctx));
            return 2;
        }
        med_image_free(img);
        double t1 = now();
        ct_embed_result r;
        if (ct_embed_file(ctx, argv[3], file, out, NULL, &r) != CT_OK) {
            fprintf(stderr, "speed: %s\n", ct_errmsg(ctx));
            return 2;
        }
        double t2 = now();
        ct_verdict v;
        if (ct_verify_file(ctx, out, &v) != CT_OK || !v.identified) {
            fprintf(stderr, "speed: marked copy not identified\n");
            return 2;
        }
        double t3 = now();
        tp[i] = t1 - t0;
        te[i] = t2 - t1;
        tv[i] = t3 - t2;
    }
    double mp = median(tp, n), me = median(te, n), mv = median(tv, n);
    printf("{\"file\":\"%s\",\"runs\":%d,\"plain_decode_encode_ms\":%.1f,\"embed_ms\":%.1f,"
           "\"embed_over_plain\":%.3f,\"verify_marked_ms\":%.1f,\"base_peak_mb\":%.1f,"
           "\"plain_peak_mb\":%.1f,\"embed_peak_mb\":%.1f,\"verify_peak_mb\":%.1f}\n",
           file, n, mp * 1e3, me * 1e3, me / mp, mv * 1e3, pk_base, pk_plain, pk_embed, pk_verify);
    remove(out);
    remove(plain);
    free(tp);
    free(te);
    free(tv);
    ct_ctx_free(ctx);
    return 0;
}

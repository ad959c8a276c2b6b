/* bench/speed: embed and verify time against the floor a file-to-file tool
 * pays, measured side by side in one process: a plain decode and re-encode
 * of the same file with the same libraries and settings (media/'s reader
 * and writer, which is what celtrace embed uses). Medians over N runs.
 *
 * Usage: speed HOME PASSPHRASE VENDOR FILE [N]
 * The home must exist (celtrace init) and hold VENDOR. Prints one line of
 * JSON per measurement. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
           "\"embed_over_plain\":%.3f,\"verify_marked_ms\":%.1f}\n",
           file, n, mp * 1e3, me * 1e3, me / mp, mv * 1e3);
    remove(out);
    remove(plain);
    free(tp);
    free(te);
    free(tv);
    ct_ctx_free(ctx);
    return 0;
}

/* Replays fuzz inputs for med_read_mem (seed corpus and every crasher ever
 * found) as an ordinary ctest, like SQLite's fuzzcheck and zstd's
 * regression_driver.c: each file must come back OK, FORMAT or LIMIT,
 * without a crash (the sanitizer build catches the rest).
 * Usage: test_media_regress DIR...  */
#include "media/media.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Same small limit as fuzz_media.c, so a replay takes the same paths. */
#define REGRESS_MAX_PIXELS (4096u * 4096u)

static int replay_file(ct_ctx *ctx, const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long len = -1;
    int bad = 0;

    if (f == NULL) {
        fprintf(stderr, "%s: cannot open\n", path);
        return 1;
    }
    if (fseek(f, 0, SEEK_END) == 0) {
        len = ftell(f);
    }
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        fprintf(stderr, "%s: cannot size\n", path);
        return 1;
    }
    buf = malloc((size_t)len + 1);
    if (buf == NULL || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "%s: cannot read\n", path);
        bad = 1;
    } else {
        med_image *img = NULL;
        ct_status st = med_read_mem(ctx, buf, (size_t)len, path, &img);
        if (st != CT_OK && st != CT_ERR_FORMAT && st != CT_ERR_LIMIT) {
            fprintf(stderr, "%s: unexpected status %d (%s)\n", path, (int)st, ct_errmsg(ctx));
            bad = 1;
        }
        if ((st == CT_OK) != (img != NULL)) {
            fprintf(stderr, "%s: status %d but image %p\n", path, (int)st, (void *)img);
            bad = 1;
        }
        med_image_free(img);
    }
    free(buf);
    fclose(f);
    return bad;
}

int main(int argc, char **argv)
{
    ct_ctx *ctx = NULL;
    int files = 0, failed = 0;

    if (ct_ctx_new("/nonexistent-celtrace-home", &ctx) != CT_OK) {
        fprintf(stderr, "cannot create a context\n");
        return 2;
    }
    ct_set_max_pixels(ctx, REGRESS_MAX_PIXELS);
    med_libav_quiet();
    for (int a = 1; a < argc; a++) {
        struct dirent **names = NULL;
        int n = scandir(argv[a], &names, NULL, alphasort);
        if (n < 0) {
            continue; /* an empty regress folder may not exist in a checkout */
        }
        for (int i = 0; i < n; i++) {
            char path[4096];
            struct stat sb;
            int w = snprintf(path, sizeof path, "%s/%s", argv[a], names[i]->d_name);
            if (w > 0 && (size_t)w < sizeof path && names[i]->d_name[0] != '.' &&
                stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
                files++;
                failed += replay_file(ctx, path);
            }
            free(names[i]);
        }
        free(names);
    }
    ct_ctx_free(ctx);
    printf("test_media_regress: %d files, %d failed\n", files, failed);
    return failed == 0 ? 0 : 1;
}

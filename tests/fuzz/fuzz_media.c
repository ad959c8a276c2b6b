/* libFuzzer harness for the image readers (PNG, JPEG and everything
 * libavcodec decodes). A small pixel limit, as vips and FFmpeg cap pixels
 * in their fuzzers, keeps each run fast and memory bounded. Crashers go
 * in tests/fuzz/regress/media/, replayed by test_media_regress. */
#include "media/media.h"

#include <stddef.h>
#include <stdint.h>

#define FUZZ_MAX_PIXELS (4096u * 4096u)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ct_ctx *ctx = NULL;
    med_image *img = NULL;

    if (ct_ctx_new("/nonexistent-celtrace-home", &ctx) != CT_OK) {
        return 0;
    }
    med_libav_quiet();
    ct_set_max_pixels(ctx, FUZZ_MAX_PIXELS);
    if (med_read_mem(ctx, data, size, "fuzz", &img) == CT_OK) {
        /* Walk the pixels the way the mark does. */
        (void)med_width(img);
        (void)med_height(img);
    }
    med_image_free(img);
    ct_ctx_free(ctx);
    return 0;
}

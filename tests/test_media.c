/* media: decode/encode round trips, metadata, limits, hostile input, and
 * the exact numbers of the luma view. */
#include "media/media.h"
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char g_tmp[4096]; /* per-run temp dir (set once in main) */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char *tmp_path(const char *name)
{
    static char buf[4400];
    snprintf(buf, sizeof buf, "%.4095s/%.200s", g_tmp, name);
    return buf;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long len = -1;
    *n = 0;
    if (f == NULL) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0) {
        len = ftell(f);
    }
    if (len >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)len + 1);
        if (buf != NULL && fread(buf, 1, (size_t)len, f) == (size_t)len) {
            *n = (size_t)len;
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

static int run(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    }
    return rc;
}

static size_t pix_bytes(const med_image *img)
{
    return (size_t)med_width(img) * med_height(img) * med_channels(img) * (med_depth(img) / 8);
}

static int same_pixels(const med_image *a, const med_image *b)
{
    return med_width(a) == med_width(b) && med_height(a) == med_height(b) &&
           med_channels(a) == med_channels(b) && med_depth(a) == med_depth(b) &&
           memcmp(med_pixels(a), med_pixels(b), pix_bytes(a)) == 0;
}

static int same_meta(const med_image *a, const med_image *b)
{
    if (med_meta_count(a) != med_meta_count(b)) {
        return 0;
    }
    for (size_t i = 0; i < med_meta_count(a); i++) {
        uint32_t ia, ib;
        size_t la, lb;
        const uint8_t *da = med_meta_get(a, i, &ia, &la);
        const uint8_t *db = med_meta_get(b, i, &ib, &lb);
        if (ia != ib || la != lb || (la > 0 && memcmp(da, db, la) != 0)) {
            return 0;
        }
    }
    return 1;
}

static size_t count_meta(const med_image *img, uint32_t id)
{
    size_t k = 0;
    for (size_t i = 0; i < med_meta_count(img); i++) {
        uint32_t got;
        size_t len;
        (void)med_meta_get(img, i, &got, &len);
        k += got == id;
    }
    return k;
}

/* Mean squared error over 8-bit samples. */
static double mse8(const med_image *a, const med_image *b)
{
    const uint8_t *p = med_pixels(a);
    const uint8_t *q = med_pixels(b);
    size_t n = pix_bytes(a);
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)p[i] - q[i];
        s += d * d;
    }
    return s / (double)n;
}

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) {
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
        }
    }
    return c ^ 0xffffffffu;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static const char *png_samples[] = {
    "images/bg_backdrop_1920x1080.png",      "images/bg_garden_16bit_1920x1080.png",
    "images/bg_twowings_chunks_1920x1080.png", "images/cel_headmo_rgba_640x480.png",
    "images/cel_kid_rgba_1920x1080.png",     "images/cel_pirates_palette_1920x1080.png",
    "images/cel_wolf_rgba_1920x1080.png",    "images/lineart_car2_graya_1920x1080.png",
    "images/lineart_nagasaki_3840x2160.png", "images/sketch_eagle_gray_1920x1080.png",
};

static void test_png_roundtrip(ct_ctx *ctx)
{
    static const unsigned want_ch[] = {3, 3, 3, 4, 4, 4, 4, 2, 3, 1};
    for (size_t i = 0; i < sizeof png_samples / sizeof png_samples[0]; i++) {
        med_image *a = NULL, *b = NULL;
        const char *out = tmp_path("rt.png");
        double t0 = now_ms();
        CHECK_ST(med_read_file(ctx, tu_sample(png_samples[i]), &a), CT_OK);
        double t1 = now_ms();
        if (a == NULL) {
            continue;
        }
        CHECK(med_image_kind(a) == MED_KIND_PNG);
        CHECK(med_channels(a) == want_ch[i]);
        CHECK_ST(med_write_file(ctx, a, out, NULL), CT_OK);
        double t2 = now_ms();
        CHECK_ST(med_read_file(ctx, out, &b), CT_OK);
        if (b != NULL) {
            /* Pixels, alpha included, bit for bit; and the kept chunks. */
            CHECK(same_pixels(a, b));
            CHECK(same_meta(a, b));
        }
        printf("  %-45s read %6.1f ms  write %6.1f ms\n", png_samples[i], t1 - t0, t2 - t1);
        med_image_free(a);
        med_image_free(b);
    }
}

/* celtrace's PNG writer, both ways it deflates: in one piece with
 * libdeflate, and (above a size, here forced by a 1-byte limit) in zlib
 * segments in parallel. What it writes reads back to the same pixels and
 * chunks as libpng's own writer, its bytes do not depend on the thread
 * count, it is about the size libpng writes (segments within 1 %,
 * libdeflate within 5 %), and an independent decoder (ImageMagick) reads
 * it. Every PNG sample, plus shapes at the edges of the cut: one pixel,
 * one segment, and rows longer than a segment. */
static void png_segmented_one(ct_ctx *ctx, const med_image *a, const char *what)
{
    char plain[4400];
    snprintf(plain, sizeof plain, "%s", tmp_path("seg_plain.png"));
    med_write_opts w0 = {0};
    CHECK_ST(med_write_file(ctx, a, plain, &w0), CT_OK);
    size_t n0 = 0;
    uint8_t *f0 = slurp(plain, &n0);
    size_t nw[2] = {0, 0};
    for (int seg = 0; seg < 2; seg++) {
        med_image *b = NULL;
        char one[4400], three[4400];
        snprintf(one, sizeof one, "%s", tmp_path("seg_1.png"));
        snprintf(three, sizeof three, "%s", tmp_path("seg_3.png"));
        med_write_opts w1 = {.threads = 1, .png_whole_max = seg ? 1u : 0u};
        med_write_opts w3 = {.threads = 3, .png_whole_max = seg ? 1u : 0u};
        CHECK_ST(med_write_file(ctx, a, one, &w1), CT_OK);
        CHECK_ST(med_write_file(ctx, a, three, &w3), CT_OK);
        size_t n1 = 0, n3 = 0;
        uint8_t *f1 = slurp(one, &n1), *f3 = slurp(three, &n3);
        CHECK(f1 != NULL && f3 != NULL && n1 == n3 && memcmp(f1, f3, n1) == 0);
        /* Segments: each cut costs a few bytes (libpng's own buffering
         * often costs more). libdeflate's level 6 finds a few % less. */
        CHECK(n0 > 0 && (double)n1 < (seg ? 1.01 : 1.05) * (double)n0 + 64);
        CHECK_ST(med_read_file(ctx, three, &b), CT_OK);
        if (b != NULL) {
            CHECK(same_pixels(a, b));
            CHECK(same_meta(a, b));
        }
        if (med_width(a) <= 16000) { /* Debian's ImageMagick policy stops at 16K wide */
            char cmd[14000];
            snprintf(cmd, sizeof cmd,
                     "/usr/bin/compare -metric AE '%s' '%s' null: 2>&1 | grep -qx 0", three,
                     plain);
            CHECK(run(cmd) == 0);
        }
        nw[seg] = n1;
        free(f1);
        free(f3);
        med_image_free(b);
    }
    printf("  written %-40s libdeflate %zu, segments %zu bytes (libpng %zu)\n", what, nw[0],
           nw[1], n0);
    free(f0);
}

static void test_png_segmented(ct_ctx *ctx)
{
    for (size_t i = 0; i < sizeof png_samples / sizeof png_samples[0]; i++) {
        med_image *a = NULL;
        CHECK_ST(med_read_file(ctx, tu_sample(png_samples[i]), &a), CT_OK);
        if (a != NULL) {
            png_segmented_one(ctx, a, png_samples[i]);
        }
        med_image_free(a);
    }
    med_image *c = NULL;
    CHECK_ST(med_read_file(ctx, tu_sample("images/bg_twowings_chunks_1920x1080.png"), &c),
             CT_OK);
    if (c != NULL) {
        png_segmented_one(ctx, c, "bg_twowings_chunks (kept chunks)");
    }
    med_image_free(c);
    /* Synthetic shapes: noise (little to match) and a ramp (long matches). */
    static const struct {
        uint32_t w, h;
        unsigned ch, depth;
    } shapes[] = {{1, 1, 1, 8}, {3, 1000, 2, 8}, {140000, 3, 4, 16}, {700, 900, 3, 8}};
    uint32_t x = 12345;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        med_image *m = NULL;
        CHECK_ST(med_image_new(ctx, shapes[k].w, shapes[k].h, shapes[k].ch, shapes[k].depth, &m),
                 CT_OK);
        if (m == NULL) {
            continue;
        }
        size_t n = (size_t)shapes[k].w * shapes[k].h * shapes[k].ch * (shapes[k].depth / 8);
        uint8_t *p = med_pixels_mut(m);
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            p[i] = (uint8_t)(k % 2 ? (x >> 24) & 7 : (i / 7) & 0xff);
        }
        char what[64];
        snprintf(what, sizeof what, "%ux%u, %u ch, %u bit", shapes[k].w, shapes[k].h,
                 shapes[k].ch, shapes[k].depth);
        png_segmented_one(ctx, m, what);
        med_image_free(m);
    }
}

static void test_png_chunks(ct_ctx *ctx)
{
    med_image *a = NULL, *b = NULL;
    const char *out = tmp_path("chunks.png");
    CHECK_ST(med_read_file(ctx, tu_sample("images/bg_twowings_chunks_1920x1080.png"), &a), CT_OK);
    if (a == NULL) {
        return;
    }
    CHECK(count_meta(a, MED_ID('t', 'E', 'X', 't')) == 3);
    CHECK(count_meta(a, MED_ID('i', 'C', 'C', 'P')) == 1);
    CHECK(count_meta(a, MED_ID('p', 'H', 'Y', 's')) == 1);
    CHECK(count_meta(a, MED_ID('c', 'H', 'R', 'M')) == 1);
    CHECK(count_meta(a, MED_ID('b', 'K', 'G', 'D')) == 1);
    CHECK_ST(med_write_file(ctx, a, out, NULL), CT_OK);
    CHECK_ST(med_read_file(ctx, out, &b), CT_OK);
    if (b != NULL) {
        CHECK(same_meta(a, b));
        CHECK(count_meta(b, MED_ID('t', 'E', 'X', 't')) == 3);
    }
    /* An independent reader agrees the chunks are there and well formed. */
    char cmd[13000];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/identify -verbose '%s' 2>/dev/null | grep -q 'Author' && "
             "/usr/bin/identify -verbose '%s' 2>/dev/null | grep -qi 'icc'",
             out, out);
    CHECK(run(cmd) == 0);
    med_image_free(a);
    med_image_free(b);
}

static void test_png_16bit(ct_ctx *ctx)
{
    med_image *a = NULL;
    size_t n = 0;
    const char *out = tmp_path("16.png");
    CHECK_ST(med_read_file(ctx, tu_sample("images/bg_garden_16bit_1920x1080.png"), &a), CT_OK);
    if (a == NULL) {
        return;
    }
    CHECK(med_depth(a) == 16);
    /* The low bytes are real, so a depth reduction would show. */
    const uint16_t *p = med_pixels(a);
    size_t odd = 0;
    for (size_t i = 0; i < 10000; i++) {
        odd += (p[i] % 257) != 0;
    }
    CHECK(odd > 100);
    CHECK_ST(med_write_file(ctx, a, out, NULL), CT_OK);
    uint8_t *raw = slurp(out, &n);
    CHECK(raw != NULL && n > 33 && raw[24] == 16 && raw[25] == 2);
    free(raw);
    med_image_free(a);
}

static void test_png_palette(ct_ctx *ctx)
{
    med_image *a = NULL, *b = NULL;
    uint8_t *ref = NULL;
    size_t n = 0;
    char out[4400];
    snprintf(out, sizeof out, "%s", tmp_path("pal.png"));
    const char *in = tu_sample("images/cel_pirates_palette_1920x1080.png");
    med_info info;
    CHECK_ST(med_read_file(ctx, in, &a), CT_OK);
    if (a == NULL) {
        return;
    }
    med_get_info(a, &info);
    CHECK(info.png_palette == 1 && info.channels == 4 && info.depth == 8);
    /* Visible pixels equal ImageMagick's own expansion of the palette. */
    char cmd[13000];
    snprintf(cmd, sizeof cmd, "/usr/bin/convert '%s' -depth 8 rgba:'%s'", in,
             tmp_path("pal.rgba"));
    CHECK(run(cmd) == 0);
    ref = slurp(tmp_path("pal.rgba"), &n);
    CHECK(ref != NULL && n == pix_bytes(a) && memcmp(ref, med_pixels(a), n) == 0);
    CHECK_ST(med_write_file(ctx, a, out, NULL), CT_OK);
    uint8_t *raw = slurp(out, &n);
    CHECK(raw != NULL && n > 33 && raw[24] == 8 && raw[25] == 6); /* 8-bit RGBA */
    free(raw);
    CHECK_ST(med_read_file(ctx, out, &b), CT_OK);
    if (b != NULL) {
        CHECK(same_pixels(a, b));
    }
    free(ref);
    med_image_free(a);
    med_image_free(b);
}

static int count_jfif(const uint8_t *d, size_t n)
{
    int k = 0;
    for (size_t i = 0; i + 9 < n; i++) {
        if (d[i] == 0xff && d[i + 1] == 0xe0 && memcmp(d + i + 4, "JFIF", 5) == 0) {
            k++;
        }
    }
    return k;
}

static void test_jpeg(ct_ctx *ctx)
{
    med_image *a = NULL, *b = NULL, *c = NULL;
    med_info ia, ib;
    const char *out = tmp_path("dune.jpg");
    size_t n = 0;

    CHECK_ST(med_read_file(ctx, tu_sample("images/bg_dune_q90_420_icc_1920x1080.jpg"), &a),
             CT_OK);
    if (a == NULL) {
        return;
    }
    med_get_info(a, &ia);
    CHECK(ia.kind == MED_KIND_JPEG && ia.width == 1920 && ia.height == 1080 && ia.channels == 3);
    CHECK(ia.jpeg_quality == 90);
    CHECK(ia.jpeg_progressive == 0 && ia.jpeg_components == 3);
    CHECK(ia.jpeg_h[0] == 2 && ia.jpeg_v[0] == 2 && ia.jpeg_h[1] == 1 && ia.jpeg_v[1] == 1 &&
          ia.jpeg_h[2] == 1 && ia.jpeg_v[2] == 1);
    CHECK(count_meta(a, 0xE2) == 1 && count_meta(a, 0xFE) == 1);
    CHECK(count_meta(a, 0xE0) == 0); /* JFIF is rewritten by libjpeg, not copied */
    CHECK_ST(med_write_file(ctx, a, out, NULL), CT_OK);
    CHECK_ST(med_read_file(ctx, out, &b), CT_OK);
    if (b != NULL) {
        med_get_info(b, &ib);
        CHECK(ib.width == ia.width && ib.height == ia.height && ib.channels == 3);
        CHECK(ib.jpeg_quality == 90);
        CHECK(memcmp(ia.jpeg_h, ib.jpeg_h, sizeof ia.jpeg_h) == 0 &&
              memcmp(ia.jpeg_v, ib.jpeg_v, sizeof ia.jpeg_v) == 0);
        CHECK(ib.jpeg_progressive == 0);
        CHECK(same_meta(a, b));
        double m = mse8(a, b);
        CHECK(m < 4.0); /* re-encoding at the same tables loses little */
        printf("  dune re-encode MSE %.3f\n", m);
    }
    uint8_t *raw = slurp(out, &n);
    CHECK(raw != NULL && count_jfif(raw, n) == 1);
    free(raw);

    /* Explicit quality wins over the estimate. */
    med_write_opts o = {.jpeg_quality = 50};
    CHECK_ST(med_write_file(ctx, a, tmp_path("dune50.jpeg"), &o), CT_OK);
    CHECK_ST(med_read_file(ctx, tmp_path("dune50.jpeg"), &c), CT_OK);
    if (c != NULL) {
        med_get_info(c, &ib);
        CHECK(ib.jpeg_quality == 50);
    }
    o.jpeg_quality = 101;
    CHECK_ST(med_write_file(ctx, a, tmp_path("bad.jpg"), &o), CT_ERR_MISUSE);
    med_image_free(a);
    med_image_free(b);
    med_image_free(c);
}

/* MED_READ_YCC: the planes as stored, for every common sampling and sizes
 * that are not whole MCUs; rarer samplings read as RGB. */
static void test_jpeg_ycc(ct_ctx *ctx)
{
    static const struct {
        const char *sf;
        int h0, v0;
        int ycc;
    } cases[] = {{"2x2,1x1,1x1", 2, 2, 1}, {"2x1,1x1,1x1", 2, 1, 1}, {"1x1,1x1,1x1", 1, 1, 1},
                 {"1x2,1x1,1x1", 1, 2, 1}, {"4x1,1x1,1x1", 4, 1, 0}};
    char cmd[8192];
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[64], outj[64], outp[64];
        snprintf(name, sizeof name, "ycc%zu.jpg", k);
        snprintf(outj, sizeof outj, "ycc%zu_out.jpg", k);
        snprintf(outp, sizeof outp, "ycc%zu_out.png", k);
        char src[4400];
        snprintf(src, sizeof src, "%s", tmp_path(name));
        snprintf(cmd, sizeof cmd,
                 "convert -seed 7 -size 333x197 plasma:fractal -sampling-factor %s -quality 85 "
                 "'%s'",
                 cases[k].sf, src);
        CHECK(run(cmd) == 0);
        med_image *rgb = NULL, *y = NULL, *back = NULL, *twice = NULL, *cl = NULL;
        med_info iy, ib;
        CHECK_ST(med_read_file(ctx, src, &rgb), CT_OK);
        CHECK_ST(med_read_file_as(ctx, src, MED_READ_YCC, &y), CT_OK);
        if (rgb == NULL || y == NULL) {
            med_image_free(rgb);
            med_image_free(y);
            continue;
        }
        med_get_info(y, &iy);
        CHECK(iy.width == 333 && iy.height == 197);
        CHECK(iy.jpeg_h[0] == cases[k].h0 && iy.jpeg_v[0] == cases[k].v0);
        CHECK(iy.ycc == cases[k].ycc);
        CHECK(iy.channels == (cases[k].ycc ? 1u : 3u));
        if (!cases[k].ycc) {
            CHECK(same_pixels(rgb, y));
            med_image_free(rgb);
            med_image_free(y);
            continue;
        }
        /* Y is the luma of the RGB decode, up to that decode's rounding. */
        size_t n = (size_t)333 * 197;
        float *l = malloc(n * sizeof *l), *up = malloc(n * sizeof *up),
              *dn = malloc(n * sizeof *dn), *ly = malloc(n * sizeof *ly);
        CHECK(l != NULL && up != NULL && dn != NULL && ly != NULL);
        if (l != NULL && up != NULL && dn != NULL && ly != NULL) {
            CHECK_ST(med_luma(ctx, rgb, l, NULL, NULL, NULL), CT_OK);
            CHECK_ST(med_luma(ctx, y, ly, up, dn, NULL), CT_OK);
            double mad = 0;
            int rooms_ok = 1;
            for (size_t i = 0; i < n; i++) {
                mad += fabs((double)l[i] - ly[i]);
                rooms_ok &= up[i] >= 0 && dn[i] >= 0 && up[i] <= 255.0f - ly[i] + 0.01f &&
                            dn[i] <= ly[i] + 0.01f;
            }
            CHECK(mad / (double)n < 1.0);
            CHECK(rooms_ok);
        }
        free(l);
        free(up);
        free(dn);
        free(ly);
        /* Unchanged planes written again: the same picture as an RGB
         * re-encode would give, the same sampling. */
        CHECK_ST(med_write_file(ctx, y, tmp_path(outj), NULL), CT_OK);
        CHECK_ST(med_read_file(ctx, tmp_path(outj), &back), CT_OK);
        if (back != NULL) {
            med_get_info(back, &ib);
            CHECK(ib.jpeg_h[0] == cases[k].h0 && ib.jpeg_v[0] == cases[k].v0 &&
                  ib.jpeg_h[1] == 1 && ib.jpeg_v[1] == 1 && ib.channels == 3);
            CHECK(mse8(rgb, back) < 4.0);
        }
        /* A change of Y arrives as that change. */
        float *d = malloc(n * sizeof *d);
        if (d != NULL) {
            for (size_t i = 0; i < n; i++) {
                d[i] = 3.0f;
            }
            CHECK_ST(med_add_luma(ctx, y, d), CT_OK);
            CHECK_ST(med_write_file(ctx, y, tmp_path(outj), NULL), CT_OK);
            CHECK_ST(med_read_file_as(ctx, tmp_path(outj), MED_READ_YCC, &twice), CT_OK);
            if (twice != NULL) {
                const uint8_t *a = med_pixels(y), *b = med_pixels(twice);
                double mean = 0;
                for (size_t i = 0; i < n; i++) {
                    mean += (double)b[i] - a[i];
                }
                CHECK(fabs(mean / (double)n) < 0.3);
            }
            free(d);
        }
        /* Planes are only for JPEG; a clone carries them. */
        CHECK_ST(med_write_file(ctx, y, tmp_path(outp), NULL), CT_ERR_MISUSE);
        CHECK_ST(med_image_clone(ctx, y, &cl), CT_OK);
        if (cl != NULL) {
            size_t na = 0, nb = 0;
            CHECK_ST(med_write_file(ctx, cl, tmp_path("ycc_clone.jpg"), NULL), CT_OK);
            uint8_t *ra = slurp(tmp_path(outj), &na), *rb = slurp(tmp_path("ycc_clone.jpg"), &nb);
            CHECK(ra != NULL && rb != NULL && na == nb && memcmp(ra, rb, na) == 0);
            free(ra);
            free(rb);
        }
        med_image_free(rgb);
        med_image_free(y);
        med_image_free(back);
        med_image_free(twice);
        med_image_free(cl);
    }
    /* Saturated colour leaves no room: pure red cannot get brighter. */
    med_image *red = NULL;
    snprintf(cmd, sizeof cmd, "convert -size 64x48 xc:'#ff0000' -quality 95 '%s'",
             tmp_path("red.jpg"));
    CHECK(run(cmd) == 0);
    CHECK_ST(med_read_file_as(ctx, tmp_path("red.jpg"), MED_READ_YCC, &red), CT_OK);
    if (red != NULL) {
        float l[64 * 48], up[64 * 48], dn[64 * 48];
        CHECK_ST(med_luma(ctx, red, l, up, dn, NULL), CT_OK);
        CHECK(up[1000] < 2.0f && dn[1000] < 2.0f && l[1000] > 70.0f && l[1000] < 84.0f);
    }
    med_image_free(red);
}

static void test_jpeg_gray_progressive(ct_ctx *ctx)
{
    med_image *a = NULL, *b = NULL;
    med_info ia, ib;
    const char *out = tmp_path("wood.jpg");
    CHECK_ST(med_read_file(ctx,
                           tu_sample("images/sketch_woodpecker_gray_progressive_1920x1080.jpg"),
                           &a),
             CT_OK);
    if (a == NULL) {
        return;
    }
    med_get_info(a, &ia);
    CHECK(ia.channels == 1 && ia.jpeg_components == 1 && ia.jpeg_progressive == 1);
    CHECK(ia.jpeg_quality == 92);
    CHECK_ST(med_write_file(ctx, a, out, NULL), CT_OK);
    CHECK_ST(med_read_file(ctx, out, &b), CT_OK);
    if (b != NULL) {
        med_get_info(b, &ib);
        CHECK(ib.channels == 1 && ib.jpeg_progressive == 1 && ib.jpeg_quality == 92);
        CHECK(ib.width == 1920 && ib.height == 1080);
        CHECK(mse8(a, b) < 4.0);
    }
    med_image_free(a);
    med_image_free(b);
}

/* MED_READ_COEF: the file's coefficients kept and written again. Unchanged,
 * the output decodes to the very same pixels (every component); a change
 * of luma arrives as the change med_realize_luma reports; the pixels made
 * from the coefficients match libjpeg's own decode to a level; the result
 * does not depend on the thread count. */
static void test_jpeg_coef(ct_ctx *ctx)
{
    static const struct {
        const char *sf; /* NULL: a sample file */
        int quality;
        const char *sample;
    } cases[] = {{"2x2,1x1,1x1", 85, NULL},
                 {"1x1,1x1,1x1", 60, NULL},
                 {"2x1,1x1,1x1", 95, NULL},
                 {NULL, 0, "images/sketch_woodpecker_gray_progressive_1920x1080.jpg"}};
    char cmd[8192];
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char src[4400], out[4400], out4[4400];
        if (cases[k].sf != NULL) {
            char name[64];
            snprintf(name, sizeof name, "coef%zu.jpg", k);
            snprintf(src, sizeof src, "%s", tmp_path(name));
            snprintf(cmd, sizeof cmd,
                     "convert -seed 11 -size 333x197 plasma:fractal -sampling-factor %s "
                     "-quality %d '%s'",
                     cases[k].sf, cases[k].quality, src);
            CHECK(run(cmd) == 0);
        } else {
            snprintf(src, sizeof src, "%s", tu_sample(cases[k].sample));
        }
        snprintf(out, sizeof out, "%s", tmp_path("coef_out.jpg"));
        snprintf(out4, sizeof out4, "%s", tmp_path("coef_out4.jpg"));
        med_image *ref = NULL, *c = NULL, *c4 = NULL, *back = NULL, *rgb0 = NULL, *rgb1 = NULL,
                  *cl = NULL;
        med_info ir, ic, ib;
        CHECK_ST(med_read_file_as(ctx, src, MED_READ_YCC, &ref), CT_OK);
        CHECK_ST(med_read_file_as(ctx, src, MED_READ_COEF, &c), CT_OK);
        CHECK_ST(med_read_file_as(ctx, src, MED_READ_COEF, &c4), CT_OK);
        if (ref == NULL || c == NULL || c4 == NULL) {
            goto next;
        }
        med_get_info(ref, &ir);
        med_get_info(c, &ic);
        CHECK(ic.width == ir.width && ic.height == ir.height && ic.ycc == ir.ycc &&
              ic.channels == 1 && ic.jpeg_progressive == ir.jpeg_progressive);
        const size_t n = (size_t)ic.width * ic.height;
        /* Pixels from the coefficients against libjpeg's decode. */
        const uint8_t *pr = med_pixels(ref), *pc = med_pixels(c);
        int maxd = 0;
        size_t ndiff = 0;
        for (size_t i = 0; i < n; i++) {
            int dd = abs((int)pr[i] - (int)pc[i]);
            maxd = dd > maxd ? dd : maxd;
            ndiff += dd != 0;
        }
        printf("  coef %zu: Y against libjpeg: max %d, %.2f%% differ\n", k, maxd,
               100.0 * (double)ndiff / (double)n);
        CHECK(maxd <= 1 && ndiff * 20 < n);
        float *d = malloc(n * sizeof *d), *d4 = malloc(n * sizeof *d4);
        CHECK(d != NULL && d4 != NULL);
        if (d == NULL || d4 == NULL) {
            free(d);
            free(d4);
            goto next;
        }
        /* No change: the same file content, to the pixel, in every
         * component (RGB decodes of both compared). */
        memset(d, 0, n * sizeof *d);
        CHECK_ST(med_realize_luma(ctx, c, d, false, 2), CT_OK);
        int zero = 1;
        for (size_t i = 0; i < n; i++) {
            zero &= d[i] == 0.0f;
        }
        CHECK(zero);
        CHECK_ST(med_write_file(ctx, c, out, NULL), CT_OK);
        CHECK_ST(med_read_file(ctx, src, &rgb0), CT_OK);
        CHECK_ST(med_read_file(ctx, out, &rgb1), CT_OK);
        CHECK(rgb0 != NULL && rgb1 != NULL && same_pixels(rgb0, rgb1));
        if (rgb1 != NULL) {
            med_get_info(rgb1, &ib);
            CHECK(ib.jpeg_progressive == ir.jpeg_progressive &&
                  ib.jpeg_quality == ir.jpeg_quality && ib.jpeg_h[0] == ir.jpeg_h[0] &&
                  ib.jpeg_v[0] == ir.jpeg_v[0]);
        }
        /* A change: a smooth wave plus a fine +-0.3 checker. What comes
         * back decoded (libjpeg's decoder) is what med_realize_luma says it
         * wrote (its own decode, whole levels; the two decoders differ by
         * a level on a few pixels), and most of the wave. */
        for (uint32_t y = 0; y < ic.height; y++) {
            for (uint32_t x = 0; x < ic.width; x++) {
                d[(size_t)y * ic.width + x] =
                    (float)(2.5 * sin(2 * M_PI * x / 37.0) * cos(2 * M_PI * y / 23.0) +
                            (((x + y) & 1) ? 0.3 : -0.3));
            }
        }
        memcpy(d4, d, n * sizeof *d);
        CHECK_ST(med_realize_luma(ctx, c, d, false, 1), CT_OK);
        CHECK_ST(med_realize_luma(ctx, c4, d4, false, 4), CT_OK);
        CHECK(memcmp(d, d4, n * sizeof *d) == 0);
        CHECK_ST(med_write_file(ctx, c, out, NULL), CT_OK);
        CHECK_ST(med_write_file(ctx, c4, out4, NULL), CT_OK);
        size_t na = 0, nb = 0;
        uint8_t *fa = slurp(out, &na), *fb = slurp(out4, &nb);
        CHECK(fa != NULL && fb != NULL && na == nb && memcmp(fa, fb, na) == 0);
        free(fa);
        free(fb);
        CHECK_ST(med_read_file_as(ctx, out, MED_READ_YCC, &back), CT_OK);
        if (back != NULL) {
            const uint8_t *pb = med_pixels(back);
            double e2 = 0, emax = 0, sw = 0, swd = 0;
            for (uint32_t y = 0; y < ic.height; y++) {
                for (uint32_t x = 0; x < ic.width; x++) {
                    const size_t i = (size_t)y * ic.width + x;
                    const double got = (double)pb[i] - pr[i];
                    /* Not where the decode clips. */
                    if (pr[i] < 4 || pr[i] > 251) {
                        continue;
                    }
                    const double e = fabs(got - d[i]);
                    e2 += e * e;
                    emax = e > emax ? e : emax;
                    const double wv = 2.5 * sin(2 * M_PI * x / 37.0) * cos(2 * M_PI * y / 23.0);
                    sw += wv * wv;
                    swd += wv * got;
                }
            }
            printf("  coef %zu: decoded change against reported: rms %.3f, max %.2f; "
                   "wave kept %.3f\n",
                   k, sqrt(e2 / (double)n), emax, swd / sw);
            CHECK(sqrt(e2 / (double)n) < 0.25 && emax <= 2.0);
            CHECK(swd / sw > 0.8 && swd / sw < 1.1);
        }
        free(d);
        free(d4);
        /* Coefficients go back only into a JPEG with their own tables. */
        CHECK_ST(med_write_file(ctx, c, tmp_path("coef.png"), NULL), CT_ERR_MISUSE);
        med_write_opts wo = {.jpeg_quality = 80};
        CHECK_ST(med_write_file(ctx, c, out, &wo), CT_ERR_MISUSE);
        CHECK_ST(med_image_clone(ctx, c, &cl), CT_ERR_MISUSE);
    next:
        med_image_free(ref);
        med_image_free(c);
        med_image_free(c4);
        med_image_free(back);
        med_image_free(rgb0);
        med_image_free(rgb1);
        med_image_free(cl);
    }
}

/* EXIF and XMP (APP1) have no sample: splice them into a copy of dune. */
static void test_jpeg_app1(ct_ctx *ctx)
{
    size_t n = 0;
    uint8_t *src = slurp(tu_sample("images/bg_dune_q90_420_icc_1920x1080.jpg"), &n);
    static const uint8_t exif[] = {0xff, 0xe1, 0x00, 0x10, 'E', 'x', 'i', 'f', 0, 0,
                                   'I',  'I',  42,   0,    8,   0,   0,   0};
    static const char xmp_ns[] = "http://ns.adobe.com/xap/1.0/";
    uint8_t xmp[128];
    const char *body = "<x:xmpmeta xmlns:x='adobe:ns:meta/'/>";
    size_t xl = sizeof xmp_ns + strlen(body);
    med_image *a = NULL, *b = NULL;

    CHECK(src != NULL);
    if (src == NULL) {
        return;
    }
    xmp[0] = 0xff;
    xmp[1] = 0xe1;
    xmp[2] = (uint8_t)((xl + 2) >> 8);
    xmp[3] = (uint8_t)(xl + 2);
    memcpy(xmp + 4, xmp_ns, sizeof xmp_ns);
    memcpy(xmp + 4 + sizeof xmp_ns, body, strlen(body));
    uint8_t *buf = malloc(n + sizeof exif + xl + 4);
    memcpy(buf, src, 2);
    memcpy(buf + 2, exif, sizeof exif);
    memcpy(buf + 2 + sizeof exif, xmp, xl + 4);
    memcpy(buf + 2 + sizeof exif + xl + 4, src + 2, n - 2);
    CHECK_ST(med_read_mem(ctx, buf, n + sizeof exif + xl + 4, "exif.jpg", &a), CT_OK);
    if (a != NULL) {
        CHECK(count_meta(a, 0xE1) == 2);
        CHECK_ST(med_write_file(ctx, a, tmp_path("exif.jpg"), NULL), CT_OK);
        CHECK_ST(med_read_file(ctx, tmp_path("exif.jpg"), &b), CT_OK);
        if (b != NULL) {
            CHECK(same_meta(a, b));
        }
    }
    free(buf);
    free(src);
    med_image_free(a);
    med_image_free(b);
}

static void test_cross(ct_ctx *ctx)
{
    med_image *a = NULL, *b = NULL, *c = NULL, *d = NULL;

    /* JPEG -> PNG: same pixels; the ICC profile becomes iCCP. */
    CHECK_ST(med_read_file(ctx, tu_sample("images/bg_dune_q90_420_icc_1920x1080.jpg"), &a),
             CT_OK);
    if (a != NULL) {
        CHECK_ST(med_write_file(ctx, a, tmp_path("dune.PNG"), NULL), CT_OK);
        CHECK_ST(med_read_file(ctx, tmp_path("dune.PNG"), &b), CT_OK);
        if (b != NULL) {
            CHECK(same_pixels(a, b));
            CHECK(count_meta(b, MED_ID('i', 'C', 'C', 'P')) == 1);
        }
    }
    /* RGBA PNG -> JPEG: alpha flattened onto white. */
    CHECK_ST(med_read_file(ctx, tu_sample("images/cel_kid_rgba_1920x1080.png"), &c), CT_OK);
    if (c != NULL) {
        CHECK_ST(med_write_file(ctx, c, tmp_path("kid.jpg"), NULL), CT_OK);
        CHECK_ST(med_read_file(ctx, tmp_path("kid.jpg"), &d), CT_OK);
        if (d != NULL) {
            const uint8_t *p = med_pixels(d);
            CHECK(med_channels(d) == 3 && med_width(d) == 1920);
            CHECK(p[0] >= 250 && p[1] >= 250 && p[2] >= 250); /* transparent corner */
            med_info info;
            med_get_info(d, &info);
            CHECK(info.jpeg_quality == 75);
        }
    }
    med_image_free(a);
    med_image_free(b);
    med_image_free(c);
    med_image_free(d);
    a = b = c = d = NULL;

    /* 16-bit -> JPEG, gray+alpha -> JPEG. */
    CHECK_ST(med_read_file(ctx, tu_sample("images/bg_garden_16bit_1920x1080.png"), &a), CT_OK);
    if (a != NULL) {
        CHECK_ST(med_write_file(ctx, a, tmp_path("garden.jpg"), NULL), CT_OK);
        CHECK_ST(med_read_file(ctx, tmp_path("garden.jpg"), &b), CT_OK);
        if (b != NULL) {
            const uint16_t *p = med_pixels(a);
            const uint8_t *q = med_pixels(b);
            double s = 0;
            for (size_t i = 0; i < 30000; i++) {
                double e = p[i] / 257.0 - q[i];
                s += e * e;
            }
            CHECK(s / 30000 < 10.0);
        }
    }
    CHECK_ST(med_read_file(ctx, tu_sample("images/lineart_car2_graya_1920x1080.png"), &c), CT_OK);
    if (c != NULL) {
        CHECK_ST(med_write_file(ctx, c, tmp_path("car.jpg"), NULL), CT_OK);
        CHECK_ST(med_read_file(ctx, tmp_path("car.jpg"), &d), CT_OK);
        CHECK(d != NULL && med_channels(d) == 1);
    }
    CHECK_ST(med_write_file(ctx, c != NULL ? c : a, tmp_path("x.webp"), NULL), CT_ERR_MISUSE);
    med_image_free(a);
    med_image_free(b);
    med_image_free(c);
    med_image_free(d);
}

static void test_other_formats(ct_ctx *ctx)
{
    med_image *ref = NULL;
    const char *png = tu_sample("images/cel_headmo_rgba_640x480.png");
    struct {
        const char *file;
        const char *pre; /* command, then the input */
        const char *mid; /* then this, glued to the output name */
        int exact;       /* lossless: pixels must match the PNG */
        unsigned ch;
    } cases[] = {
        {"h.webp", "cwebp -quiet -lossless -exact", "-o ", 1, 4},
        {"hl.webp", "cwebp -quiet -q 80", "-o ", 0, 4},
        {"h.bmp", "/usr/bin/convert", "BMP3:", 0, 3},
        {"h.tif", "/usr/bin/convert", "-compress lzw ", 1, 4},
        {"h.gif", "/usr/bin/convert", "", 0, 4},
        {"g.tif", "/usr/bin/convert", "-alpha off -colorspace gray ", 0, 1},
    };
    CHECK_ST(med_read_file(ctx, png, &ref), CT_OK);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[13000], out[4400];
        med_image *img = NULL, *img2 = NULL;
        snprintf(out, sizeof out, "%s", tmp_path(cases[i].file));
        snprintf(cmd, sizeof cmd, "%s '%s' %s'%s'", cases[i].pre, png, cases[i].mid, out);
        if (run(cmd) != 0) {
            CHECK(0);
            continue;
        }
        CHECK_ST(med_read_file(ctx, out, &img), CT_OK);
        if (img == NULL) {
            fprintf(stderr, "  %s: %s\n", cases[i].file, ct_errmsg(ctx));
            continue;
        }
        CHECK(med_image_kind(img) == MED_KIND_OTHER);
        CHECK(med_width(img) == 640 && med_height(img) == 480 && med_depth(img) == 8);
        CHECK(med_channels(img) == cases[i].ch);
        if (cases[i].exact && ref != NULL) {
            CHECK(same_pixels(ref, img));
        }
        /* Same through memory; and it can be written out as PNG. */
        size_t n = 0;
        uint8_t *raw = slurp(out, &n);
        CHECK_ST(med_read_mem(ctx, raw, n, cases[i].file, &img2), CT_OK);
        CHECK(img2 != NULL && same_pixels(img, img2));
        CHECK_ST(med_write_file(ctx, img, tmp_path("from_other.png"), NULL), CT_OK);
        free(raw);
        med_image_free(img);
        med_image_free(img2);
    }
    med_image_free(ref);
}

static void test_errors(ct_ctx *ctx)
{
    med_image *img = NULL;
    FILE *f;

    CHECK_ST(med_read_file(ctx, tmp_path("does-not-exist.png"), &img), CT_ERR_IO);
    CHECK(strstr(ct_errmsg(ctx), "does-not-exist.png") != NULL &&
          strstr(ct_errmsg(ctx), "No such file") != NULL);
    CHECK_ST(med_read_file(ctx, g_tmp, &img), CT_ERR_IO); /* a directory */
    f = fopen(tmp_path("notes.png"), "w");
    if (f != NULL) {
        fputs("this is not an image at all, just some text\n", f);
        fclose(f);
    }
    CHECK_ST(med_read_file(ctx, tmp_path("notes.png"), &img), CT_ERR_FORMAT);
    CHECK(strstr(ct_errmsg(ctx), "notes.png: not an image celtrace can read") != NULL);
    CHECK_ST(med_read_mem(ctx, (const uint8_t *)"", 0, "empty", &img), CT_ERR_FORMAT);
    /* A video is not a still image. */
    CHECK_ST(med_read_file(ctx, tu_sample("video/clip_wolf_backdrop_1280x720_vp9_opus.webm"),
                           &img),
             CT_ERR_FORMAT);
    /* CMYK JPEG: a clear message. */
    char cmd[13000];
    snprintf(cmd, sizeof cmd, "/usr/bin/convert '%s' -resize 64x64 -colorspace CMYK '%s'",
             tu_sample("images/cel_headmo_rgba_640x480.png"), tmp_path("cmyk.jpg"));
    CHECK(run(cmd) == 0);
    CHECK_ST(med_read_file(ctx, tmp_path("cmyk.jpg"), &img), CT_ERR_FORMAT);
    CHECK(strstr(ct_errmsg(ctx), "CMYK JPEG is not supported") != NULL);
    CHECK(strstr(ct_errmsg(ctx), "cmyk.jpg") != NULL);
    CHECK(img == NULL);
    /* Unwritable output. */
    med_image *ok = NULL;
    CHECK_ST(med_image_new(ctx, 4, 4, 3, 8, &ok), CT_OK);
    if (ok != NULL) {
        CHECK_ST(med_write_file(ctx, ok, tmp_path("no/such/dir/x.png"), NULL), CT_ERR_IO);
        CHECK_ST(med_write_file(ctx, ok, tmp_path("no/such/dir/x.jpg"), NULL), CT_ERR_IO);
    }
    med_image_free(ok);
}

static void test_limit(ct_ctx *ctx)
{
    uint8_t png[8 + 25 + 12];
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    med_image *img = NULL;

    memcpy(png, sig, 8);
    put32(png + 8, 13);
    memcpy(png + 12, "IHDR", 4);
    put32(png + 16, 100000);
    put32(png + 20, 100000);
    png[24] = 8;
    png[25] = 6;
    png[26] = png[27] = png[28] = 0;
    put32(png + 29, crc32_png(png + 12, 17));
    put32(png + 33, 0);
    memcpy(png + 37, "IEND", 4);
    put32(png + 41, crc32_png(png + 37, 4));
    /* The next allocation would fail: LIMIT (not NOMEM) proves the
     * check comes before any allocation. */
    ctx->fail_alloc_after = 1;
    CHECK_ST(med_read_mem(ctx, png, sizeof png, "huge.png", &img), CT_ERR_LIMIT);
    ctx->fail_alloc_after = 0;
    CHECK(strstr(ct_errmsg(ctx), "huge.png: 100000x100000 is too large (limit 300000000 pixels)") !=
          NULL);
    CHECK(img == NULL);

    /* A real image over a lowered limit. */
    const uint64_t saved = ctx->max_pixels;
    ctx->max_pixels = 640 * 480 - 1;
    CHECK_ST(med_read_file(ctx, tu_sample("images/cel_headmo_rgba_640x480.png"), &img),
             CT_ERR_LIMIT);
    /* libav decoders refuse oversized pictures themselves (max_pixels)
     * without telling why, so this one may read as FORMAT. */
    ct_status st = med_read_file(ctx, tmp_path("h.webp"), &img);
    CHECK(st == CT_ERR_LIMIT || st == CT_ERR_FORMAT);
    CHECK_ST(med_read_file(ctx, tmp_path("kid.jpg"), &img), CT_ERR_LIMIT);
    ctx->max_pixels = saved;
    CHECK(img == NULL);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* Reads in turn as pixels, as Y'CbCr planes and as coefficients: every
 * decoder path sees the damage. */
static unsigned hostile_flags(size_t i)
{
    return i % 3 == 1 ? MED_READ_YCC : (i % 3 == 2 ? MED_READ_COEF : 0u);
}

static void test_hostile(ct_ctx *ctx)
{
    const char *files[] = {
        tu_sample("images/cel_headmo_rgba_640x480.png"),
        tu_sample("images/bg_dune_q90_420_icc_1920x1080.jpg"),
        tu_sample("images/sketch_woodpecker_gray_progressive_1920x1080.jpg"),
        tu_sample("images/cel_pirates_palette_1920x1080.png"),
    };
    const char *others[] = {"h.webp", "hl.webp", "h.gif", "h.tif", "h.bmp"};
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int flips_ok = 0, flips_bad = 0;
    double t0 = now_ms();

    for (size_t f = 0; f < sizeof files / sizeof files[0] + sizeof others / sizeof others[0];
         f++) {
        const bool strict = f < sizeof files / sizeof files[0];
        const char *path = strict ? files[f] : tmp_path(others[f - sizeof files / sizeof files[0]]);
        size_t n = 0;
        uint8_t *data = slurp(path, &n);
        CHECK(data != NULL && n > 100);
        if (data == NULL || n <= 100) {
            free(data);
            continue;
        }
        const size_t cuts[] = {0, 1, 2, 3, 8, 16, 33, 64, n / 8, n / 4, n / 2, n - n / 10, n - 2,
                               n - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            med_image *img = NULL;
            /* every other read as Y'CbCr planes: the raw decoder too */
            ct_status st = med_read_mem_as(ctx, data, cuts[i], "cut", hostile_flags(i), &img);
            if (strict) {
                /* PNG and JPEG: a truncated file always fails. */
                CHECK_ST(st, CT_ERR_FORMAT);
            } else {
                /* libav decoders may still produce a picture from part of
                 * some formats; they must not crash or misreport. */
                CHECK(st == CT_ERR_FORMAT || st == CT_OK);
            }
            CHECK((st == CT_OK) == (img != NULL));
            CHECK(strchr(ct_errmsg(ctx), '\n') == NULL);
            med_image_free(img);
        }
        /* Random byte flips (a smaller image keeps this quick). */
        const int rounds = n < 300000 ? 60 : 12;
        uint8_t *copy = malloc(n);
        for (int r = 0; r < rounds; r++) {
            med_image *img = NULL;
            memcpy(copy, data, n);
            const int k = 1 + (int)(rng_next(&seed) % 8);
            for (int j = 0; j < k; j++) {
                /* Mostly in the headers, where parsers are most exposed. */
                size_t span = (rng_next(&seed) & 1) ? n : (n < 2048 ? n : 2048);
                copy[rng_next(&seed) % span] ^= (uint8_t)(1 + rng_next(&seed) % 255);
            }
            ct_status st =
                med_read_mem_as(ctx, copy, n, "flip", hostile_flags((size_t)r), &img);
            /* LIMIT is right when a flip enlarges a JPEG SOF. */
            CHECK(st == CT_OK || st == CT_ERR_FORMAT || st == CT_ERR_LIMIT);
            CHECK((st == CT_OK) == (img != NULL));
            if (st == CT_OK) {
                flips_ok++;
            } else {
                flips_bad++;
            }
            med_image_free(img);
        }
        free(copy);
        free(data);
    }
    printf("  hostile: %d flipped files still decoded, %d refused (%.0f ms)\n", flips_ok,
           flips_bad, now_ms() - t0);
}

static int feq(float a, float b)
{
    return fabsf(a - b) < 1e-3f;
}

static void test_luma(ct_ctx *ctx)
{
    med_image *img = NULL;
    float y[4], up[4], down[4], w[4];

    /* 8-bit RGBA, 2x2. */
    CHECK_ST(med_image_new(ctx, 2, 2, 4, 8, &img), CT_OK);
    if (img != NULL) {
        static const uint8_t px[16] = {100, 150, 200, 255, 0,   0,   0,  0,
                                       255, 255, 255, 128, 250, 10,  3,  64};
        memcpy(med_pixels_mut(img), px, sizeof px);
        CHECK_ST(med_luma(ctx, img, y, up, down, w), CT_OK);
        CHECK(feq(y[0], 0.299f * 100 + 0.587f * 150 + 0.114f * 200)); /* 140.75 */
        CHECK(feq(y[0], 140.75f));
        CHECK(feq(up[0], 55) && feq(down[0], 100) && feq(w[0], 1.0f));
        CHECK(feq(y[1], 0) && feq(up[1], 255) && feq(down[1], 0) && feq(w[1], 0));
        CHECK(feq(y[2], 255) && feq(up[2], 0) && feq(down[2], 255) && feq(w[2], 128 / 255.0f));
        CHECK(feq(y[3], 0.299f * 250 + 0.587f * 10 + 0.114f * 3) && feq(up[3], 5) &&
              feq(down[3], 3) && feq(w[3], 64 / 255.0f));
        CHECK_ST(med_luma(ctx, img, y, NULL, NULL, NULL), CT_OK);
        const float d[4] = {3.0f, -2.0f, 1.4f, 7.0f};
        CHECK_ST(med_add_luma(ctx, img, d), CT_OK);
        static const uint8_t want[16] = {103, 153, 203, 255, 0,   0,  0,  0,
                                         255, 255, 255, 128, 255, 17, 10, 64};
        CHECK(memcmp(med_pixels(img), want, sizeof want) == 0);
        const float d2[4] = {-2.6f, 0.5f, -300.0f, NAN};
        CHECK_ST(med_add_luma(ctx, img, d2), CT_OK);
        static const uint8_t want2[16] = {100, 150, 200, 255, 1,  1,  1,  0,
                                          0,   0,   0,   128, 255, 17, 10, 64};
        CHECK(memcmp(med_pixels(img), want2, sizeof want2) == 0);
    }
    med_image_free(img);
    img = NULL;

    /* 8-bit gray+alpha. */
    CHECK_ST(med_image_new(ctx, 2, 1, 2, 8, &img), CT_OK);
    if (img != NULL) {
        uint8_t *p = med_pixels_mut(img);
        p[0] = 40;
        p[1] = 51;
        p[2] = 254;
        p[3] = 255;
        CHECK_ST(med_luma(ctx, img, y, up, down, w), CT_OK);
        CHECK(feq(y[0], 40) && feq(up[0], 215) && feq(down[0], 40) && feq(w[0], 0.2f));
        CHECK(feq(y[1], 254) && feq(up[1], 1) && feq(down[1], 254) && feq(w[1], 1));
        const float d[2] = {-41, 5};
        CHECK_ST(med_add_luma(ctx, img, d), CT_OK);
        CHECK(p[0] == 0 && p[1] == 51 && p[2] == 255 && p[3] == 255);
    }
    med_image_free(img);
    img = NULL;

    /* 8-bit gray, no alpha. */
    CHECK_ST(med_image_new(ctx, 1, 1, 1, 8, &img), CT_OK);
    if (img != NULL) {
        ((uint8_t *)med_pixels_mut(img))[0] = 77;
        CHECK_ST(med_luma(ctx, img, y, up, down, w), CT_OK);
        CHECK(feq(y[0], 77) && feq(up[0], 178) && feq(down[0], 77) && feq(w[0], 1));
    }
    med_image_free(img);
    img = NULL;

    /* 16-bit RGB and RGBA. */
    CHECK_ST(med_image_new(ctx, 2, 1, 3, 16, &img), CT_OK);
    if (img != NULL) {
        uint16_t *p = med_pixels_mut(img);
        const uint16_t px[6] = {25700, 38550, 51400, 65535, 65000, 100};
        memcpy(p, px, sizeof px);
        CHECK_ST(med_luma(ctx, img, y, up, down, w), CT_OK);
        CHECK(feq(y[0], 140.75f) && feq(up[0], 55) && feq(down[0], 100) && feq(w[0], 1));
        CHECK(feq(y[1], (0.299f * 65535 + 0.587f * 65000 + 0.114f * 100) / 257.0f));
        CHECK(feq(up[1], 0) && feq(down[1], 100 / 257.0f));
        const float d[2] = {1.0f, 0.5f};
        CHECK_ST(med_add_luma(ctx, img, d), CT_OK);
        CHECK(p[0] == 25957 && p[1] == 38807 && p[2] == 51657);
        /* round(0.5 * 257) = 129 (128.5 rounds away from zero) */
        CHECK(p[3] == 65535 && p[4] == 65129 && p[5] == 229);
        const float d2[2] = {-200.0f, -1.0f};
        CHECK_ST(med_add_luma(ctx, img, d2), CT_OK);
        CHECK(p[0] == 0 && p[1] == 0 && p[2] == 257);
        CHECK(p[3] == 65278 && p[4] == 64872 && p[5] == 0);
    }
    med_image_free(img);
    img = NULL;
    CHECK_ST(med_image_new(ctx, 1, 1, 4, 16, &img), CT_OK);
    if (img != NULL) {
        uint16_t *p = med_pixels_mut(img);
        p[0] = 1000;
        p[1] = 2000;
        p[2] = 3000;
        p[3] = 32768;
        CHECK_ST(med_luma(ctx, img, y, up, down, w), CT_OK);
        CHECK(feq(w[0], 32768 / 65535.0f));
        const float d[1] = {-10};
        CHECK_ST(med_add_luma(ctx, img, d), CT_OK);
        CHECK(p[0] == 0 && p[1] == 0 && p[2] == 430 && p[3] == 32768);
    }
    med_image_free(img);
    img = NULL;
    CHECK_ST(med_image_new(ctx, 1, 1, 5, 8, &img), CT_ERR_MISUSE);
    CHECK_ST(med_image_new(ctx, 0, 1, 3, 8, &img), CT_ERR_FORMAT);
}

/* The dither of a gray image against the plain scan it is defined as:
 * Floyd-Steinberg row by row in each of 4 row bands (each from zero
 * error), nearest level ties to even, the carried error bounded to one
 * level, every error sum formed in scan order. The library keeps rows in
 * flight and their error in registers; the pixels and the realised delta
 * must still be the same to the bit, on 1 thread and on 4. */
static void ref_dither_gray(uint8_t *pix, uint32_t w, uint32_t h, float *delta)
{
    float *ea = calloc((size_t)w + 2, sizeof *ea), *eb = calloc((size_t)w + 2, sizeof *eb);
    if (ea == NULL || eb == NULL) {
        CHECK(!"out of memory");
        free(ea);
        free(eb);
        return;
    }
    for (unsigned band = 0; band < 4; band++) {
        uint32_t r0 = (uint32_t)((uint64_t)h * band / 4), r1 = (uint32_t)((uint64_t)h * (band + 1) / 4);
        memset(ea, 0, ((size_t)w + 2) * sizeof *ea);
        memset(eb, 0, ((size_t)w + 2) * sizeof *eb);
        for (uint32_t y = r0; y < r1; y++) {
            float *cur = ea + 1, *next = eb + 1;
            for (uint32_t x = 0; x < w; x++) {
                size_t i = (size_t)y * w + x;
                float want = delta[i] + cur[x];
                float wc = want > 512.0f ? 512.0f : (want < -512.0f ? -512.0f : want);
                int q = (int)nearbyintf(wc);
                int nv = (int)pix[i] + q;
                nv = nv < 0 ? 0 : (nv > 255 ? 255 : nv);
                float got = (float)(nv - (int)pix[i]);
                pix[i] = (uint8_t)nv;
                delta[i] = got;
                float e = want - got;
                e = e > 1.0f ? 1.0f : (e < -1.0f ? -1.0f : e);
                cur[x + 1] += e * (7.0f / 16);
                next[(long)x - 1] += e * (3.0f / 16);
                next[x] += e * (5.0f / 16);
                next[x + 1] += e * (1.0f / 16);
            }
            float *t = ea;
            ea = eb;
            eb = t;
            memset(eb, 0, ((size_t)w + 2) * sizeof *eb);
        }
    }
    free(ea);
    free(eb);
}

static void test_dither_gray(ct_ctx *ctx)
{
    static const uint32_t dims[][2] = {{1, 1}, {2, 9}, {15, 9}, {16, 16}, {17, 33},
                                       {33, 17}, {300, 7}, {5, 300}, {641, 479}};
    uint32_t seed = 12345;
    for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++) {
        uint32_t w = dims[k][0], h = dims[k][1];
        size_t n = (size_t)w * h;
        med_image *a = NULL, *b = NULL;
        float *da = malloc(n * sizeof *da), *db = malloc(n * sizeof *db);
        float *dr = malloc(n * sizeof *dr);
        uint8_t *ref = malloc(n);
        CHECK_ST(med_image_new(ctx, w, h, 1, 8, &a), CT_OK);
        if (a == NULL || da == NULL || db == NULL || dr == NULL || ref == NULL) {
            CHECK(!"out of memory");
            goto next;
        }
        uint8_t *p = med_pixels_mut(a);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1664525u + 1013904223u;
            /* levels at and near both ends, so the clipping paths run */
            p[i] = (uint8_t)(i % 11 == 0 ? 0 : (i % 13 == 0 ? 255 : (seed >> 24)));
            seed = seed * 1664525u + 1013904223u;
            float d = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 3.0f;
            da[i] = db[i] = dr[i] = i % 29 == 0 ? d * 50.0f : d;
        }
        CHECK_ST(med_image_clone(ctx, a, &b), CT_OK);
        if (b == NULL) {
            goto next;
        }
        memcpy(ref, p, n);
        ref_dither_gray(ref, w, h, dr);
        CHECK_ST(med_realize_luma(ctx, a, da, false, 1), CT_OK);
        CHECK_ST(med_realize_luma(ctx, b, db, false, 4), CT_OK);
        CHECK(memcmp(med_pixels(a), ref, n) == 0);
        CHECK(memcmp(med_pixels(b), ref, n) == 0);
        CHECK(memcmp(da, dr, n * sizeof *da) == 0);
        CHECK(memcmp(db, dr, n * sizeof *db) == 0);
    next:
        med_image_free(a);
        med_image_free(b);
        free(da);
        free(db);
        free(dr);
        free(ref);
    }
}

/* med_luma_mt: the same planes on any number of threads. */
/* The planes are the same on 1 and 4 threads, and med_rooms_row gives
 * every row of the rooms planes to the bit (whole rows, and a run from an
 * odd column), for Y'CbCr planes, coefficients, RGBA, 16-bit RGB and
 * gray + alpha. */
static void test_luma_threads(ct_ctx *ctx)
{
    static const struct {
        const char *file;
        unsigned flags;
    } files[] = {{"images/bg_dune_q90_420_icc_1920x1080.jpg", MED_READ_YCC},
                 {"images/bg_dune_q90_420_icc_1920x1080.jpg", MED_READ_COEF},
                 {"images/cel_kid_rgba_1920x1080.png", 0},
                 {"images/bg_garden_16bit_1920x1080.png", 0},
                 {"images/lineart_car2_graya_1920x1080.png", 0}};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        med_image *img = NULL;
        CHECK_ST(med_read_file_as(ctx, tu_sample(files[k].file), files[k].flags, &img), CT_OK);
        if (img == NULL) {
            continue;
        }
        const uint32_t w = med_width(img), h = med_height(img);
        size_t n = (size_t)w * h;
        float *p1 = malloc(4 * n * sizeof *p1), *p4 = malloc(4 * n * sizeof *p4);
        float *ru = malloc(2 * (size_t)w * sizeof *ru);
        if (p1 != NULL && p4 != NULL && ru != NULL) {
            CHECK_ST(med_luma(ctx, img, p1, p1 + n, p1 + 2 * n, p1 + 3 * n), CT_OK);
            CHECK_ST(med_luma_mt(ctx, img, p4, p4 + n, p4 + 2 * n, p4 + 3 * n, 4), CT_OK);
            CHECK(memcmp(p1, p4, 4 * n * sizeof *p1) == 0);
            float *rd = ru + w;
            size_t bad = 0;
            for (uint32_t r = 0; r < h; r++) {
                med_rooms_row(img, r, 0, w, ru, rd);
                bad += memcmp(ru, p1 + n + (size_t)r * w, w * sizeof *ru) != 0 ||
                       memcmp(rd, p1 + 2 * n + (size_t)r * w, w * sizeof *rd) != 0;
            }
            CHECK(bad == 0);
            const uint32_t r = h / 2, x0 = 3, m = w - 8;
            med_rooms_row(img, r, x0, m, ru, rd);
            CHECK(memcmp(ru, p1 + n + (size_t)r * w + x0, m * sizeof *ru) == 0);
            CHECK(memcmp(rd, p1 + 2 * n + (size_t)r * w + x0, m * sizeof *rd) == 0);
        } else {
            CHECK(!"out of memory");
        }
        free(p1);
        free(p4);
        free(ru);
        med_image_free(img);
    }
}

/* ct_task: on a thread of its own, or (threads 1) inside the join; either
 * way the function has run exactly once when ct_task_join returns, and a
 * second join, or a join of a task never started, does nothing. */
typedef struct task_probe {
    int runs;
    pthread_t who;
} task_probe;

static void task_fn(void *arg)
{
    task_probe *p = arg;
    p->runs++;
    p->who = pthread_self();
}

static void test_task(void)
{
    for (unsigned threads = 0; threads <= 2; threads++) {
        ct_task t = {0};
        task_probe p = {0, pthread_self()};
        ct_task_start(&t, threads, task_fn, &p);
        const bool own_thread = t.started;
        CHECK(threads > 1 || !own_thread);
        if (!own_thread) {
            CHECK(p.runs == 0); /* deferred to the join */
        }
        ct_task_join(&t);
        CHECK(p.runs == 1);
        CHECK(own_thread != (bool)pthread_equal(p.who, pthread_self()));
        ct_task_join(&t);
        CHECK(p.runs == 1);
    }
    ct_task never = {0};
    ct_task_join(&never);
    CHECK(!never.pending);
}

static void test_luma_speed(ct_ctx *ctx)
{
    med_image *img = NULL;
    CHECK_ST(med_read_file(ctx, tu_sample("images/cel_kid_rgba_1920x1080.png"), &img), CT_OK);
    if (img == NULL) {
        return;
    }
    const size_t n = (size_t)med_width(img) * med_height(img);
    float *y = malloc(n * sizeof *y), *u = malloc(n * sizeof *u), *d = malloc(n * sizeof *d),
          *w = malloc(n * sizeof *w), *delta = malloc(n * sizeof *delta);
    med_image *copy = NULL;
    for (size_t i = 0; i < n; i++) {
        delta[i] = (float)((int)(i % 7) - 3);
    }
    /* First call also pays the page faults of the fresh output arrays. */
    CHECK_ST(med_luma(ctx, img, y, u, d, w), CT_OK);
    double t0 = now_ms();
    CHECK_ST(med_luma(ctx, img, y, u, d, w), CT_OK);
    double t1 = now_ms();
    CHECK_ST(med_add_luma(ctx, img, delta), CT_OK);
    double t2 = now_ms();
    printf("  1920x1080 RGBA: med_luma %.2f ms, med_add_luma %.2f ms\n", t1 - t0, t2 - t1);
    /* Catches a pass gone quadratic, not a slow machine: sanitizer builds on a
     * loaded CI box run some 10x slower than this one (12 ms here). */
    CHECK(t1 - t0 < 1000 && t2 - t1 < 1000);
    CHECK_ST(med_image_clone(ctx, img, &copy), CT_OK);
    CHECK(copy != NULL && same_pixels(img, copy) && same_meta(img, copy));
    med_image_free(copy);
    free(y);
    free(u);
    free(d);
    free(w);
    free(delta);
    med_image_free(img);
}

static void test_alloc_failures(ct_ctx *ctx)
{
    /* Fail each allocation in turn: never a crash or leak, always NOMEM
     * (or success once the count passes the last allocation). */
    const char *files[] = {"images/cel_headmo_rgba_640x480.png",
                           "images/bg_twowings_chunks_1920x1080.png"};
    for (size_t f = 0; f < 2; f++) {
        size_t n = 0;
        uint8_t *data = slurp(tu_sample(files[f]), &n);
        int ok = 0;
        for (long k = 1; k < 40 && !ok; k++) {
            med_image *img = NULL;
            ctx->fail_alloc_after = k;
            ct_status st = med_read_mem(ctx, data, n, "alloc", &img);
            CHECK(st == CT_OK || st == CT_ERR_NOMEM);
            ok = st == CT_OK;
            med_image_free(img);
        }
        ctx->fail_alloc_after = 0;
        CHECK(ok);
        free(data);
    }
}

/* ---- the picture's pan (med_motion) ---- */

/* A smooth random picture, a sum of waves, so that any shift (whole or
 * not) of it is exact: frame k shows it moved by k (vx, vy). 8-bit, or
 * 10-bit in 16-bit samples. */
typedef struct wave {
    double fx, fy, ph, a;
} wave;

static void pan_frame(const wave *wv, int nw, uint32_t w, uint32_t h, double ox, double oy,
                      int depth, uint8_t *out)
{
    for (uint32_t y = 0; y < h; y++) {
        for (uint32_t x = 0; x < w; x++) {
            double v = 128;
            for (int k = 0; k < nw; k++) {
                v += wv[k].a * cos(2 * M_PI * (wv[k].fx * (x - ox) + wv[k].fy * (y - oy)) + wv[k].ph);
            }
            v = v < 0 ? 0 : v > 255 ? 255 : v;
            if (depth == 8) {
                out[(size_t)y * w + x] = (uint8_t)lrint(v);
            } else {
                ((uint16_t *)out)[(size_t)y * w + x] = (uint16_t)lrint(v * 4);
            }
        }
    }
}

static void test_motion(ct_ctx *ctx)
{
    const uint32_t w = 640, h = 360;
    wave wv[24];
    uint64_t s = 12345;
    for (int k = 0; k < 24; k++) {
        double r[4];
        for (int i = 0; i < 4; i++) {
            s = s * 6364136223846793005u + 1442695040888963407u;
            r[i] = (double)(s >> 11) / 9007199254740992.0;
        }
        /* directions at random, frequencies 0.005..0.12 cycles a pixel,
         * amplitudes falling as 1/f as in natural pictures */
        double fr = 0.005 * pow(24.0, r[0]), an = 2 * M_PI * r[1];
        wv[k] = (wave){fr * cos(an), fr * sin(an), 2 * M_PI * r[2], (0.3 + r[3]) * 0.3 / fr};
    }
    uint8_t *f = malloc((size_t)w * h * 2), *g = malloc((size_t)w * h * 2);
    CHECK(f != NULL && g != NULL);
    if (f == NULL || g == NULL) {
        free(f);
        free(g);
        return;
    }
    /* 1.08 and -1.1: just over half a level-1 pixel, where a whole
     * level-1 pixel hardly beats none */
    static const double vel[][2] = {{3.3, -1.7}, {-1.95, 0.25}, {0.5, 0.0}, {-17.6, 9.4},
                                    {1.08, 0.0}, {0.3, -1.1}};
    for (int depth = 8; depth <= 10; depth += 2) {
        const ptrdiff_t stride = (ptrdiff_t)w * (depth == 8 ? 1 : 2);
        for (size_t c = 0; c < sizeof vel / sizeof vel[0]; c++) {
            med_motion *m = NULL;
            CHECK_ST(med_motion_new(ctx, w, h, &m), CT_OK);
            if (m == NULL) {
                continue;
            }
            double worst = 0, dx, dy;
            for (int k = 0; k < 5; k++) {
                pan_frame(wv, 24, w, h, k * vel[c][0], k * vel[c][1], depth, f);
                med_motion_push(m, f, stride, depth, &dx, &dy);
                if (k == 0) {
                    CHECK(dx == 0 && dy == 0); /* nothing to compare with */
                } else {
                    worst = fmax(worst, fmax(fabs(dx - vel[c][0]), fabs(dy - vel[c][1])));
                }
            }
            printf("  pan (%.2f, %.2f) px/frame at %d bits: worst error %.3f px\n", vel[c][0],
                   vel[c][1], depth, worst);
            CHECK(worst < 0.05); /* the fraction's least squares: a few hundredths */
            /* The same frame again: exactly no motion (a still shot must
             * not drift). */
            med_motion_push(m, f, stride, depth, &dx, &dy);
            CHECK(dx == 0 && dy == 0);
            /* A cut to unrelated noise, and noise after noise: none. */
            for (int cut = 0; cut < 2; cut++) {
                for (size_t i = 0; i < (size_t)w * h; i++) {
                    s = s * 6364136223846793005u + 1442695040888963407u;
                    if (depth == 8) {
                        f[i] = (uint8_t)(s >> 56);
                    } else {
                        ((uint16_t *)f)[i] = (uint16_t)(s >> 54);
                    }
                }
                med_motion_push(m, f, stride, depth, &dx, &dy);
                CHECK(dx == 0 && dy == 0);
            }
            med_motion_free(m);
        }
    }
    /* A shift past the search range is not reported as some other one. */
    {
        med_motion *m = NULL;
        CHECK_ST(med_motion_new(ctx, w, h, &m), CT_OK);
        double dx = 0, dy = 0;
        if (m != NULL) {
            pan_frame(wv, 24, w, h, 0, 0, 8, f);
            med_motion_push(m, f, w, 8, &dx, &dy);
            pan_frame(wv, 24, w, h, 90, 0, 8, g);
            med_motion_push(m, g, w, 8, &dx, &dy);
            CHECK(dx == 0 || fabs(dx - 90) < 0.25);
            med_motion_free(m);
        }
    }
    /* Too small a frame to tell: always 0. */
    {
        med_motion *m = NULL;
        CHECK_ST(med_motion_new(ctx, 160, 120, &m), CT_OK);
        double dx = 1, dy = 1;
        if (m != NULL) {
            pan_frame(wv, 24, 160, 120, 0, 0, 8, f);
            med_motion_push(m, f, 160, 8, &dx, &dy);
            pan_frame(wv, 24, 160, 120, 3, 2, 8, f);
            med_motion_push(m, f, 160, 8, &dx, &dy);
            CHECK(dx == 0 && dy == 0);
            med_motion_free(m);
        }
    }
    free(f);
    free(g);
}

/* The pan media hands the mark, on a real clip: the kid clip's backdrop
 * pans about 1.93 pixels a frame to the left and steps 2 pixels down now
 * and then, about 43 over the clip (a full-size search by hand, outside
 * celtrace); the mark callback only records. */
typedef struct pan_rec {
    pthread_mutex_t mu;
    double x[256], y[256];
    uint64_t n;
} pan_rec;

static ct_status pan_cb(void *opaque, const med_vframe *f, float *delta)
{
    pan_rec *r = opaque;
    memset(delta, 0, (size_t)f->w * f->h * sizeof *delta);
    pthread_mutex_lock(&r->mu);
    if (f->index < 256) {
        r->x[f->index] = f->pan_x;
        r->y[f->index] = f->pan_y;
        r->n = f->index + 1 > r->n ? f->index + 1 : r->n;
    }
    pthread_mutex_unlock(&r->mu);
    return CT_OK;
}

static ct_status pan_scan_cb(void *opaque, const med_vframe *f)
{
    pan_rec *r = opaque;
    if (f->index < 256) {
        r->x[f->index] = f->pan_x;
        r->y[f->index] = f->pan_y;
        r->n = f->index + 1 > r->n ? f->index + 1 : r->n;
    }
    return CT_OK;
}

/* The change a video frame gets is realised in whole code values with the
 * error carried down each column: on a flat picture a sub-level change
 * must come out as a local mean (any run of 8 pixels down a column within
 * 1/8 level of the asked change), every pixel within a level of it, and
 * the PSNR reported must be that of the change made. Plain rounding would
 * leave 0.3 and 0.05 as nothing. Lossless (FFV1), at 8 and 10 bits. */
#define RZ_W 96u
#define RZ_H 64u
static float rz_delta(uint32_t x, uint32_t y)
{
    if (y < RZ_H / 2) {
        return x < RZ_W / 2 ? 0.3f : -0.6f;
    }
    return x < RZ_W / 2 ? 0.05f : 2.7f;
}

static ct_status rz_mark(void *opaque, const med_vframe *f, float *delta)
{
    (void)opaque;
    for (uint32_t y = 0; y < f->h; y++) {
        for (uint32_t x = 0; x < f->w; x++) {
            delta[(size_t)y * f->w + x] = rz_delta(x, y);
        }
    }
    return CT_OK;
}

typedef struct rz_rec {
    bool input; /* scanning the input: keep its luma as the base */
    float base[RZ_W * RZ_H];
    int frames, bad_pixel, bad_run;
    double se, n, sum[4];
    double worst_run;
} rz_rec;

static ct_status rz_scan(void *opaque, const med_vframe *f)
{
    rz_rec *r = opaque;
    if (f->w != RZ_W || f->h != RZ_H) {
        r->bad_pixel++;
        return CT_OK;
    }
    r->frames++;
    if (r->input) {
        memcpy(r->base, f->y, sizeof r->base);
        return CT_OK;
    }
    for (uint32_t x = 0; x < RZ_W; x++) {
        for (uint32_t y = 0; y < RZ_H; y++) {
            size_t i = (size_t)y * RZ_W + x;
            float d = rz_delta(x, y), c = f->y[i] - r->base[i];
            r->bad_pixel += fabsf(c - d) < 1.0f ? 0 : 1;
            r->sum[(y < RZ_H / 2 ? 0 : 2) + (x < RZ_W / 2 ? 0 : 1)] += c;
            r->se += (double)c * c;
            r->n += 1;
            /* runs of 8 down the column inside one region */
            if (y % (RZ_H / 2) <= RZ_H / 2 - 8) {
                double m = 0;
                for (uint32_t k = 0; k < 8; k++) {
                    m += f->y[i + k * RZ_W] - r->base[i + k * RZ_W];
                }
                double e = fabs(m / 8 - d);
                r->worst_run = e > r->worst_run ? e : r->worst_run;
                r->bad_run += e <= 0.125 + 1e-4 ? 0 : 1;
            }
        }
    }
    return CT_OK;
}

static void test_video_realize(ct_ctx *ctx)
{
    const char *fmts[] = {"yuv420p", "yuv420p10le"};
    for (int i = 0; i < 2; i++) {
        char in[4200], out[4200], cmd[9000];
        snprintf(in, sizeof in, "%s/rz_in_%d.mkv", tu_tmpdir("media"), i);
        snprintf(out, sizeof out, "%s/rz_out_%d.mkv", tu_tmpdir("media"), i);
        /* one flat mid-grey */
        snprintf(cmd, sizeof cmd,
                 "ffmpeg -nostdin -v error -y -f lavfi -i color=c=0x646464:s=%ux%u:r=24:d=0.25 "
                 "-pix_fmt %s -c:v ffv1 '%s'",
                 RZ_W, RZ_H, fmts[i], in);
        if (run(cmd) != 0) {
            CHECK(0);
            continue;
        }
        med_video_opts o = {.codec = "ffv1"};
        med_video_info info = {0};
        CHECK_ST(med_video_transcode(ctx, in, out, out, &o, rz_mark, NULL, &info), CT_OK);
        static rz_rec r;
        memset(&r, 0, sizeof r);
        r.input = true;
        CHECK_ST(med_video_scan(ctx, in, 0, 1, rz_scan, &r, NULL), CT_OK);
        CHECK(r.frames == 6);
        r.input = false;
        r.frames = 0;
        CHECK_ST(med_video_scan(ctx, out, 0, 1, rz_scan, &r, NULL), CT_OK);
        const double q = r.n / 4;
        printf("  realise %s: %d frames, region means %.3f %.3f %.3f %.3f (asked 0.3 -0.6 "
               "0.05 2.7), worst 8-run %.3f, PSNR %.3f (of the change: %.3f)\n",
               fmts[i], r.frames, r.sum[0] / q, r.sum[1] / q, r.sum[2] / q, r.sum[3] / q,
               r.worst_run, info.psnr_y, 10.0 * log10(255.0 * 255.0 / (r.se / r.n)));
        CHECK(r.frames == 6 && info.frames == 6);
        CHECK(r.bad_pixel == 0);
        CHECK(r.bad_run == 0);
        /* a region's column sums are off by the error left at its ends */
        const double tol = 1.0 / (RZ_H / 2) + 1e-3;
        CHECK(fabs(r.sum[0] / q - 0.3) < tol && fabs(r.sum[1] / q + 0.6) < tol);
        CHECK(fabs(r.sum[2] / q - 0.05) < tol && fabs(r.sum[3] / q - 2.7) < tol);
        const double psnr = 10.0 * log10(255.0 * 255.0 / (r.se / r.n));
        CHECK(fabs(info.psnr_y - psnr) < 0.01);
        remove(in);
        remove(out);
    }
}

static void test_video_pan(ct_ctx *ctx)
{
    pan_rec r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    char out[4200];
    snprintf(out, sizeof out, "%s/pan.mp4", tu_tmpdir("media"));
    med_video_opts o = {.preset = "ultrafast", .crf = 35};
    CHECK_ST(med_video_transcode(ctx, tu_sample("video/clip_kid_dune_1920x1080_h264_aac.mp4"), out,
                                 out, &o, pan_cb, &r, NULL),
             CT_OK);
    CHECK(r.n == 192);
    if (r.n < 2) {
        return;
    }
    CHECK(r.x[0] == 0 && r.y[0] == 0);
    size_t near = 0;
    for (uint64_t i = 1; i < r.n; i++) {
        near += fabs(r.x[i] - r.x[i - 1] + 1.95) < 0.3 ? 1 : 0;
    }
    const double vx = (r.x[r.n - 1] - r.x[0]) / (double)(r.n - 1);
    printf("  kid clip: pan %.3f px/frame across, %.1f px down over %llu frames; %zu steps "
           "within 0.3 px of -1.95\n",
           vx, r.y[r.n - 1], (unsigned long long)r.n, near);
    CHECK(fabs(vx + 1.93) < 0.1);
    CHECK(fabs(r.y[r.n - 1] - 43.3) < 6.0);
    CHECK(near * 10 >= (r.n - 1) * 9);
    /* A scan (verify) measures the pan as the embedder did: the same on
     * the same frames, and nearly so on the re-encoded copy. */
    static pan_rec in, copy;
    CHECK_ST(med_video_scan(ctx, tu_sample("video/clip_kid_dune_1920x1080_h264_aac.mp4"), 0, 1,
                            pan_scan_cb, &in, NULL),
             CT_OK);
    CHECK(in.n == r.n);
    size_t same = 0;
    for (uint64_t i = 0; i < in.n && i < r.n; i++) {
        same += in.x[i] == r.x[i] && in.y[i] == r.y[i] ? 1 : 0;
    }
    CHECK(same == r.n);
    CHECK_ST(med_video_scan(ctx, out, 0, 1, pan_scan_cb, &copy, NULL), CT_OK);
    CHECK(copy.n == r.n);
    double worst = 0;
    for (uint64_t i = 0; i < copy.n && i < r.n; i++) {
        double e = fmax(fabs(copy.x[i] - r.x[i]), fabs(copy.y[i] - r.y[i]));
        worst = e > worst ? e : worst;
    }
    printf("  scans: the input's pans equal the embedder's in %zu of %llu frames; the copy's "
           "within %.2f px\n",
           same, (unsigned long long)r.n, worst);
    CHECK(worst < 4.0);
    remove(out);
}

int main(void)
{
    ct_ctx *ctx = NULL;
    double t0 = now_ms();

    snprintf(g_tmp, sizeof g_tmp, "%s", tu_tmpdir("media"));
    CHECK_ST(ct_ctx_new(g_tmp, &ctx), CT_OK);
    if (ctx == NULL) {
        return tu_done("test_media");
    }
    med_libav_quiet();
    test_png_roundtrip(ctx);
    test_png_chunks(ctx);
    test_png_segmented(ctx);
    test_png_16bit(ctx);
    test_png_palette(ctx);
    test_jpeg(ctx);
    test_jpeg_ycc(ctx);
    test_jpeg_gray_progressive(ctx);
    test_jpeg_coef(ctx);
    test_jpeg_app1(ctx);
    test_cross(ctx);
    test_other_formats(ctx);
    test_errors(ctx);
    test_limit(ctx);
    test_hostile(ctx);
    test_luma(ctx);
    test_dither_gray(ctx);
    test_luma_threads(ctx);
    test_task();
    test_luma_speed(ctx);
    test_motion(ctx);
    test_video_realize(ctx);
    test_video_pan(ctx);
    test_alloc_failures(ctx);
    ct_ctx_free(ctx);
    printf("  total %.0f ms\n", now_ms() - t0);
    return tu_done("test_media");
}

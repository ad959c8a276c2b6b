/* verify: informed detection. The t tail; the warp; registration of
 * crops, downscales and mirror images of a sample to its original, and no
 * match for an unrelated image; the informed statistic names the copy's
 * recipient and not the other one, and nobody on an unmarked copy or a
 * copy registered to the wrong original. Small images keep it quick. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include <celtrace/celtrace.h>

#include "media/media.h"
#include "verify/informed.h"
#include "watermark/wm.h"
#include "testutil.h"

typedef struct img {
    uint32_t w, h;
    float *y, *up, *down, *wt, *flat;
} img;

static void img_free(img *m)
{
    free(m->y);
    free(m->up);
    free(m->down);
    free(m->wt);
    free(m->flat);
}

static int load(ct_ctx *ctx, const char *rel, img *m)
{
    med_image *mi = NULL;
    memset(m, 0, sizeof *m);
    if (med_read_file(ctx, tu_sample(rel), &mi) != CT_OK) {
        return -1;
    }
    m->w = med_width(mi);
    m->h = med_height(mi);
    size_t n = (size_t)m->w * m->h;
    m->y = malloc(n * sizeof *m->y);
    m->up = malloc(n * sizeof *m->up);
    m->down = malloc(n * sizeof *m->down);
    m->wt = malloc(n * sizeof *m->wt);
    m->flat = malloc(n * sizeof *m->flat);
    int rc = m->y && m->up && m->down && m->wt && m->flat &&
                     med_luma(ctx, mi, m->y, m->up, m->down, m->wt) == CT_OK
                 ? 0
                 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        m->flat[i] = m->wt[i] * m->y[i] + (1 - m->wt[i]) * 255.0f;
    }
    med_image_free(mi);
    return rc;
}

/* Shrink every plane of m by f (keeps the unrelated image's embeds cheap). */
static int shrink(ct_ctx *ctx, img *m, double f)
{
    uint32_t w = (uint32_t)lround(m->w * f), h = (uint32_t)lround(m->h * f);
    vfy_reg g = {(double)w / m->w, 0, 0, false, 0, 0};
    float **planes[5] = {&m->y, &m->up, &m->down, &m->wt, &m->flat};
    for (int i = 0; i < 5; i++) {
        float *t = malloc((size_t)w * h * sizeof *t);
        if (t == NULL || vfy_warp(ctx, *planes[i], m->w, m->h, &g, w, h, t, NULL) != CT_OK) {
            free(t);
            return -1;
        }
        free(*planes[i]);
        *planes[i] = t;
    }
    m->w = w;
    m->h = h;
    return 0;
}

/* Cut and scale a plane through map g (the output is the "suspect"). */
static float *attack(ct_ctx *ctx, const float *src, uint32_t w, uint32_t h, const vfy_reg *g,
                     uint32_t ow, uint32_t oh, double noise, uint64_t seed)
{
    float *out = malloc((size_t)ow * oh * sizeof *out);
    if (out == NULL || vfy_warp(ctx, src, w, h, g, ow, oh, out, NULL) != CT_OK) {
        free(out);
        return NULL;
    }
    /* rounding to whole levels plus Gaussian noise, a stand-in for JPEG */
    uint64_t s = seed;
    for (size_t i = 0; i < (size_t)ow * oh; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = ((s >> 11) + 0.5) / 9007199254740992.0;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double v = ((s >> 11) + 0.5) / 9007199254740992.0;
        double gz = sqrt(-2 * log(u)) * cos(2 * M_PI * v);
        double x = round(out[i] + noise * gz);
        out[i] = (float)(x < 0 ? 0 : x > 255 ? 255 : x);
    }
    return out;
}

static void test_t_tail(void)
{
    CHECK(fabs(vfy_t_tail(0, 5) - 0.5) < 1e-12);
    CHECK(fabs(vfy_t_tail(1, 1) - 0.25) < 1e-9);              /* Cauchy */
    CHECK(fabs(vfy_t_tail(2, 1e6) - 0.0227501319) < 1e-6);    /* normal */
    CHECK(fabs(vfy_t_tail(-2, 1e6) - (1 - 0.0227501319)) < 1e-6);
    CHECK(fabs(vfy_t_tail(2.0, 10) - 0.036694017) < 1e-6);    /* tables */
    CHECK(vfy_t_tail(30, 23) < 1e-18 && vfy_t_tail(30, 23) > 0);
    CHECK(vfy_t_tail(INFINITY, 23) == 0);
}

static void test_warp(ct_ctx *ctx, const img *o)
{
    /* identity and an integer crop reproduce the pixels */
    uint32_t cw = 100, ch = 80;
    float *a = malloc((size_t)cw * ch * sizeof *a);
    vfy_reg g = {1.0, 37, 21, false, 0, 0};
    CHECK_ST(vfy_warp(ctx, o->flat, o->w, o->h, &g, cw, ch, a, NULL), CT_OK);
    double err = 0;
    for (uint32_t y = 0; y < ch; y++) {
        for (uint32_t x = 0; x < cw; x++) {
            err = fmax(err, fabs(a[y * cw + x] - o->flat[(size_t)(y + 21) * o->w + x + 37]));
        }
    }
    CHECK(err < 1e-3);
    g.mirrored = true; /* grid pixel x shows original x' = 37 + (cw - 1 - x) */
    CHECK_ST(vfy_warp(ctx, o->flat, o->w, o->h, &g, cw, ch, a, NULL), CT_OK);
    err = 0;
    for (uint32_t y = 0; y < ch; y++) {
        for (uint32_t x = 0; x < cw; x++) {
            err = fmax(err, fabs(a[y * cw + x] -
                                 o->flat[(size_t)(y + 21) * o->w + 37 + (cw - 1 - x)]));
        }
    }
    CHECK(err < 1e-3);
    free(a);
}

typedef struct regcase {
    double scale, ox, oy;
    bool mirrored;
    double area; /* share of the original kept */
} regcase;

static void test_register(ct_ctx *ctx, const img *o, const img *other)
{
    const regcase cases[] = {
        {1.0, 123.0, 77.0, false, 0.15},  /* a 15 % crop */
        {0.2, 0.0, 0.0, false, 1.0},      /* resized to 20 % */
        {0.5, 40.0, 30.0, true, 0.5},     /* mirrored, half size, cropped */
        {1.6, 200.0, 150.0, false, 0.2},  /* enlarged crop */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const regcase *k = &cases[c];
        double side = sqrt(k->area);
        uint32_t sw = (uint32_t)lround(o->w * side * k->scale);
        uint32_t sh = (uint32_t)lround(o->h * side * k->scale);
        vfy_reg g = {k->scale, k->ox, k->oy, k->mirrored, 0, 0};
        float *s = attack(ctx, o->flat, o->w, o->h, &g, sw, sh, 1.5, 7 + c);
        CHECK(s != NULL);
        if (s == NULL) {
            continue;
        }
        vfy_gray go = {o->w, o->h, o->flat}, gs = {sw, sh, s};
        vfy_reg r;
        CHECK_ST(vfy_register(ctx, &go, &gs, &r), CT_OK);
        CHECK(r.score >= VFY_REG_ACCEPT);
        CHECK(r.mirrored == k->mirrored);
        CHECK(fabs(r.scale / k->scale - 1) < 0.01);
        /* the suspect's centre within an original pixel (the mark's chips
         * are about 4 wide here) */
        double ex = r.ox + 0.5 * sw / r.scale - (k->ox + 0.5 * sw / k->scale);
        double ey = r.oy + 0.5 * sh / r.scale - (k->oy + 0.5 * sh / k->scale);
        CHECK(fabs(ex) < 1.0 && fabs(ey) < 1.0);
        if (fabs(ex) >= 1.0 || fabs(ey) >= 1.0 || r.score < VFY_REG_ACCEPT) {
            fprintf(stderr, "case %zu: score %.3f scale %.4f ox %.2f oy %.2f mir %d\n", c,
                    r.score, r.scale, r.ox, r.oy, r.mirrored);
        }
        /* the same suspect against an unrelated original: no match */
        vfy_gray gother = {other->w, other->h, other->flat};
        CHECK_ST(vfy_register(ctx, &gother, &gs, &r), CT_OK);
        CHECK(r.score < VFY_REG_ACCEPT);
        if (r.score >= VFY_REG_ACCEPT) {
            fprintf(stderr, "case %zu: unrelated original scored %.3f\n", c, r.score);
        }
        free(s);
    }
    /* tiny suspects are refused, not matched */
    float tiny[8 * 8] = {0};
    vfy_gray go = {o->w, o->h, o->flat}, gt = {8, 8, tiny};
    vfy_reg r;
    CHECK_ST(vfy_register(ctx, &go, &gt, &r), CT_OK);
    CHECK(r.score < 0);
}

/* Mark o for key ka (serial sa), attack, register, score recipients
 * ka/sa and kb/sb. Returns the z of each. */
static void run_informed(ct_ctx *ctx, const img *o, const uint8_t sync[WM_KEYBYTES],
                         const uint8_t *mark_key, uint32_t mark_serial, const vfy_reg *cut,
                         uint32_t sw, uint32_t sh, const uint8_t ka[WM_KEYBYTES], uint32_t sa,
                         const uint8_t kb[WM_KEYBYTES], uint32_t sb, double out_z[2],
                         double out_p[2], double *reg_score)
{
    size_t n = (size_t)o->w * o->h;
    float *marked = malloc(n * sizeof *marked), *delta = malloc(n * sizeof *delta);
    memcpy(marked, o->flat, n * sizeof *marked);
    if (mark_key != NULL) {
        wm_plane pl = {o->w, o->h, o->y, o->up, o->down, o->wt, true, 1, NULL, NULL};
        wm_embed_params prm = {.strength = 1.0, .serial = mark_serial};
        CHECK_ST(wm_embed(ctx, &pl, sync, mark_key, &prm, delta), CT_OK);
        for (size_t i = 0; i < n; i++) {
            marked[i] += delta[i] * o->wt[i];
        }
    }
    float *s = attack(ctx, marked, o->w, o->h, cut, sw, sh, 2.0, 99);
    vfy_gray go = {o->w, o->h, o->flat}, gs = {sw, sh, s};
    vfy_reg r;
    CHECK_ST(vfy_register(ctx, &go, &gs, &r), CT_OK);
    *reg_score = r.score;
    vfy_recipient rc[2];
    memset(rc, 0, sizeof rc);
    memcpy(rc[0].key, ka, WM_KEYBYTES);
    rc[0].serial = sa;
    rc[0].strength = 1.0;
    memcpy(rc[1].key, kb, WM_KEYBYTES);
    rc[1].serial = sb;
    rc[1].strength = 1.0;
    vfy_original vo = {o->w, o->h, o->y, o->up, o->down, o->wt, true, o->flat};
    vfy_informed_stats st;
    CHECK_ST(vfy_informed(ctx, &vo, &gs, sync, &r, rc, 2, &st), CT_OK);
    CHECK(st.decoys == VFY_DECOYS && st.sd > 0);
    for (int i = 0; i < 2; i++) {
        out_z[i] = rc[i].z;
        out_p[i] = rc[i].p;
    }
    free(s);
    free(marked);
    free(delta);
}

static void test_informed(ct_ctx *ctx, const img *o, const img *other)
{
    uint8_t sync[WM_KEYBYTES], ka[WM_KEYBYTES], kb[WM_KEYBYTES];
    /* Fixed keys: the same statistic every run (random ones made the
     * margin over the 1e-9 bar vary from run to run). */
    for (int i = 0; i < WM_KEYBYTES; i++) {
        sync[i] = (uint8_t)(0x11 * i + 3);
        ka[i] = (uint8_t)(0x35 ^ (7 * i));
        kb[i] = (uint8_t)(0x9c ^ (11 * i));
    }
    uint32_t sa = 1111, sb = 2222;
    double z[2], p[2], score;
    /* a quarter-area crop at 70 % */
    vfy_reg cut = {0.7, 150, 90, false, 0, 0};
    uint32_t sw = (uint32_t)lround(o->w * 0.5 * 0.7), sh = (uint32_t)lround(o->h * 0.5 * 0.7);

    run_informed(ctx, o, sync, ka, sa, &cut, sw, sh, ka, sa, kb, sb, z, p, &score);
    fprintf(stderr, "A's copy: score %.3f, z(A) %.1f p %.2e, z(B) %.1f p %.2e\n", score, z[0],
            p[0], z[1], p[1]);
    CHECK(score >= VFY_REG_ACCEPT);
    CHECK(p[0] * 2 <= 1e-9); /* A named ... */
    CHECK(p[1] * 2 > 1e-6);  /* ... B never */
    CHECK(fabs(z[1]) < 5);

    /* B's copy: the roles swap */
    run_informed(ctx, o, sync, kb, sb, &cut, sw, sh, ka, sa, kb, sb, z, p, &score);
    fprintf(stderr, "B's copy: z(A) %.1f, z(B) %.1f\n", z[0], z[1]);
    CHECK(p[1] * 2 <= 1e-9);
    CHECK(p[0] * 2 > 1e-6);

    /* the unmarked original, attacked: nobody */
    run_informed(ctx, o, sync, NULL, 0, &cut, sw, sh, ka, sa, kb, sb, z, p, &score);
    fprintf(stderr, "unmarked: z(A) %.1f, z(B) %.1f\n", z[0], z[1]);
    CHECK(p[0] * 2 > 1e-6 && p[1] * 2 > 1e-6);

    /* A's copy registered to an unrelated original (scored anyway, as if
     * the match threshold had been passed): nobody */
    size_t n = (size_t)o->w * o->h;
    float *delta = malloc(n * sizeof *delta), *marked = malloc(n * sizeof *marked);
    wm_plane pl = {o->w, o->h, o->y, o->up, o->down, o->wt, true, 1, NULL, NULL};
    wm_embed_params prm = {.strength = 1.0, .serial = sa};
    CHECK_ST(wm_embed(ctx, &pl, sync, ka, &prm, delta), CT_OK);
    for (size_t i = 0; i < n; i++) {
        marked[i] = o->flat[i] + delta[i] * o->wt[i];
    }
    float *s = attack(ctx, marked, o->w, o->h, &cut, sw, sh, 4.0, 5);
    vfy_reg wrong = {0.7, 10, 10, false, 0, 0};
    vfy_recipient rc[1];
    memset(rc, 0, sizeof rc);
    memcpy(rc[0].key, ka, WM_KEYBYTES);
    rc[0].serial = sa;
    rc[0].strength = 1.0;
    vfy_original vo = {other->w, other->h, other->y, other->up, other->down, other->wt, true,
                       other->flat};
    vfy_gray gs = {sw, sh, s};
    vfy_informed_stats st;
    CHECK_ST(vfy_informed(ctx, &vo, &gs, sync, &wrong, rc, 1, &st), CT_OK);
    fprintf(stderr, "wrong original: z(A) %.1f\n", rc[0].z);
    CHECK(rc[0].p > 1e-6);
    free(s);
    free(delta);
    free(marked);
}

int main(void)
{
    ct_ctx *ctx = NULL;
    img o, other;
    if (ct_ctx_new(tu_tmpdir("informed"), &ctx) != CT_OK ||
        load(ctx, "images/cel_headmo_rgba_640x480.png", &o) != 0 ||
        load(ctx, "images/sketch_eagle_gray_1920x1080.png", &other) != 0 ||
        shrink(ctx, &other, 1.0 / 3.0) != 0) {
        fprintf(stderr, "cannot load the samples\n");
        return 1;
    }
    test_t_tail();
    test_warp(ctx, &o);
    test_register(ctx, &o, &other);
    test_informed(ctx, &o, &other);
    img_free(&o);
    img_free(&other);
    ct_ctx_free(ctx);
    return tu_done("test_informed");
}

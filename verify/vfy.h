/* verify: blind detection. Finds the tile's geometry from the sync
 * signal's peaks in the spectrum, folds the image onto one tile, finds the
 * offset from the sync phases, then decodes each vendor's payload and
 * accepts only an authenticated one. Uses watermark/'s sync, spreading,
 * code and payload check: no copy of them lives here. */
#ifndef CT_VFY_H
#define CT_VFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "watermark/wm.h"

typedef struct vfy_input {
    uint32_t w, h;
    const float *y;      /* luma, 8-bit levels */
    const float *weight; /* visibility 0..1, or NULL */
} vfy_input;

typedef struct vfy_key {
    uint32_t vendor_id;
    uint32_t epoch;
    uint8_t key[WM_KEYBYTES];
    /* Serials the ledger records as issued under this key (may be NULL):
     * besides decoding, each is tested directly (see detect.c). */
    const uint32_t *issued;
    size_t nissued;
} vfy_key;

#define VFY_MAX_HITS 8

typedef struct vfy_hit {
    uint32_t vendor_id;
    uint32_t epoch;
    uint32_t serial;
    double msg_z;  /* correlation of the decoded codeword with the chips, in sigmas */
    bool issued;   /* found by testing an issued serial, not by decoding */
} vfy_hit;

typedef struct vfy_result {
    int nhits;
    vfy_hit hits[VFY_MAX_HITS];
    /* Geometry of the best candidate (informative). */
    double period;   /* tile period in the suspect, pixels */
    double angle;    /* degrees */
    bool mirrored;
    double sync_z;   /* sync correlation of the best candidate, in sigmas */
    /* Every (geometry candidate, vendor key) pair that was decoded is one
     * chance for noise to pass the 48-bit tag. */
    uint64_t trials;
    /* The issued-serial tests: the most a search can run (fixed before it
     * starts: every candidate it may fold times every issued serial) and
     * the best correlation seen, in sigmas. */
    uint64_t issued_tests;
    double issued_z;
    /* trials * 2^-48 + issued_tests * exp(-issued_z^2 / 2), at most 1 */
    double false_positive_probability;
} vfy_result;

ct_status vfy_detect(ct_ctx *ctx, const vfy_input *in, const uint8_t sync_key[WM_KEYBYTES],
                     const vfy_key *keys, size_t nkeys, vfy_result *out);

/* ---- internals shared between the files of verify/ ---- */

/* A 2x2 map from suspect pixels to tile cells: cell = B * pixel. */
typedef struct vfy_geom {
    double b[2][2];
    double score; /* spectral score */
    bool upright; /* an upright map, maybe stretched: folded whatever its
                   * spectral score */
} vfy_geom;

/* Upright and stretched (aspect-changed upright) candidates
 * vfy_sync_search adds after its `max` best. */
#define VFY_UPRIGHT 4
#define VFY_ASPECT  2
#define VFY_EXTRA   (VFY_UPRIGHT + VFY_ASPECT)

/* The map of an upright, unmirrored tile of `period` pixels (cell = B *
 * pixel): where the embedder put it, or a plain resize of that. */
vfy_geom vfy_geom_upright(double period);

/* The z an issued-serial test must reach in vfy_detect when the keys
 * carry nserials issued serials in all (INFINITY for none). */
double vfy_issued_z_min(uint64_t nserials);

/* Decode at a known map (cell = B * pixel), refining it from patch
 * offsets once if the first decode fails: the informed path, when the
 * original is known and the suspect has been registered to it. */
ct_status vfy_try_geometry(ct_ctx *ctx, const vfy_input *in, const uint8_t sync_key[WM_KEYBYTES],
                           const vfy_key *keys, size_t nkeys, const vfy_geom *geom,
                           vfy_result *out);


/* Matched-filter whitening (whiten.c), used by the search and the fold:
 * prediction from like neighbours up to mean_r pixels out, noise variance
 * over (2 var_r + 1)^2.
 * Nearly transparent pixels (weight < 0.1) are NaN: they carry no evidence. */
ct_status vfy_whiten(ct_ctx *ctx, const float *img, const float *weight, uint32_t w, uint32_t h,
                     int mean_r, int var_r, float *out);

/* Candidate geometries from the spectrum of a whitened image (w x h, NaN
 * where transparent), periods pmin..pmax pixels: the best `max` of the
 * whole search, best first, then up to VFY_UPRIGHT from the search of
 * upright maps alone and VFY_ASPECT from that of stretched upright maps
 * (both flagged upright) that were not among them. cands holds
 * max + VFY_EXTRA. */
ct_status vfy_sync_search(ct_ctx *ctx, const float *white, uint32_t w, uint32_t h,
                          const wm_sync *sync, double pmin, double pmax, vfy_geom *cands, int max,
                          int *ncands);

#endif

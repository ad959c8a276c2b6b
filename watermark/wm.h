/* watermark: the mark itself. Keyed patterns, the payload code, the
 * perceptual mask and the embedder. Works on luminance planes, never on
 * files. verify/ uses the same tile, code and transforms (one
 * implementation; see wm_tile_* and wm_code_*).
 *
 * The mark (algorithm version 1), after Alattar/Meyer's tiled design:
 *  - a tile of WM_CELLS x WM_CELLS cells repeats over the image with a
 *    period of P0 pixels (wm_period_for: about 2/9 of the short side, so a
 *    downscaled leak looks like a smaller original; never a power of two,
 *    so that tiled paper textures do not line up with it);
 *  - the tile is WM_MCELLS x WM_MCELLS message cells; each carries one chip:
 *    a coded bit (80 payload bits under a K=7 rate-1/3 convolutional code,
 *    258 coded bits spread over 1024 cells) times a keyed +-1 sequence of
 *    the vendor's key; chips are bilinearly interpolated between cell
 *    centres, so the message lives below about 16 cycles per tile, the
 *    band JPEG, WebP and downscaling keep (finer cells lost most of their
 *    energy there: measured);
 *  - over it, a studio-keyed synchronisation signal: WM_SYNC_K sinusoids at
 *    integer frequencies of the tile. Their peaks in the spectrum give the
 *    detector scale, rotation and mirror; their phases give the offset.
 *  - the amplitude per pixel follows a perceptual budget (wm_mask).
 */
#ifndef CT_WM_H
#define CT_WM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

#define WM_ALGO_VERSION 1u
#define WM_CELLS        64 /* tile units per side: the detector's coordinates */
#define WM_MCELLS       32 /* message cells per side, each 2 tile units */
#define WM_NCELLS       (WM_MCELLS * WM_MCELLS)
#define WM_SYNC_K       16
#define WM_SYNC_RMIN    7.0 /* sync radius band, cycles per tile */
#define WM_SYNC_RMAX    20.0
#define WM_SERIAL_BITS  32
#define WM_TAG_BITS     48
#define WM_INFO_BITS    (WM_SERIAL_BITS + WM_TAG_BITS)
#define WM_CODE_K       7
#define WM_CODED_BITS   ((WM_INFO_BITS + WM_CODE_K - 1) * 3)
#define WM_KEYBYTES     32
/* Share of the mark's power in the sync signal. */
#define WM_SYNC_POWER   0.30

/* Studio-wide sync signal: frequencies (cycles per tile) and phases. */
typedef struct wm_sync {
    int p[WM_SYNC_K];
    int q[WM_SYNC_K];
    float phase[WM_SYNC_K];
} wm_sync;

/* Per-vendor spreading: the +-1 sequence and the cell -> coded bit map. */
typedef struct wm_spread {
    int8_t pn[WM_NCELLS];
    uint16_t bit_of_cell[WM_NCELLS];
} wm_spread;

void wm_sync_init(wm_sync *s, const uint8_t sync_key[WM_KEYBYTES]);
void wm_spread_init(wm_spread *sp, const uint8_t vendor_key[WM_KEYBYTES]);

/* Value of the unit-RMS sync signal at cell coordinates (u, v). */
float wm_sync_at(const wm_sync *s, double u, double v);

/* ---- payload and code ---- */

/* The 80 info bits: serial (32) then a 48-bit tag, a keyed BLAKE2b of the
 * algorithm version and serial under the vendor's mark key. A decode is
 * accepted only if the tag matches, so noise passes with probability 2^-48
 * per candidate tried. */
void wm_payload_make(const uint8_t vendor_key[WM_KEYBYTES], uint32_t serial,
                     uint8_t info[WM_INFO_BITS]);
bool wm_payload_check(const uint8_t vendor_key[WM_KEYBYTES], const uint8_t info[WM_INFO_BITS],
                      uint32_t *serial);

/* Rate-1/3 K=7 convolutional code (generators 133, 171, 165 octal),
 * zero-terminated. */
void wm_code_encode(const uint8_t info[WM_INFO_BITS], uint8_t coded[WM_CODED_BITS]);
/* Soft Viterbi: soft[i] > 0 means coded bit i is more likely 0. */
void wm_code_decode(const float soft[WM_CODED_BITS], uint8_t info[WM_INFO_BITS]);
/* List Viterbi: up to `list` (<= 16) most likely info words, best first,
 * into info[0..]; returns how many, or -1 when out of memory. */
int wm_code_decode_list(const float soft[WM_CODED_BITS], int list, uint8_t (*info)[WM_INFO_BITS]);

/* ---- tile ---- */

/* Cell values of the message for one payload: chips[i] = +-1. */
void wm_chips(const wm_spread *sp, const uint8_t coded[WM_CODED_BITS], int8_t chips[WM_NCELLS]);

/* Amplitudes of the two components so that the tile has unit RMS. */
#define WM_ALPHA_SYNC 0.5477226f /* sqrt(0.30) */
#define WM_ALPHA_MSG  1.2549900f /* sqrt(0.70) / (2/3): bilinear chips have RMS 2/3 */

/* Tile pattern at tile coordinates (u, v) (WM_CELLS per tile): bilinear
 * chips (message cell (i, j) centred at (2i, 2j)) plus sync. */
float wm_tile_at(const int8_t chips[WM_NCELLS], const wm_sync *s, double u, double v);

/* Tile period in pixels for an image of w x h: about 2/9 of the short
 * side, at least WM_PERIOD_MIN (4x the smallest period the detector
 * resolves, so a quarter-size copy is still found). */
#define WM_PERIOD_MIN 160
int wm_period_for(uint32_t w, uint32_t h);

/* ---- mask and embedding ---- */

/* The rooms of row y, columns [x0, x0 + n), into up and down (n floats
 * each), from src: for a caller that does not keep whole planes of them. */
typedef void (*wm_rooms_fn)(const void *src, uint32_t y, uint32_t x0, uint32_t n, float *up,
                            float *down);

typedef struct wm_plane {
    uint32_t w, h;
    const float *y;         /* luma, 8-bit levels */
    const float *room_up;   /* may be NULL (no clipping limit) */
    const float *room_down; /* may be NULL */
    const float *weight;    /* alpha 0..1, may be NULL (opaque) */
    bool fine;              /* output holds fractional luma (16-bit, or RGB split
                               over channels): no whole-level rounding noise */
    unsigned threads;       /* per-pixel work on up to this many threads (0 or 1:
                               the caller's only); results do not depend on it */
    /* With room_up and room_down NULL, the rooms row by row from rooms
     * (NULL: no clipping limit); the same values give the same mark. */
    wm_rooms_fn rooms;
    const void *rooms_src;
} wm_plane;

/* Row bands the per-pixel work is cut into, whatever the thread count. */
#define WM_BANDS 4u

typedef struct wm_embed_params {
    double strength;        /* 1.0 = default */
    uint32_t serial;
    double shift_x, shift_y; /* the tile moved by this many pixels (pixel x
                                shows the tile at x - shift): video frames
                                follow the picture's pan; 0 for images */
} wm_embed_params;

/* The budget's cap in flat fills, luma levels at strength 1. */
double wm_flat_cap(bool fine);

/* Per-pixel amplitude budget in luma levels (see mask.c). */
ct_status wm_mask(ct_ctx *ctx, const wm_plane *pl, double strength, float *amp);

/* The PSNR ceiling's first pass (embed.c) over one row of the budget:
 * the row's terms added, run by run of the tile, to sum. Row y of a band
 * is added after row y - 1, so a band's sums do not depend on who makes
 * them. */
void wm_ceiling_row(const float *wt, const float *amp, const float *tile, int P, uint32_t y,
                    uint32_t w, float fcap, double sum[4]);

/* The tile and cap the ceiling's sums need, and those sums band by band
 * (WM_BANDS, the bands of wm_mask). */
typedef struct wm_ceiling {
    float *tile; /* P x P */
    int P;
    float fcap;
    double sum[WM_BANDS][4];
} wm_ceiling;

/* wm_mask that also takes the ceiling's sums of each row of amp as it is
 * made (c may be NULL: wm_mask). */
ct_status wm_mask_ceiling(ct_ctx *ctx, const wm_plane *pl, double strength, float *amp,
                          wm_ceiling *c);

/* Compute the continuous luma change for each pixel (w*h floats), already
 * clipped to room_up/room_down and zero where weight is 0. */
ct_status wm_embed(ct_ctx *ctx, const wm_plane *pl, const uint8_t sync_key[WM_KEYBYTES],
                   const uint8_t vendor_key[WM_KEYBYTES], const wm_embed_params *prm,
                   float *delta);

/* The same with the budget already computed (wm_mask of this plane at
 * prm->strength): for callers that render several payloads on one image.
 * amp may be delta itself (each pixel's budget is read before its change
 * is written). */
ct_status wm_embed_amp(ct_ctx *ctx, const wm_plane *pl, const float *amp,
                       const uint8_t sync_key[WM_KEYBYTES], const uint8_t vendor_key[WM_KEYBYTES],
                       const wm_embed_params *prm, float *delta);

/* Quality of a change: PSNR (dB) and mean SSIM of the seen luma, y vs
 * y + delta, over the visible pixels (with alpha: laid over mid-grey, so a
 * pixel of alpha a shows a * delta). */
void wm_quality(const wm_plane *pl, const float *delta, double *psnr, double *ssim);

#endif

/* watermark: the tile, in cell coordinates and rendered to pixels. The
 * embedder renders it; the detector samples the same functions to build
 * its references, so both see one definition of the pattern. */
#include "wm.h"

#include <math.h>
#include <stdlib.h>

void wm_chips(const wm_spread *sp, const uint8_t coded[WM_CODED_BITS], int8_t chips[WM_NCELLS])
{
    for (int i = 0; i < WM_NCELLS; i++) {
        int bit = coded[sp->bit_of_cell[i]];
        chips[i] = (int8_t)(bit ? -sp->pn[i] : sp->pn[i]);
    }
}

static inline int wrap(int i)
{
    return i & (WM_MCELLS - 1);
}

/* Bilinear interpolation of the chips; (u, v) in tile units, message cell
 * centres at even coordinates. */
static float chip_at(const int8_t chips[WM_NCELLS], double u, double v)
{
    u *= (double)WM_MCELLS / WM_CELLS;
    v *= (double)WM_MCELLS / WM_CELLS;
    double fu = floor(u), fv = floor(v);
    float a = (float)(u - fu), b = (float)(v - fv);
    int i0 = wrap((int)fu), j0 = wrap((int)fv);
    int i1 = wrap(i0 + 1), j1 = wrap(j0 + 1);
    float c00 = chips[j0 * WM_MCELLS + i0], c10 = chips[j0 * WM_MCELLS + i1];
    float c01 = chips[j1 * WM_MCELLS + i0], c11 = chips[j1 * WM_MCELLS + i1];
    return (1 - b) * ((1 - a) * c00 + a * c10) + b * ((1 - a) * c01 + a * c11);
}

float wm_tile_at(const int8_t chips[WM_NCELLS], const wm_sync *s, double u, double v)
{
    return WM_ALPHA_MSG * chip_at(chips, u, v) + WM_ALPHA_SYNC * wm_sync_at(s, u, v);
}

int wm_period_for(uint32_t w, uint32_t h)
{
    uint32_t m = w < h ? w : h;
    long p = lround(m * 2.0 / 9.0);
    /* The detector sees periods down to 40 pixels (the sync's top
     * frequency, 20 cycles a tile, at Nyquist): a small image shrunk to a
     * quarter must still leave its tile that large. */
    if (p < WM_PERIOD_MIN) {
        p = WM_PERIOD_MIN;
    }
    if (p > 1200) {
        p = 1200;
    }
    if ((p & (p - 1)) == 0) {
        p += 2; /* never a power of two (see wm.h) */
    }
    return (int)p;
}

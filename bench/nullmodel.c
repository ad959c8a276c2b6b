/* bench/nullmodel: the theoretical null of sync_z, the statistic that
 * vfy_detect reports (verify/detect.c, find_offset_near), by Monte Carlo of
 * the model that statistic's normalisation implies.
 *
 * For one geometry candidate detect.c takes the DFT c_k of the folded tile
 * at the WM_SYNC_K sync frequencies (p_k, q_k), and at their neighbours
 * (p_k + 1, q_k) and (p_k, q_k + 1), r1_k and r2_k. The correlation at an
 * offset (u, v) is acc(u, v) = sum_k Re(c_k exp(-i (2 pi (p_k u + q_k v) / 64
 * + phase_k))), searched over every half cell of the tile (128 x 128), then
 * refined on a 0.05-cell grid (11 x 11) around the best; sync_z is that
 * maximum over sd = sqrt(noise / 2), noise = sum_k (|r1_k|^2 + |r2_k|^2) / 2.
 *
 * Under no mark the folded tile of the whitened image is noise with a
 * smooth spectrum: c_k, r1_k, r2_k independent circular complex Gaussians
 * of one variance. Then acc at a fixed offset is N(0, sd^2) and sync_z is
 * the maximum of that random trigonometric field over the searched offsets.
 * This tool draws the c_k, r_k and runs exactly that search with the
 * studio's real sync frequencies (wm_sync_init of a random key; the search
 * is the same for every key up to the frequencies).
 *
 * Not in the model: the geometry candidates are those whose spectrum peaks
 * at the sync frequencies (vfy_sync_search), which biases |c_k| upwards,
 * and the verifier keeps the largest sync_z over all candidates it decodes
 * (up to 2 per pass). bench/report draws the maximum over as many
 * candidates as each trial's size allows beside the single-candidate curve.
 *
 * Usage: nullmodel N_DRAWS [SEED]
 * Writes "draw,z" CSV lines to stdout. */
#include <complex.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <sodium.h>

#include "watermark/wm.h"

#define G 128 /* half-cell offset grid, as detect.c */

static uint64_t rng_state;

static double urand(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static double nrand(void)
{
    double u = urand() + 1e-12, v = urand();
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

/* circular complex Gaussian, E|z|^2 = 1 */
static double complex cnrand(void)
{
    return (nrand() + I * nrand()) * sqrt(0.5);
}

static double corr_at(const double complex *ck, const wm_sync *sy, double tu, double tv)
{
    double acc = 0;
    for (int k = 0; k < WM_SYNC_K; k++) {
        double ph = -2.0 * M_PI * (sy->p[k] * tu + sy->q[k] * tv) / WM_CELLS - sy->phase[k];
        acc += creal(ck[k] * cexp(I * ph));
    }
    return acc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: nullmodel N_DRAWS [SEED]\n");
        return 2;
    }
    long n = atol(argv[1]);
    rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) * 2654435761ull + 1 : 88172645463325252ull;
    if (n < 1 || sodium_init() < 0) {
        return 2;
    }
    uint8_t key[WM_KEYBYTES];
    randombytes_buf(key, sizeof key);
    wm_sync sy;
    wm_sync_init(&sy, key);
    static double complex eu[WM_SYNC_K][G], ev[WM_SYNC_K][G];
    for (int k = 0; k < WM_SYNC_K; k++) {
        for (int t = 0; t < G; t++) {
            eu[k][t] = cexp(-I * (2.0 * M_PI * sy.p[k] * (t * 0.5) / WM_CELLS + sy.phase[k]));
            ev[k][t] = cexp(-I * 2.0 * M_PI * sy.q[k] * (t * 0.5) / WM_CELLS);
        }
    }
    printf("draw,z\n");
    for (long d = 0; d < n; d++) {
        double complex ck[WM_SYNC_K];
        double noise = 0;
        for (int k = 0; k < WM_SYNC_K; k++) {
            ck[k] = cnrand();
            double complex r1 = cnrand(), r2 = cnrand();
            noise += 0.5 * (creal(r1 * conj(r1)) + creal(r2 * conj(r2)));
        }
        double best = -INFINITY, bu = 0, bv = 0;
        for (int tu = 0; tu < G; tu++) {
            double complex dk[WM_SYNC_K];
            for (int k = 0; k < WM_SYNC_K; k++) {
                dk[k] = ck[k] * eu[k][tu];
            }
            for (int tv = 0; tv < G; tv++) {
                double acc = 0;
                for (int k = 0; k < WM_SYNC_K; k++) {
                    acc += creal(dk[k] * ev[k][tv]);
                }
                if (acc > best) {
                    best = acc;
                    bu = tu * 0.5;
                    bv = tv * 0.5;
                }
            }
        }
        for (int i = -5; i <= 5; i++) {
            for (int j = -5; j <= 5; j++) {
                double c = corr_at(ck, &sy, bu + i * 0.05, bv + j * 0.05);
                if (c > best) {
                    best = c;
                }
            }
        }
        printf("%ld,%.4f\n", d, best / sqrt(noise / 2.0));
    }
    return 0;
}

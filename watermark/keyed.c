/* watermark: everything drawn from a key (sync frequencies and phases, the
 * vendor's spreading sequence). ChaCha20 keystreams from libsodium, with a
 * fixed nonce per purpose so each purpose has its own stream. */
#include "wm.h"

#include <math.h>
#include <string.h>

#include <sodium.h>

typedef struct kstream {
    uint8_t buf[4096];
    size_t pos;
    uint64_t block;
    uint8_t key[WM_KEYBYTES];
    uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
} kstream;

static void ks_refill(kstream *ks)
{
    /* crypto_stream_chacha20_xor_ic gives keystream from block counter ic. */
    memset(ks->buf, 0, sizeof ks->buf);
    crypto_stream_chacha20_xor_ic(ks->buf, ks->buf, sizeof ks->buf, ks->nonce, ks->block, ks->key);
    ks->block += sizeof ks->buf / 64;
    ks->pos = 0;
}

static void ks_init(kstream *ks, const uint8_t key[WM_KEYBYTES], const char purpose[8])
{
    memcpy(ks->key, key, WM_KEYBYTES);
    memcpy(ks->nonce, purpose, crypto_stream_chacha20_NONCEBYTES);
    ks->block = 0;
    ks_refill(ks);
}

static uint32_t ks_u32(kstream *ks)
{
    if (ks->pos + 4 > sizeof ks->buf) {
        ks_refill(ks);
    }
    const uint8_t *p = ks->buf + ks->pos;
    ks->pos += 4;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void ks_wipe(kstream *ks)
{
    sodium_memzero(ks, sizeof *ks);
}

/* Frequencies on the axes collide with the cross that image borders and
 * JPEG's block grid leave in every spectrum; keep off them. A frequency and
 * its mirror image (-p, q) are never both chosen, and chosen frequencies
 * keep apart, so that a mirrored copy cannot match the template. */
static bool freq_ok(const wm_sync *s, int n, int p, int q, int min_d2)
{
    if (abs(p) < 2 || abs(q) < 2) {
        return false;
    }
    for (int k = 0; k < n; k++) {
        int dp = s->p[k] - p, dq = s->q[k] - q;
        int mp = -s->p[k] - p, mq = s->q[k] - q;
        if (dp * dp + dq * dq < min_d2 || mp * mp + mq * mq < min_d2) {
            return false;
        }
    }
    return true;
}

void wm_sync_init(wm_sync *s, const uint8_t sync_key[WM_KEYBYTES])
{
    kstream ks;
    int cand_p[2048], cand_q[2048];
    int nc = 0;
    int r = (int)WM_SYNC_RMAX;

    /* Candidates in the upper half plane (a real signal's spectrum is
     * symmetric, so (p, q) and (-p, -q) are one frequency). */
    for (int q = 1; q <= r; q++) {
        for (int p = -r; p <= r; p++) {
            double rad = sqrt((double)(p * p + q * q));
            if (rad >= WM_SYNC_RMIN && rad <= WM_SYNC_RMAX) {
                cand_p[nc] = p;
                cand_q[nc] = q;
                nc++;
            }
        }
    }
    ks_init(&ks, sync_key, "ctsyncf1");
    /* Keyed Fisher-Yates, then take candidates in that order. */
    for (int i = nc - 1; i > 0; i--) {
        int j = (int)(ks_u32(&ks) % (uint32_t)(i + 1));
        int tp = cand_p[i], tq = cand_q[i];
        cand_p[i] = cand_p[j];
        cand_q[i] = cand_q[j];
        cand_p[j] = tp;
        cand_q[j] = tq;
    }
    /* Keep chosen peaks (and their mirror images) two bins apart; should a
     * key's order not allow that for all of them, the rest only need to be
     * distinct. Either way exactly WM_SYNC_K are chosen: the band holds
     * several hundred candidates. */
    int n = 0;
    for (int pass = 0; pass < 2 && n < WM_SYNC_K; pass++) {
        for (int i = 0; i < nc && n < WM_SYNC_K; i++) {
            if (freq_ok(s, n, cand_p[i], cand_q[i], pass == 0 ? 4 : 1)) {
                s->p[n] = cand_p[i];
                s->q[n] = cand_q[i];
                n++;
            }
        }
    }
    for (int k = 0; k < WM_SYNC_K; k++) {
        s->phase[k] = (float)(2.0 * M_PI * (ks_u32(&ks) / 4294967296.0));
    }
    ks_wipe(&ks);
}

float wm_sync_at(const wm_sync *s, double u, double v)
{
    double acc = 0;
    for (int k = 0; k < WM_SYNC_K; k++) {
        acc += cos(2.0 * M_PI * (s->p[k] * u + s->q[k] * v) / WM_CELLS + s->phase[k]);
    }
    return (float)(acc / sqrt(WM_SYNC_K / 2.0));
}

void wm_spread_init(wm_spread *sp, const uint8_t vendor_key[WM_KEYBYTES])
{
    kstream ks;
    uint16_t perm[WM_NCELLS];

    ks_init(&ks, vendor_key, "ctspread");
    for (int i = 0; i < WM_NCELLS; i += 32) {
        uint32_t bits = ks_u32(&ks);
        for (int b = 0; b < 32; b++) {
            sp->pn[i + b] = (bits >> b) & 1u ? 1 : -1;
        }
    }
    for (int i = 0; i < WM_NCELLS; i++) {
        perm[i] = (uint16_t)i;
    }
    for (int i = WM_NCELLS - 1; i > 0; i--) {
        int j = (int)(ks_u32(&ks) % (uint32_t)(i + 1));
        uint16_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    /* Round robin over a keyed order: every coded bit gets 15 or 16 cells
     * scattered over the tile, so a local loss costs each bit a little. */
    for (int i = 0; i < WM_NCELLS; i++) {
        sp->bit_of_cell[perm[i]] = (uint16_t)(i % WM_CODED_BITS);
    }
    ks_wipe(&ks);
}

/* watermark: payload authentication and the convolutional code. */
#include "wm.h"

#include <float.h>
#include <string.h>

#include <sodium.h>

/* Generators of the K=7 rate-1/3 code (octal 133, 171, 165), as used by
 * LTE's tail-biting code; here zero-terminated. */
static const unsigned GEN[3] = {0133, 0171, 0165};

static unsigned parity7(unsigned x)
{
    return (unsigned)__builtin_parity(x);
}

static void tag_of(const uint8_t key[WM_KEYBYTES], uint32_t serial, uint8_t tag[6])
{
    uint8_t msg[12] = {'c', 't', 'p', 'a', 'y', 'l', (uint8_t)WM_ALGO_VERSION, 0};
    uint8_t out[16];
    msg[8] = (uint8_t)serial;
    msg[9] = (uint8_t)(serial >> 8);
    msg[10] = (uint8_t)(serial >> 16);
    msg[11] = (uint8_t)(serial >> 24);
    crypto_generichash(out, sizeof out, msg, sizeof msg, key, WM_KEYBYTES);
    memcpy(tag, out, 6);
}

void wm_payload_make(const uint8_t vendor_key[WM_KEYBYTES], uint32_t serial,
                     uint8_t info[WM_INFO_BITS])
{
    uint8_t tag[6];
    tag_of(vendor_key, serial, tag);
    for (int i = 0; i < WM_SERIAL_BITS; i++) {
        info[i] = (serial >> i) & 1u;
    }
    for (int i = 0; i < WM_TAG_BITS; i++) {
        info[WM_SERIAL_BITS + i] = (tag[i / 8] >> (i % 8)) & 1u;
    }
}

bool wm_payload_check(const uint8_t vendor_key[WM_KEYBYTES], const uint8_t info[WM_INFO_BITS],
                      uint32_t *serial)
{
    uint32_t s = 0;
    uint8_t tag[6], got[6] = {0};
    for (int i = 0; i < WM_SERIAL_BITS; i++) {
        s |= (uint32_t)(info[i] & 1u) << i;
    }
    for (int i = 0; i < WM_TAG_BITS; i++) {
        got[i / 8] |= (uint8_t)((info[WM_SERIAL_BITS + i] & 1u) << (i % 8));
    }
    tag_of(vendor_key, s, tag);
    if (sodium_memcmp(tag, got, sizeof tag) != 0) {
        return false;
    }
    *serial = s;
    return true;
}

void wm_code_encode(const uint8_t info[WM_INFO_BITS], uint8_t coded[WM_CODED_BITS])
{
    unsigned reg = 0;
    int o = 0;
    for (int i = 0; i < WM_INFO_BITS + WM_CODE_K - 1; i++) {
        unsigned b = i < WM_INFO_BITS ? (info[i] & 1u) : 0u;
        reg = ((reg << 1) | b) & 0x7fu;
        for (int g = 0; g < 3; g++) {
            coded[o++] = (uint8_t)parity7(reg & GEN[g]);
        }
    }
}

#define NSTATES 64
#define NSTEPS  (WM_INFO_BITS + WM_CODE_K - 1)

void wm_code_decode(const float soft[WM_CODED_BITS], uint8_t info[WM_INFO_BITS])
{
    float metric[NSTATES], next[NSTATES];
    uint8_t from[NSTEPS][NSTATES]; /* previous state's high bit, per step */
    uint8_t outbits[128][3];

    for (unsigned reg = 0; reg < 128; reg++) {
        for (int g = 0; g < 3; g++) {
            outbits[reg][g] = (uint8_t)parity7(reg & GEN[g]);
        }
    }
    for (int s = 0; s < NSTATES; s++) {
        metric[s] = s == 0 ? 0.0f : -FLT_MAX / 4;
    }
    for (int t = 0; t < NSTEPS; t++) {
        const float *y = soft + 3 * t;
        for (int s = 0; s < NSTATES; s++) {
            next[s] = -FLT_MAX;
        }
        for (int s = 0; s < NSTATES; s++) {
            if (metric[s] <= -FLT_MAX / 8) {
                continue;
            }
            for (unsigned b = 0; b < 2; b++) {
                if (t >= WM_INFO_BITS && b == 1) {
                    continue; /* tail bits are zero */
                }
                unsigned reg = ((unsigned)s << 1) | b;
                unsigned ns = reg & 0x3fu;
                float m = metric[s];
                for (int g = 0; g < 3; g++) {
                    m += outbits[reg][g] ? -y[g] : y[g];
                }
                if (m > next[ns]) {
                    next[ns] = m;
                    from[t][ns] = (uint8_t)((unsigned)s >> 5);
                }
            }
        }
        memcpy(metric, next, sizeof metric);
    }
    /* Terminated in state 0; walk back. The input bit at step t is the low
     * bit of the state after it. */
    unsigned s = 0;
    for (int t = NSTEPS - 1; t >= 0; t--) {
        if (t < WM_INFO_BITS) {
            info[t] = (uint8_t)(s & 1u);
        }
        s = (s >> 1) | ((unsigned)from[t][s] << 5);
    }
}

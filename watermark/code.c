/* watermark: payload authentication and the convolutional code. */
#include "wm.h"

#include <float.h>
#include <stdlib.h>
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

/* List Viterbi (parallel form, Seshadri and Sundberg 1994): every state
 * keeps its `list` best paths, so the decoder returns the best few
 * codewords, not only the most likely one. The tag then picks the right
 * one, which buys about a decibel on marks just under the threshold; each
 * path tried is one more chance for noise to pass the tag, and the caller
 * counts it. */
#define LIST_MAX 16

/* Traceback entry: the predecessor's state (bits 0-5) and rank (6-9), and
 * the input bit (10). */
typedef uint16_t lv_entry;

int wm_code_decode_list(const float soft[WM_CODED_BITS], int list, uint8_t (*info)[WM_INFO_BITS])
{
    static const int STEPS = WM_INFO_BITS + WM_CODE_K - 1;
    float cur[NSTATES][LIST_MAX], nxt[NSTATES][LIST_MAX];
    int ncur[NSTATES], nnxt[NSTATES];
    uint8_t outbits[128][3];
    int found = 0;

    if (list < 1) {
        return 0;
    }
    if (list > LIST_MAX) {
        list = LIST_MAX;
    }
    /* tr[t][state][rank], `list` ranks a state. */
    lv_entry *tr = malloc(sizeof *tr * (size_t)STEPS * NSTATES * (size_t)list);
    if (tr == NULL) {
        return -1;
    }
    for (unsigned reg = 0; reg < 128; reg++) {
        for (int g = 0; g < 3; g++) {
            outbits[reg][g] = (uint8_t)parity7(reg & GEN[g]);
        }
    }
    for (int st = 0; st < NSTATES; st++) {
        ncur[st] = 0;
    }
    cur[0][0] = 0.0f;
    ncur[0] = 1;
    for (int t = 0; t < STEPS; t++) {
        const float *y = soft + 3 * t;
        lv_entry *trt = tr + (size_t)t * NSTATES * (size_t)list;
        /* State ns is reached from a = ns >> 1 and b = a | 32 with input
         * bit ns & 1. Each predecessor's list is sorted, best first, and
         * a branch adds the same metric to all of it, so the new list is
         * a merge of the two; on a tie a's path comes first (the order a
         * path-by-path insertion in state order gives). */
        for (int ns = 0; ns < NSTATES; ns++) {
            unsigned bit = (unsigned)ns & 1u;
            nnxt[ns] = 0;
            if (t >= WM_INFO_BITS && bit == 1) {
                continue; /* tail bits are zero */
            }
            int pa = ns >> 1, pb = pa | 32;
            const uint8_t *oa = outbits[((unsigned)pa << 1) | bit];
            const uint8_t *ob = outbits[((unsigned)pb << 1) | bit];
            float a0 = oa[0] ? -y[0] : y[0], a1 = oa[1] ? -y[1] : y[1], a2 = oa[2] ? -y[2] : y[2];
            float b0 = ob[0] ? -y[0] : y[0], b1 = ob[1] ? -y[1] : y[1], b2 = ob[2] ? -y[2] : y[2];
            int na = ncur[pa], nb = ncur[pb], i = 0, j = 0, n = 0;
            float ma = 0, mb = 0;
            if (i < na) {
                ma = ((cur[pa][i] + a0) + a1) + a2;
            }
            if (j < nb) {
                mb = ((cur[pb][j] + b0) + b1) + b2;
            }
            while (n < list && (i < na || j < nb)) {
                if (j >= nb || (i < na && ma >= mb)) {
                    nxt[ns][n] = ma;
                    trt[ns * list + n] = (lv_entry)((unsigned)pa | (unsigned)i << 6 | bit << 10);
                    i++;
                    if (i < na) {
                        ma = ((cur[pa][i] + a0) + a1) + a2;
                    }
                } else {
                    nxt[ns][n] = mb;
                    trt[ns * list + n] = (lv_entry)((unsigned)pb | (unsigned)j << 6 | bit << 10);
                    j++;
                    if (j < nb) {
                        mb = ((cur[pb][j] + b0) + b1) + b2;
                    }
                }
                n++;
            }
            nnxt[ns] = n;
        }
        memcpy(cur, nxt, sizeof cur);
        memcpy(ncur, nnxt, sizeof ncur);
    }
    /* Terminated in state 0: its list, best first. */
    for (int r = 0; r < ncur[0]; r++) {
        int st = 0, rank = r;
        for (int t = STEPS - 1; t >= 0; t--) {
            lv_entry e = tr[((size_t)t * NSTATES + (size_t)st) * (size_t)list + (size_t)rank];
            if (t < WM_INFO_BITS) {
                info[found][t] = (uint8_t)(e >> 10 & 1u);
            }
            st = e & 0x3f;
            rank = e >> 6 & 0xf;
        }
        found++;
    }
    free(tr);
    return found;
}

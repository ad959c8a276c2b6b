/* Minimal test harness: CHECK records a failure and goes on; main returns
 * the failure count. Output ends with "N passed, N failed". */
#ifndef CT_TESTUTIL_H
#define CT_TESTUTIL_H

#include <stdio.h>

extern int tu_pass;
extern int tu_fail;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (cond) {                                                                     \
            tu_pass++;                                                                  \
        } else {                                                                        \
            tu_fail++;                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
        }                                                                               \
    } while (0)

#define CHECK_ST(expr, want)                                                            \
    do {                                                                                \
        int got_ = (int)(expr);                                                         \
        if (got_ == (int)(want)) {                                                      \
            tu_pass++;                                                                  \
        } else {                                                                        \
            tu_fail++;                                                                  \
            fprintf(stderr, "%s:%d: %s returned %d, wanted %d\n", __FILE__, __LINE__,   \
                    #expr, got_, (int)(want));                                          \
        }                                                                               \
    } while (0)

/* A fresh empty folder under $CT_TMP (or /tmp) for this test; static buffer. */
const char *tu_tmpdir(const char *tag);
/* Path of a sample file (under $CT_SAMPLES); static buffer. */
const char *tu_sample(const char *rel);
/* Print the summary and return the exit status. */
int tu_done(const char *name);

#endif

#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int tu_pass;
int tu_fail;

const char *tu_tmpdir(const char *tag)
{
    static char buf[4096];
    const char *base = getenv("CT_TMP");
    char cmd[2 * sizeof buf + 32];
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    int n = snprintf(buf, sizeof buf, "%s/%s.%ld", base, tag, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof buf) {
        fprintf(stderr, "temporary folder name too long\n");
        exit(2);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot make %s\n", buf);
        exit(2);
    }
    return buf;
}

const char *tu_sample(const char *rel)
{
    static char buf[4096];
    const char *base = getenv("CT_SAMPLES");
    if (base == NULL || base[0] == '\0') {
        base = "samples";
    }
    snprintf(buf, sizeof buf, "%s/%s", base, rel);
    return buf;
}

int tu_done(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, tu_pass, tu_fail);
    return tu_fail == 0 ? 0 : 1;
}

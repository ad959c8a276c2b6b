/* hello: the smallest program on libceltrace. Prints the library version,
 * opens a studio home and lists its vendors. No passphrase is needed to read
 * the registry.
 *
 *   cc hello.c $(pkg-config --cflags --libs celtrace) -o hello
 *   ./hello ~/.celtrace
 */
#include <stdio.h>

#include <celtrace/celtrace.h>

int main(int argc, char **argv)
{
    ct_ctx *ctx = NULL;
    ct_vendor *vendors = NULL;
    size_t count = 0;
    ct_status st;
    int rc = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s HOME\n", argv[0]);
        return 2;
    }
    printf("celtrace %s\n", ct_version_string());
    if (ct_version_number() != CT_VERSION_NUMBER) {
        fprintf(stderr, "hello: built against celtrace %s, running with %s\n",
                CT_VERSION_STRING, ct_version_string());
        return 1;
    }
    st = ct_ctx_new(argv[1], &ctx);
    if (st != CT_OK) {
        fprintf(stderr, "hello: %s\n", ct_strerror(st));
        return 1;
    }
    st = ct_vendor_list(ctx, &vendors, &count);
    if (st != CT_OK) {
        fprintf(stderr, "hello: %s\n", ct_errmsg(ctx));
        goto done;
    }
    printf("%zu vendors in %s\n", count, ct_home(ctx));
    for (size_t i = 0; i < count; i++) {
        printf("%u %s%s\n", vendors[i].id, vendors[i].name,
               vendors[i].revoked_at != 0 ? " (revoked)" : "");
    }
    rc = 0;
done:
    ct_free(vendors);
    ct_ctx_free(ctx);
    return rc;
}

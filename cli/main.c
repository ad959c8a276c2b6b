/* celtrace: the command. A thin layer over the library: parse arguments,
 * get the passphrase, call <celtrace/celtrace.h>, print text or JSON, map
 * status to the exit code (0 ok, 1 verify found nothing, 2 error). */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <celtrace/celtrace.h>

#define EXIT_NOTFOUND 1
#define EXIT_ERR 2
#define PASS_MAX 1024

typedef struct cli {
    const char *home;
    const char *pass_file;
    unsigned long long max_pixels;
    ct_ctx *ctx;
} cli;

static int die(const char *fmt, ...)
{
    va_list ap;
    fputs("celtrace: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_ERR;
}

/* Report a library failure as one line and return exit code 2. */
static int fail(const cli *c, ct_status st)
{
    const char *msg = c->ctx != NULL ? ct_errmsg(c->ctx) : "";
    return die("%s", msg[0] != '\0' ? msg : ct_strerror(st));
}

static int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fputs("celtrace: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'celtrace %s--help')\n", cmd);
    return EXIT_ERR;
}


/* Print s as a JSON string (UTF-8 passed through, controls escaped). */
static void json_string_out(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p != 0; p++) {
        if (*p == '"' || *p == '\\') {
            printf("\\%c", *p);
        } else if (*p < 0x20) {
            printf("\\u%04x", *p);
        } else {
            putchar(*p);
        }
    }
    putchar('"');
}

/* ---- help texts -------------------------------------------------------- */

static const char MAIN_HELP[] =
    "celtrace - per-vendor forensic watermarking and provenance tracking\n"
    "\n"
    "Usage: celtrace [--home DIR] [--passphrase-file FILE] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  init --studio NAME          create the studio keystore and registry\n"
    "  vendor add NAME [...]       onboard a vendor (needs the passphrase)\n"
    "  vendor list|show|revoke     read or revoke vendors\n"
    "  keys export-public          print the studio's public signing key\n"
    "  embed --vendor V IN -o OUT  write a copy of IN marked for vendor V\n"
    "  verify FILE|DIR ...         name the vendor a leaked file was issued to\n"
    "\n"
    "Options:\n"
    "  --home DIR              studio home (default: $CELTRACE_HOME or ~/.celtrace)\n"
    "  --passphrase-file FILE  read the passphrase from the first line of FILE\n"
    "  --max-pixels N          refuse images larger than N pixels (default 300000000)\n"
    "  --version               print the version\n"
    "  --help                  this text; 'celtrace COMMAND --help' for a command\n"
    "\n"
    "The passphrase comes from --passphrase-file, else $CELTRACE_PASSPHRASE, else a\n"
    "prompt on the terminal.\n"
    "\n"
    "Exit codes: 0 success, 1 verify found no mark, 2 usage, input, key or I/O error.\n"
    "\n"
    "Example:\n"
    "  celtrace init --studio \"Blue Heron Animation\"\n"
    "  celtrace vendor add \"Inkwell Studio\" --country KR --contact ops@inkwell.example\n"
    "  celtrace embed --vendor \"Inkwell Studio\" sheet.png -o out/sheet.png\n"
    "  celtrace verify leaked.jpg\n";

static const char EMBED_HELP[] =
    "Usage: celtrace embed --vendor NAME|ID INPUT -o OUTPUT [--asset NAME]\n"
    "                      [--strength S] [--quality Q] [--json]\n"
    "\n"
    "Write a copy of INPUT (PNG or JPEG) that carries an invisible mark keyed to\n"
    "the vendor. The output looks the same as the input; its format follows\n"
    "OUTPUT's extension (.png, .jpg, .jpeg). Alpha, bit depth, PNG chunks and\n"
    "JPEG markers are kept; a JPEG is re-encoded at its own quality unless\n"
    "--quality is given. Palette PNGs are written as RGB(A), since the marked\n"
    "pixels no longer fit a palette. The output appears only when complete.\n"
    "\n"
    "  --vendor V     vendor name or id (see 'celtrace vendor list')\n"
    "  -o, --output   the marked copy to write (never the input itself)\n"
    "  --asset NAME   asset name reported with the issue (default: INPUT's name)\n"
    "  --strength S   mark strength, 0.25..4 (default 1: the measured setting)\n"
    "  --quality Q    JPEG output quality 1..100\n"
    "  --json         print the result as one JSON object\n"
    "\n"
    "Example:\n"
    "  celtrace embed --vendor \"Inkwell Studio\" ep12/sc04_bg.png -o out/sc04_bg.png\n";

static const char VERIFY_HELP[] =
    "Usage: celtrace verify [--json] FILE|DIR ...\n"
    "\n"
    "Trace leaked files back to the vendor they were issued to, from the file\n"
    "alone (no original needed), after re-export, resizing, cropping, rotation,\n"
    "colour changes or screenshots. Reads PNG, JPEG, WebP, TIFF, BMP, GIF and the\n"
    "other still formats FFmpeg decodes. Folders are searched recursively.\n"
    "A vendor is named only when its authenticated mark is found; the verdict\n"
    "gives the probability that an unmarked file would have been named.\n"
    "\n"
    "  --json   one JSON object per file and line: file, status (identified,\n"
    "           not_found, error), vendor, vendor_id, false_positive_probability,\n"
    "           serial, and the detection details\n"
    "\n"
    "Exit codes: 0 a vendor was named for at least one file, 1 no mark found in\n"
    "any file, 2 an error (and nothing identified).\n"
    "\n"
    "Example:\n"
    "  celtrace verify --json leak_dump/ > verdicts.jsonl\n";

static const char INIT_HELP[] =
    "Usage: celtrace init --studio NAME\n"
    "\n"
    "Create the studio home: a master secret and an Ed25519 signing key sealed\n"
    "with your passphrase (Argon2id + XChaCha20-Poly1305), the public key in the\n"
    "clear, and the registry database. Refuses to overwrite an existing keystore.\n"
    "On a terminal the passphrase is asked twice.\n"
    "\n"
    "Example:\n"
    "  CELTRACE_HOME=/srv/celtrace celtrace init --studio \"Blue Heron Animation\"\n";

static const char VENDOR_HELP[] =
    "Usage: celtrace vendor add NAME [--country CC] [--contact TEXT] [--json]\n"
    "       celtrace vendor list [--json]\n"
    "       celtrace vendor show NAME|ID [--json]\n"
    "       celtrace vendor revoke NAME|ID [--json]\n"
    "\n"
    "Vendors receive marked copies. Names are free UTF-8 text, unique, not empty\n"
    "and not all digits (digits alone mean a vendor id). 'add' and 'revoke' need\n"
    "the passphrase. A revoked vendor can no longer receive assets, but files\n"
    "issued to it stay traceable. With --json each vendor is printed as one JSON\n"
    "object per line.\n"
    "\n"
    "Examples:\n"
    "  celtrace vendor add \"Inkwell Studio\" --country KR --json\n"
    "  celtrace vendor show 3\n"
    "  celtrace vendor revoke \"Inkwell Studio\"\n";

static const char KEYS_HELP[] =
    "Usage: celtrace keys export-public\n"
    "\n"
    "Print the studio's Ed25519 public key and name. Give it to anyone who must\n"
    "check exported ledger records; it reveals nothing secret.\n"
    "\n"
    "Example:\n"
    "  celtrace keys export-public > studio.pub\n";

/* ---- passphrase ---------------------------------------------------------- */

static int read_pass_file(const char *path, char *buf, size_t cap, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return die("%s: %s", path, strerror(errno));
    }
    size_t n = fread(buf, 1, cap - 1, f);
    int err = ferror(f);
    fclose(f);
    if (err) {
        return die("%s: read error", path);
    }
    buf[n] = '\0';
    n = strcspn(buf, "\r\n"); /* the first line is the passphrase */
    buf[n] = '\0';
    if (n == 0) {
        return die("%s: the passphrase file is empty", path);
    }
    *len = n;
    return 0;
}

static int prompt(const char *question, char *buf, size_t cap, size_t *len)
{
    FILE *tty = fopen("/dev/tty", "r+");
    struct termios old, noecho;
    if (tty == NULL) {
        return die("no passphrase: set CELTRACE_PASSPHRASE or use --passphrase-file FILE");
    }
    int fd = fileno(tty);
    fputs(question, tty);
    fflush(tty);
    int have_term = tcgetattr(fd, &old) == 0;
    if (have_term) {
        noecho = old;
        noecho.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fd, TCSAFLUSH, &noecho);
    }
    char *r = fgets(buf, (int)cap, tty);
    if (have_term) {
        tcsetattr(fd, TCSAFLUSH, &old);
    }
    fputc('\n', tty);
    fclose(tty);
    if (r == NULL) {
        return die("no passphrase entered");
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    *len = strlen(buf);
    if (*len == 0) {
        return die("the passphrase must not be empty");
    }
    return 0;
}

/* Get the passphrase: --passphrase-file, $CELTRACE_PASSPHRASE, or a prompt
 * (twice when confirm is set). */
static int get_pass(const cli *c, int confirm, char *buf, size_t cap, size_t *len)
{
    if (c->pass_file != NULL) {
        return read_pass_file(c->pass_file, buf, cap, len);
    }
    const char *env = getenv("CELTRACE_PASSPHRASE");
    if (env != NULL) {
        size_t n = strlen(env);
        if (n == 0) {
            return die("CELTRACE_PASSPHRASE is empty");
        }
        if (n >= cap) {
            return die("the passphrase is longer than %d bytes", (int)cap - 1);
        }
        memcpy(buf, env, n + 1);
        *len = n;
        return 0;
    }
    int rc = prompt("celtrace passphrase: ", buf, cap, len);
    if (rc != 0 || !confirm) {
        return rc;
    }
    char again[PASS_MAX];
    size_t len2 = 0;
    rc = prompt("repeat passphrase: ", again, sizeof again, &len2);
    if (rc == 0 && (len2 != *len || memcmp(again, buf, len2) != 0)) {
        rc = die("the passphrases do not match");
    }
    explicit_bzero(again, sizeof again);
    return rc;
}

static int unlock(cli *c)
{
    char pass[PASS_MAX];
    size_t len = 0;
    int rc = get_pass(c, 0, pass, sizeof pass, &len);
    if (rc == 0) {
        ct_status st = ct_unlock(c->ctx, pass, len);
        if (st != CT_OK) {
            rc = fail(c, st);
        }
    }
    explicit_bzero(pass, sizeof pass);
    return rc;
}

/* ---- shared option parsing ----------------------------------------------- */

enum {
    OPT_HOME = 1000,
    OPT_PASSFILE,
    OPT_JSON,
    OPT_STUDIO,
    OPT_COUNTRY,
    OPT_CONTACT,
    OPT_HELP,
    OPT_VENDOR,
    OPT_ASSET,
    OPT_STRENGTH,
    OPT_QUALITY,
    OPT_MAXPIX,
};

/* Options every command accepts, so they may come before or after it. */
#define COMMON_OPTS                                                                          \
    {"home", required_argument, NULL, OPT_HOME},                                             \
        {"passphrase-file", required_argument, NULL, OPT_PASSFILE},                          \
        {"help", no_argument, NULL, OPT_HELP},                                               \
        {"max-pixels", required_argument, NULL, OPT_MAXPIX},                                 \
    {                                                                                        \
        "json", no_argument, NULL, OPT_JSON                                                  \
    }

static int common_opt(cli *c, int opt, int *json)
{
    switch (opt) {
    case OPT_HOME:
        c->home = optarg;
        return 1;
    case OPT_PASSFILE:
        c->pass_file = optarg;
        return 1;
    case OPT_JSON:
        *json = 1;
        return 1;
    case OPT_MAXPIX: {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(optarg, &end, 10);
        if (errno != 0 || end == optarg || *end != '\0' || v == 0 || optarg[0] == '-') {
            c->max_pixels = 0;
            return -1;
        }
        c->max_pixels = v;
        return 1;
    }
    default:
        return 0;
    }
}

static int open_ctx(cli *c)
{
    ct_status st = ct_ctx_new(c->home, &c->ctx);
    if (st != CT_OK) {
        return die("cannot find a home folder: set CELTRACE_HOME or use --home DIR");
    }
    if (c->max_pixels != 0) {
        ct_set_max_pixels(c->ctx, c->max_pixels);
    }
    return 0;
}

/* ---- commands ------------------------------------------------------------- */


static int cmd_init(cli *c, int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS, {"studio", required_argument, NULL, OPT_STUDIO},
                                         {NULL, 0, NULL, 0}};
    const char *studio = NULL;
    int json = 0, opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int co = common_opt(c, opt, &json);
        if (co < 0) {
            return usage_error("", "--max-pixels takes a positive whole number");
        }
        if (co > 0) {
            continue;
        }
        if (opt == OPT_HELP) {
            fputs(INIT_HELP, stdout);
            return 0;
        }
        if (opt == OPT_STUDIO) {
            studio = optarg;
            continue;
        }
        return usage_error("init ", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind != argc) {
        return usage_error("init ", "unexpected argument '%s'", argv[optind]);
    }
    if (studio == NULL) {
        return usage_error("init ", "init needs --studio NAME");
    }
    int rc = open_ctx(c);
    if (rc != 0) {
        return rc;
    }
    char pass[PASS_MAX];
    size_t len = 0;
    rc = get_pass(c, 1, pass, sizeof pass, &len);
    if (rc == 0) {
        ct_status st = ct_init(c->ctx, studio, pass, len);
        if (st != CT_OK) {
            rc = fail(c, st);
        }
    }
    explicit_bzero(pass, sizeof pass);
    if (rc != 0) {
        return rc;
    }
    if (json) {
        fputs("{\"home\":", stdout);
        json_string_out(ct_home(c->ctx));
        fputs(",\"studio\":", stdout);
        json_string_out(studio);
        fputs("}\n", stdout);
    } else {
        printf("Initialised studio \"%s\" in %s\n", studio, ct_home(c->ctx));
        printf("Next: celtrace vendor add NAME\n");
    }
    return 0;
}

static void print_time(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, 32, "%Y-%m-%d %H:%M:%SZ", &tm);
}

static int print_vendor(const cli *c, const ct_vendor *v, int json, int detail)
{
    if (json) {
        char *s = NULL;
        ct_status st = ct_vendor_json(v, &s);
        if (st != CT_OK) {
            return fail(c, st);
        }
        puts(s);
        ct_free(s);
        return 0;
    }
    char created[32], revoked[32];
    print_time(v->created_at, created);
    print_time(v->revoked_at, revoked);
    if (!detail) {
        printf("%6u  %-32s  %-2s  %s%s\n", v->id, v->name, v->country[0] ? v->country : "--",
               created, v->revoked_at ? "  revoked" : "");
        return 0;
    }
    printf("id:       %u\nname:     %s\ncountry:  %s\ncontact:  %s\nepoch:    %u\n"
           "created:  %s\nstatus:   %s%s\n",
           v->id, v->name, v->country, v->contact, v->epoch, created,
           v->revoked_at ? "revoked " : "active", v->revoked_at ? revoked : "");
    return 0;
}

static int cmd_vendor(cli *c, int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS,
                                         {"country", required_argument, NULL, OPT_COUNTRY},
                                         {"contact", required_argument, NULL, OPT_CONTACT},
                                         {NULL, 0, NULL, 0}};
    const char *country = NULL, *contact = NULL;
    int json = 0, opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int co = common_opt(c, opt, &json);
        if (co < 0) {
            return usage_error("", "--max-pixels takes a positive whole number");
        }
        if (co > 0) {
            continue;
        }
        switch (opt) {
        case OPT_HELP:
            fputs(VENDOR_HELP, stdout);
            return 0;
        case OPT_COUNTRY:
            country = optarg;
            break;
        case OPT_CONTACT:
            contact = optarg;
            break;
        default:
            return usage_error("vendor ", "unknown option '%s'", argv[optind - 1]);
        }
    }
    int nargs = argc - optind;
    if (nargs < 1) {
        return usage_error("vendor ", "vendor needs add, list, show or revoke");
    }
    const char *sub = argv[optind];
    const char *arg = nargs >= 2 ? argv[optind + 1] : NULL;
    int want = strcmp(sub, "list") == 0 ? 1 : 2;
    if (strcmp(sub, "add") != 0 && strcmp(sub, "list") != 0 && strcmp(sub, "show") != 0 &&
        strcmp(sub, "revoke") != 0) {
        return usage_error("vendor ", "unknown vendor command '%s'", sub);
    }
    if (nargs != want) {
        return usage_error("vendor ", "'vendor %s' takes %s", sub,
                           want == 1 ? "no argument" : "one vendor name or id");
    }
    if ((country != NULL || contact != NULL) && strcmp(sub, "add") != 0) {
        return usage_error("vendor ", "--country and --contact go with 'vendor add'");
    }
    int rc = open_ctx(c);
    if (rc != 0) {
        return rc;
    }
    ct_vendor v;
    ct_status st;
    if (strcmp(sub, "list") == 0) {
        ct_vendor *all = NULL;
        size_t n = 0;
        st = ct_vendor_list(c->ctx, &all, &n);
        if (st != CT_OK) {
            return fail(c, st);
        }
        if (!json) {
            printf("%6s  %-32s  %-2s  %s\n", "ID", "NAME", "CC", "ADDED");
        }
        for (size_t i = 0; i < n && rc == 0; i++) {
            rc = print_vendor(c, &all[i], json, 0);
        }
        ct_free(all);
        return rc;
    }
    if (strcmp(sub, "show") == 0) {
        st = ct_vendor_find(c->ctx, arg, &v);
        return st != CT_OK ? fail(c, st) : print_vendor(c, &v, json, 1);
    }
    rc = unlock(c);
    if (rc != 0) {
        return rc;
    }
    if (strcmp(sub, "add") == 0) {
        st = ct_vendor_add(c->ctx, arg, country, contact, &v);
    } else {
        st = ct_vendor_revoke(c->ctx, arg, &v);
    }
    if (st != CT_OK) {
        return fail(c, st);
    }
    if (!json) {
        printf("%s vendor %u: %s\n", strcmp(sub, "add") == 0 ? "Added" : "Revoked", v.id, v.name);
        return 0;
    }
    return print_vendor(c, &v, json, 1);
}

static int cmd_keys(cli *c, int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS, {NULL, 0, NULL, 0}};
    int json = 0, opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int co = common_opt(c, opt, &json);
        if (co < 0) {
            return usage_error("", "--max-pixels takes a positive whole number");
        }
        if (co > 0) {
            continue;
        }
        if (opt == OPT_HELP) {
            fputs(KEYS_HELP, stdout);
            return 0;
        }
        return usage_error("keys ", "unknown option '%s'", argv[optind - 1]);
    }
    if (argc - optind != 1 || strcmp(argv[optind], "export-public") != 0) {
        return usage_error("keys ", "keys takes one command: export-public");
    }
    int rc = open_ctx(c);
    if (rc != 0) {
        return rc;
    }
    char *text = NULL;
    ct_status st = ct_public_key_export(c->ctx, &text);
    if (st != CT_OK) {
        return fail(c, st);
    }
    fputs(text, stdout);
    ct_free(text);
    return 0;
}


static int cmd_embed(cli *c, int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS,
                                         {"vendor", required_argument, NULL, OPT_VENDOR},
                                         {"output", required_argument, NULL, 'o'},
                                         {"asset", required_argument, NULL, OPT_ASSET},
                                         {"strength", required_argument, NULL, OPT_STRENGTH},
                                         {"quality", required_argument, NULL, OPT_QUALITY},
                                         {NULL, 0, NULL, 0}};
    const char *vendor = NULL, *output = NULL, *asset = NULL;
    ct_embed_opts eo = {1.0, 0};
    int json = 0, opt;
    while ((opt = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        int co = common_opt(c, opt, &json);
        if (co < 0) {
            return usage_error("embed ", "--max-pixels takes a positive whole number");
        }
        if (co > 0) {
            continue;
        }
        char *end = NULL;
        switch (opt) {
        case OPT_HELP:
            fputs(EMBED_HELP, stdout);
            return 0;
        case OPT_VENDOR:
            vendor = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case OPT_ASSET:
            asset = optarg;
            break;
        case OPT_STRENGTH:
            eo.strength = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(eo.strength >= 0.25 && eo.strength <= 4.0)) {
                return usage_error("embed ", "--strength takes a number from 0.25 to 4");
            }
            break;
        case OPT_QUALITY:
            eo.jpeg_quality = (int)strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || eo.jpeg_quality < 1 || eo.jpeg_quality > 100) {
                return usage_error("embed ", "--quality takes a whole number from 1 to 100");
            }
            break;
        default:
            return usage_error("embed ", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (vendor == NULL) {
        return usage_error("embed ", "embed needs --vendor NAME|ID");
    }
    if (output == NULL) {
        return usage_error("embed ", "embed needs -o OUTPUT");
    }
    if (argc - optind != 1) {
        return usage_error("embed ", "embed takes exactly one INPUT file");
    }
    const char *input = argv[optind];
    if (asset == NULL) {
        const char *slash = strrchr(input, '/');
        asset = slash != NULL ? slash + 1 : input;
    }
    int rc = open_ctx(c);
    if (rc == 0) {
        rc = unlock(c);
    }
    if (rc != 0) {
        return rc;
    }
    ct_embed_result r;
    ct_status st = ct_embed_file(c->ctx, vendor, input, output, &eo, &r);
    if (st != CT_OK) {
        return fail(c, st);
    }
    if (json) {
        printf("{\"input\":");
        json_string_out(input);
        printf(",\"output\":");
        json_string_out(output);
        printf(",\"asset\":");
        json_string_out(asset);
        printf(",\"vendor\":");
        json_string_out(r.vendor);
        printf(",\"vendor_id\":%u,\"serial\":%u,\"width\":%u,\"height\":%u,"
               "\"psnr_y\":%.2f,\"ssim_y\":%.5f,\"strength\":%g}\n",
               r.vendor_id, r.serial, r.width, r.height, r.psnr, r.ssim, eo.strength);
    } else {
        printf("%s -> %s: marked for %s (vendor %u), serial %u, PSNR-Y %.1f dB, SSIM %.4f\n",
               input, output, r.vendor, r.vendor_id, r.serial, r.psnr, r.ssim);
    }
    return 0;
}

typedef struct walk {
    char **paths;
    size_t n, cap;
} walk;

static int walk_add(walk *w, const char *path)
{
    if (w->n == w->cap) {
        size_t ncap = w->cap == 0 ? 64 : w->cap * 2;
        char **np = realloc(w->paths, ncap * sizeof *np);
        if (np == NULL) {
            return -1;
        }
        w->paths = np;
        w->cap = ncap;
    }
    w->paths[w->n] = strdup(path);
    if (w->paths[w->n] == NULL) {
        return -1;
    }
    w->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Files under a folder, recursively, sorted; hidden entries skipped. */
static int walk_dir(walk *w, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (d == NULL || depth > 64) {
        if (d != NULL) {
            closedir(d);
        }
        return walk_add(w, dir); /* reported as an error when read */
    }
    size_t first = w->n;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (p == NULL) {
            rc = -1;
            break;
        }
        snprintf(p, n, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            rc = walk_dir(w, p, depth + 1);
        } else if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
            rc = walk_add(w, p);
        }
        free(p);
    }
    closedir(d);
    qsort(w->paths + first, w->n - first, sizeof *w->paths, cmp_str);
    return rc;
}

static int cmd_verify(cli *c, int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS, {NULL, 0, NULL, 0}};
    int json = 0, opt;
    walk w = {0};
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int co = common_opt(c, opt, &json);
        if (co < 0) {
            return usage_error("verify ", "--max-pixels takes a positive whole number");
        }
        if (co > 0) {
            continue;
        }
        if (opt == OPT_HELP) {
            fputs(VERIFY_HELP, stdout);
            return 0;
        }
        return usage_error("verify ", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind >= argc) {
        return usage_error("verify ", "verify needs at least one FILE or DIR");
    }
    int rc = open_ctx(c);
    if (rc == 0) {
        rc = unlock(c);
    }
    if (rc != 0) {
        return rc;
    }
    for (int i = optind; i < argc; i++) {
        struct stat sb;
        int r = stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode) ? walk_dir(&w, argv[i], 0)
                                                                : walk_add(&w, argv[i]);
        if (r != 0) {
            rc = die("out of memory listing files");
            goto done;
        }
    }
    int identified = 0, errors = 0;
    int progress = !json && isatty(STDERR_FILENO) && w.n > 1;
    for (size_t i = 0; i < w.n; i++) {
        ct_verdict v;
        if (progress) {
            fprintf(stderr, "\r[%zu/%zu] %.60s\033[K", i + 1, w.n, w.paths[i]);
        }
        ct_status st = ct_verify_file(c->ctx, w.paths[i], &v);
        if (progress) {
            fputs("\r\033[K", stderr);
        }
        if (st != CT_OK) {
            errors++;
            const char *msg = ct_errmsg(c->ctx);
            if (json) {
                printf("{\"file\":");
                json_string_out(w.paths[i]);
                printf(",\"status\":\"error\",\"vendor\":null,\"vendor_id\":null,"
                       "\"false_positive_probability\":null,\"error\":");
                json_string_out(msg[0] ? msg : ct_strerror(st));
                printf("}\n");
            } else {
                die("%s", msg[0] ? msg : ct_strerror(st));
            }
            continue;
        }
        identified += v.identified;
        if (json) {
            char *s = NULL;
            if (ct_verdict_json(w.paths[i], &v, &s) != CT_OK) {
                rc = die("out of memory");
                goto done;
            }
            puts(s);
            ct_free(s);
        } else if (v.identified) {
            printf("%s: identified: vendor \"%s\" (id %u), serial %u, "
                   "false-positive probability %.1e\n",
                   w.paths[i], v.vendor, v.vendor_id, v.serial, v.false_positive_probability);
            for (int k = 1; k < v.nvendors; k++) {
                printf("%s:   also the mark of vendor id %u, serial %u (copies combined)\n",
                       w.paths[i], v.vendor_ids[k], v.serials[k]);
            }
        } else {
            printf("%s: no mark found\n", w.paths[i]);
        }
        fflush(stdout);
    }
    rc = identified > 0 ? 0 : (errors > 0 ? EXIT_ERR : EXIT_NOTFOUND);
done:
    for (size_t i = 0; i < w.n; i++) {
        free(w.paths[i]);
    }
    free(w.paths);
    return rc;
}

typedef struct command {
    const char *name;
    int (*run)(cli *c, int argc, char **argv);
} command;

static const command COMMANDS[] = {
    {"init", cmd_init},
    {"vendor", cmd_vendor},
    {"keys", cmd_keys},
    {"embed", cmd_embed},
    {"verify", cmd_verify},
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"home", required_argument, NULL, OPT_HOME},
                                         {"passphrase-file", required_argument, NULL, OPT_PASSFILE},
                                         {"max-pixels", required_argument, NULL, OPT_MAXPIX},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    cli c = {0};
    int opt, json = 0;

    if (ct_version_number() != CT_VERSION_NUMBER) {
        return die("library version %s does not match this program (%s)", ct_version_string(),
                   CT_VERSION_STRING);
    }
    opterr = 0;
    /* '+' stops at the command name; the command parses the rest. */
    while ((opt = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
        int co = common_opt(&c, opt, &json);
        if (co < 0) {
            return usage_error("", "--max-pixels takes a positive whole number");
        }
        if (co > 0) {
            continue;
        }
        if (opt == 'h') {
            fputs(MAIN_HELP, stdout);
            return 0;
        }
        if (opt == 'V') {
            printf("celtrace %s\n", ct_version_string());
            return 0;
        }
        return usage_error("", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind >= argc) {
        fputs(MAIN_HELP, stderr);
        return EXIT_ERR;
    }
    const char *name = argv[optind];
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
        if (strcmp(name, COMMANDS[i].name) == 0) {
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            optind = 0; /* 0, not 1: glibc then also forgets the "+" mode */
            int rc = COMMANDS[i].run(&c, sub_argc, sub_argv);
            ct_ctx_free(c.ctx);
            if (fflush(stdout) != 0 && rc == 0) {
                return die("cannot write output: %s", strerror(errno));
            }
            return rc;
        }
    }
    return usage_error("", "unknown command '%s'", name);
}

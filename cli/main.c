/* celtrace: the command. A thin layer over the library: parse arguments,
 * get the passphrase, call <celtrace/celtrace.h>, print text or JSON, map
 * status to the exit code (0 ok, 1 verify found nothing, 2 error). */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <celtrace/celtrace.h>

#include "pool.h"

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
    "  ledger list|show|verify     read and check the signed issuance ledger\n"
    "  ledger export|check         export it; check an export with the public key\n"
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
    "  celtrace verify leaked.jpg\n"
    "  celtrace ledger verify\n";

static const char EMBED_HELP[] =
    "Usage: celtrace embed --vendor NAME|ID INPUT -o OUTPUT [--asset NAME]\n"
    "                      [--strength S] [--quality Q] [--json]\n"
    "       celtrace embed --vendor NAME|ID VIDEO -o OUTPUT [--codec C]\n"
    "                      [--crf N | --bitrate B] [--preset P] [--json]\n"
    "       celtrace embed --vendor NAME|ID FRAMES_DIR -o OUTPUT_DIR\n"
    "       celtrace embed --vendor NAME|ID INPUT... -o FOLDER [--jobs N] [...]\n"
    "\n"
    "Write a copy of INPUT (PNG or JPEG) that carries an invisible mark keyed to\n"
    "the vendor. The output looks the same as the input; its format follows\n"
    "OUTPUT's extension (.png, .jpg, .jpeg). Alpha, bit depth, PNG chunks and\n"
    "JPEG markers are kept. A JPEG written as a JPEG is not encoded again: the\n"
    "mark goes into its luma coefficients with its own quantisation tables\n"
    "(with --quality it is re-encoded at that quality). Palette PNGs are\n"
    "written as RGB(A), since the marked pixels no longer fit a palette. The\n"
    "output appears only when complete, and only after its issuance record\n"
    "(vendor, asset, hashes, serial, time, operator) is signed into the\n"
    "ledger: no file leaves without its record.\n"
    "\n"
    "  --vendor V     vendor name or id (see 'celtrace vendor list')\n"
    "  -o, --output   the marked copy to write (never the input itself)\n"
    "  --asset NAME   asset name recorded in the ledger (default: INPUT's name)\n"
    "  --strength S   mark strength, 0.25..4 (default 1 for images, 1.5 for video:\n"
    "                 the measured settings)\n"
    "  --quality Q    JPEG output quality 1..100\n"
    "  --json         print the result as one JSON object\n"
    "\n"
    "Several inputs (a delivery): each copy is written to FOLDER (which must\n"
    "exist, and not be an input's own folder) under its input's name, and its\n"
    "asset is named after the file; no two inputs may share a name. --jobs N\n"
    "files at once (default one per CPU, at most 4; the keystore is unlocked\n"
    "once for all). One line per input, in input order (--json: one object\n"
    "each; a failed input is {input, output, error}). An input that fails is\n"
    "reported and the others go on; the exit status is then 2.\n"
    "\n"
    "Images up to 0.5 MP are read back before embed returns (blind_check in\n"
    "--json): one too small or flat to be traced blind even untouched is still\n"
    "marked and recorded, with a warning; verify then names its vendor only\n"
    "against the original (informed).\n"
    "\n"
    "Video (.mp4 .mov .mkv .webm .avi .m4v): every frame's luminance is marked\n"
    "and the video re-encoded; audio, subtitle and data streams are copied\n"
    "untouched; timestamps, frame rate, pixel format and metadata are kept. The\n"
    "output container follows OUTPUT's extension. A folder of numbered PNG/JPEG\n"
    "frames (names that differ only in their number, one extension, nothing\n"
    "else there) is marked frame by frame into a new folder, names kept. One\n"
    "ledger record covers the whole clip or sequence. On a terminal a progress\n"
    "bar shows frames, fps and time left (not with --json).\n"
    "\n"
    "  --codec C      FFmpeg video encoder (default libx264; libx265, libvpx-vp9,\n"
    "                 prores_ks, ffv1, ... as this FFmpeg has them)\n"
    "  --crf N        constant quality (default 17: visually lossless for x264)\n"
    "  --bitrate B    target bit rate instead, bits/s (suffix k or M allowed)\n"
    "  --preset P     x264/x265 preset (default medium)\n"
    "\n"
    "Examples:\n"
    "  celtrace embed --vendor \"Inkwell Studio\" ep12/sc04_bg.png -o out/sc04_bg.png\n"
    "  celtrace embed --vendor \"Inkwell Studio\" animatic.mp4 -o out/animatic.mp4 --crf 18\n"
    "  celtrace embed --vendor 3 sc04_frames/ -o out/sc04_frames/\n"
    "  celtrace embed --vendor \"Inkwell Studio\" --jobs 2 ep12/sc04/*.png -o out/sc04/\n";

static const char VERIFY_HELP[] =
    "Usage: celtrace verify [--json] [--originals DIR] [--informed auto|always|never]\n"
    "                       [--max-seconds S] [--jobs N] [--shard K/N] FILE|DIR ...\n"
    "\n"
    "Trace leaked files back to the vendor they were issued to, from the file\n"
    "alone (no original needed), after re-export, resizing, cropping, rotation,\n"
    "colour changes or screenshots. Reads PNG, JPEG, WebP, TIFF, BMP, GIF and the\n"
    "other still formats FFmpeg decodes. Folders are searched recursively.\n"
    "A vendor is named only when its authenticated mark is found; the verdict\n"
    "gives the probability that an unmarked file would have been named.\n"
    "\n"
    "Videos (.mp4 .mov .mkv .webm .avi .m4v) and folders of numbered frames are\n"
    "traced from their first seconds: the evidence of the key frames (where a\n"
    "re-encoded leak keeps the mark best), then of every frame, is added up;\n"
    "then the plain average of the frames is tried. Every attempt counts in\n"
    "the false-positive probability; the verdict names the frames and the time\n"
    "span the evidence came from.\n"
    "\n"
    "  --json   one JSON object per file and line: file, status (identified,\n"
    "           not_found, error), vendor, vendor_id, false_positive_probability,\n"
    "           serial, and the detection details (for video also frames_used,\n"
    "           time_first_s, time_last_s, evidence)\n"
    "  --max-seconds S  read at most S seconds of each video (default 10;\n"
    "           frame folders count 24 frames a second)\n"
    "  --jobs N files verified at once (default: one per CPU, at most 4; each\n"
    "           holds up to about 50 bytes per pixel of its image); the output\n"
    "           is in the same order whatever N\n"
    "  --shard K/N  verify only every Nth file of the sorted list, starting at\n"
    "           the Kth: N machines (or jobs of a batch system) given the same\n"
    "           arguments and K = 1..N split a leak dump exactly\n"
    "\n"
    "Informed detection (still images): when the blind mark is not found, the\n"
    "file is matched against the originals the ledger records as issued (read\n"
    "from the path in the record, or from --originals, checked by SHA-256),\n"
    "registered to its original (scale 0.15x..2x, any crop, mirror), and every\n"
    "recipient of that asset is tested for its own pattern with the original\n"
    "subtracted. The verdict names the asset it derives from even when no\n"
    "vendor is named, and says which path named the vendor (named_by).\n"
    "  --originals DIR  where the studio keeps the originals (searched two levels\n"
    "           deep; matched by file name, then by content)\n"
    "  --informed MODE  auto (default: only when blind detection names no vendor),\n"
    "           always (also after a blind identification, for comparison; the\n"
    "           blind verdict stands), never (blind only)\n"
    "\n"
    "Exit codes: 0 a vendor was named for at least one file, 1 no mark found in\n"
    "any file, 2 an error (and nothing identified).\n"
    "\n"
    "Examples:\n"
    "  celtrace verify --json leak_dump/ > verdicts.jsonl\n"
    "  celtrace verify --json --shard 3/16 leak_dump/ > verdicts.3.jsonl\n"
    "  celtrace verify --max-seconds 4 leaked_clip.mp4\n"
    "  celtrace verify --originals /studio/masters --json crop_from_forum.jpg\n";

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

static const char LEDGER_HELP[] =
    "Usage: celtrace ledger list [--vendor V] [--asset A] [--since T] [--json]\n"
    "       celtrace ledger show ID [--json]\n"
    "       celtrace ledger verify\n"
    "       celtrace ledger export [-o FILE]\n"
    "       celtrace ledger check EXPORT --pubkey FILE\n"
    "\n"
    "Every embed appends one issuance record: vendor, asset, SHA-256 of the\n"
    "original and of the marked file, perceptual hash of the original, payload\n"
    "serial, algorithm and strength, UTC time and operator. Each record's hash\n"
    "covers the one before it, and each is signed with the studio's Ed25519 key.\n"
    "None of these commands needs the passphrase.\n"
    "\n"
    "  list     records in order; --vendor (name or id), --asset (exact name) and\n"
    "           --since (YYYY-MM-DD, UTC, or Unix seconds) narrow it down\n"
    "  show     one record in full\n"
    "  verify   walk the chain and its signatures; exit 1 and name the first bad\n"
    "           record on any edit, deletion, insertion or reordering\n"
    "  export   the ledger as JSON lines (a header with the studio and its public\n"
    "           key, then one signed record per line), to FILE or stdout\n"
    "  check    check an export with only the studio public key file ('celtrace\n"
    "           keys export-public'); needs no keystore. Exit 0 valid, 1 not\n"
    "  --json   list and show print one JSON object per record and line\n"
    "\n"
    "Exit codes: 0 success, 1 verify or check found the ledger altered, 2 error.\n"
    "\n"
    "Examples:\n"
    "  celtrace ledger list --vendor \"Inkwell Studio\" --since 2024-06-01\n"
    "  celtrace ledger verify\n"
    "  celtrace ledger export -o ledger.jsonl\n"
    "  celtrace ledger check ledger.jsonl --pubkey studio.pub\n";

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
    OPT_SINCE,
    OPT_PUBKEY,
    OPT_CODEC,
    OPT_CRF,
    OPT_BITRATE,
    OPT_PRESET,
    OPT_MAXSEC,
    OPT_ORIGINALS,
    OPT_INFORMED,
    OPT_JOBS,
    OPT_SHARD,
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

/* open_ctx, then unlock: what every command that marks or verifies needs. */
static int open_unlocked(cli *c)
{
    int rc = open_ctx(c);
    return rc == 0 ? unlock(c) : rc;
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


/* Progress bar for video: frames, fps and time left, redrawn in place on
 * stderr; the library calls it at most five times a second. */
static void progress_bar(void *user, uint64_t frames, uint64_t total, double elapsed)
{
    (void)user;
    double fps = elapsed > 0 ? (double)frames / elapsed : 0;
    if (total > 0 && frames >= total) {
        fputs("\r\033[K", stderr);
        return;
    }
    char bar[31];
    int fill = total > 0 ? (int)(30.0 * (double)frames / (double)total) : 0;
    for (int i = 0; i < 30; i++) {
        bar[i] = i < fill ? '#' : '-';
    }
    bar[30] = '\0';
    if (total > 0 && fps > 0) {
        long eta = (long)((double)(total - frames) / fps + 0.5);
        fprintf(stderr, "\r[%s] %" PRIu64 "/%" PRIu64 " frames  %.1f fps  ETA %ld:%02ld\033[K", bar,
                frames, total, fps, eta / 60, eta % 60);
    } else {
        fprintf(stderr, "\r%" PRIu64 " frames  %.1f fps\033[K", frames, fps);
    }
    fflush(stderr);
}

/* --bitrate: bits/s, with an optional k or M. */
static int parse_bitrate(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || !(v > 0)) {
        return -1;
    }
    if (*end == 'k' || *end == 'K') {
        v *= 1e3;
        end++;
    } else if (*end == 'M' || *end == 'm') {
        v *= 1e6;
        end++;
    }
    if (*end != '\0' || v < 1000 || v > 1e11) {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* --jobs N: 1..64. */
static int parse_jobs(const char *s, unsigned long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < 1 || v > 64) {
        return -1;
    }
    *out = v;
    return 0;
}

#ifdef __GLIBC__
/* Process-wide, so the program's call: the mark's per-frame work planes
 * (tens of MB a frame) would otherwise go back to the kernel at every free
 * and fault in again zeroed, about a tenth of the CPU of a 1080p embed
 * (measured: sys time 3.0 s -> 0.8 s on 74 frames). Kept instead; the
 * peak is the same. */
static void keep_frame_memory(void)
{
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
}
#else
static void keep_frame_memory(void)
{
}
#endif

/* One marked copy, as a line of text or JSON on standard output (and the
 * self-check's warning on standard error). */
static void print_embedded(const char *input, const char *output, const char *asset,
                           ct_media_kind kind, const ct_embed_result *rp, int json)
{
    const ct_embed_result r = *rp;
    int moving = kind != CT_MEDIA_IMAGE;
    if (json) {
        printf("{\"input\":");
        json_string_out(input);
        printf(",\"output\":");
        json_string_out(output);
        printf(",\"asset\":");
        json_string_out(asset);
        printf(",\"vendor\":");
        json_string_out(r.vendor);
        printf(",\"vendor_id\":%u,\"serial\":%u,\"width\":%u,\"height\":%u,", r.vendor_id,
               r.serial, r.width, r.height);
        if (moving) {
            printf("\"frames\":%" PRIu64 ",\"frames_declared\":", r.frames);
            if (r.frames_declared > 0) {
                printf("%" PRIu64, r.frames_declared);
            } else {
                printf("null");
            }
            printf(",\"duration_s\":%.3f,\"alpha_dropped\":%s,", r.duration,
                   r.alpha_dropped ? "true" : "false");
        }
        printf("\"psnr_y\":%.2f,\"ssim_y\":%.5f,\"strength\":%g,\"record_id\":%" PRIu64,
               r.psnr, r.ssim, r.strength, r.record_id);
        if (r.blind_checked) {
            printf(",\"blind_check\":{\"z\":%.2f,\"needed\":%.2f,\"traceable\":%s}}\n",
                   r.blind_z, r.blind_z_needed, r.blind_z >= r.blind_z_needed ? "true" : "false");
        } else {
            printf(",\"blind_check\":null}\n");
        }
    } else if (moving) {
        printf("%s -> %s: %" PRIu64 " frames marked for %s (vendor %u), serial %u, "
               "PSNR-Y %.1f dB, ledger record %" PRIu64 "\n",
               input, output, r.frames, r.vendor, r.vendor_id, r.serial, r.psnr, r.record_id);
    } else {
        printf("%s -> %s: marked for %s (vendor %u), serial %u, PSNR-Y %.1f dB, SSIM %.4f, "
               "ledger record %" PRIu64 "\n",
               input, output, r.vendor, r.vendor_id, r.serial, r.psnr, r.ssim, r.record_id);
    }
    fflush(stdout);
    if (r.blind_checked && r.blind_z < r.blind_z_needed) {
        /* Marked and recorded all the same: informed verify still traces it. */
        fprintf(stderr,
                "celtrace: warning: %s: the mark is too weak to trace blind even untouched "
                "(z %.1f of %.1f needed: the image is small or flat); verify names the vendor "
                "only against the original\n",
                output, r.blind_z, r.blind_z_needed);
    }
    if (moving && r.alpha_dropped) {
        fprintf(stderr,
                "celtrace: warning: %s: the input's alpha channel is not kept: the encoder has no "
                "pixel format with alpha (--codec prores_ks, png, qtrle or ffv1 keep it)\n",
                output);
    }
    /* An edit list may drop a frame or two of priming; a cut-off file
     * loses far more. */
    if (moving && r.frames_declared > r.frames + 2 + r.frames_declared / 100) {
        fprintf(stderr,
                "celtrace: warning: %s: only %" PRIu64 " of the %" PRIu64 " frames its container "
                "states could be read (the file is cut short?); %s holds those %" PRIu64 "\n",
                input, r.frames, r.frames_declared, output, r.frames);
    }
}

/* embed with several inputs: a delivery into one folder, on the pool. */
typedef struct eres {
    ct_status st;
    ct_media_kind kind;
    char err[512];
    ct_embed_result r;
} eres;

typedef struct ebatch {
    const char *vendor;
    char **inputs, **outputs, **assets;
    const ct_embed_opts *eo;
    const ct_video_opts *vo;
    int json, failed;
} ebatch;

static void embed_run(void *arg, ct_ctx *ctx, size_t i, void *res)
{
    const ebatch *b = arg;
    eres *e = res;
    memset(e, 0, sizeof *e);
    e->kind = ct_media_kind_of(b->inputs[i]);
    if (e->kind != CT_MEDIA_IMAGE) {
        ct_video_opts vo = *b->vo;
        vo.strength = b->eo->strength;
        vo.asset = b->assets[i];
        vo.progress = NULL; /* several at once: the pool's line instead */
        e->st = ct_embed_video(ctx, b->vendor, b->inputs[i], b->outputs[i], &vo, &e->r);
    } else {
        ct_embed_opts eo = *b->eo;
        eo.asset = b->assets[i];
        e->st = ct_embed_file(ctx, b->vendor, b->inputs[i], b->outputs[i], &eo, &e->r);
    }
    if (e->st != CT_OK) {
        const char *msg = ct_errmsg(ctx);
        snprintf(e->err, sizeof e->err, "%s", msg[0] ? msg : ct_strerror(e->st));
    }
}

static int embed_done(void *arg, size_t i, void *res)
{
    ebatch *b = arg;
    const eres *e = res;
    if (e->st == CT_OK) {
        print_embedded(b->inputs[i], b->outputs[i], b->assets[i], e->kind, &e->r, b->json);
        return 0;
    }
    b->failed++;
    if (b->json) {
        printf("{\"input\":");
        json_string_out(b->inputs[i]);
        printf(",\"output\":");
        json_string_out(b->outputs[i]);
        printf(",\"error\":");
        json_string_out(e->err);
        printf("}\n");
        fflush(stdout);
    } else {
        die("%s", e->err);
    }
    return 0;
}

static const char *embed_label(void *arg, size_t i)
{
    return ((const ebatch *)arg)->inputs[i];
}

/* The name an input is known by: its last path component, so a folder
 * given as "frames/" is "frames" (the asset's default name, and a
 * delivery copy's file name). NULL when out of memory; caller frees. */
static char *input_name(const char *path)
{
    char *name = strdup(path);
    if (name == NULL) {
        return NULL;
    }
    size_t l = strlen(name);
    while (l > 1 && name[l - 1] == '/') {
        name[--l] = '\0';
    }
    const char *slash = strrchr(name, '/');
    if (slash != NULL && slash[1] != '\0') {
        memmove(name, slash + 1, strlen(slash + 1) + 1);
    }
    return name;
}

/* Whether the folder whose stat is *dsb holds path (path's parent). */
static bool same_folder_as_parent(const struct stat *dsb, const char *path)
{
    char *copy = strdup(path);
    struct stat psb;
    if (copy == NULL) {
        return false;
    }
    size_t l = strlen(copy);
    while (l > 1 && copy[l - 1] == '/') {
        copy[--l] = '\0';
    }
    bool same = stat(dirname(copy), &psb) == 0 && psb.st_dev == dsb->st_dev &&
                psb.st_ino == dsb->st_ino;
    free(copy);
    return same;
}

/* INPUT... -o DIR: each copy is DIR/<input's name>, its asset that name.
 * A file that fails is reported and the others go on; exit 2 if any
 * failed. Checked before the keystore is unlocked: DIR is a folder, no
 * two inputs share a name. */
static int embed_batch(cli *c, const char *vendor, char **inputs, size_t n, const char *dir,
                       const char *asset, const ct_embed_opts *eo, const ct_video_opts *vo,
                       int video_opt, unsigned jobs, int json)
{
    struct stat sb;
    int rc = 0, any_video = 0;
    if (asset != NULL) {
        return usage_error("embed ", "--asset names one input; with several, each asset is "
                                     "named after its file");
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        return usage_error("embed ", "with several inputs, -o must be an existing folder "
                                     "(%s is not)", dir);
    }
    char **outputs = calloc(n, sizeof *outputs), **assets = calloc(n, sizeof *assets);
    if (outputs == NULL || assets == NULL) {
        rc = die("out of memory");
        goto done;
    }
    size_t dl = strlen(dir);
    const char *sep = dl > 0 && dir[dl - 1] == '/' ? "" : "/";
    for (size_t i = 0; i < n; i++) {
        assets[i] = input_name(inputs[i]);
        if (assets[i] == NULL) {
            rc = die("out of memory");
            goto done;
        }
        if (assets[i][0] == '\0' || strcmp(assets[i], ".") == 0 ||
            strcmp(assets[i], "..") == 0 || strcmp(assets[i], "/") == 0) {
            rc = usage_error("embed ", "%s: no file name to give its copy", inputs[i]);
            goto done;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(assets[k], assets[i]) == 0) {
                rc = usage_error("embed ", "%s and %s would both be written to %s%s%s",
                                 inputs[k], inputs[i], dir, sep, assets[i]);
                goto done;
            }
        }
        if (same_folder_as_parent(&sb, inputs[i])) {
            rc = usage_error("embed ", "-o %s is the folder %s is in: the copies would replace "
                                       "the originals", dir, inputs[i]);
            goto done;
        }
        size_t ol = dl + strlen(sep) + strlen(assets[i]) + 1;
        outputs[i] = malloc(ol);
        if (outputs[i] == NULL) {
            rc = die("out of memory");
            goto done;
        }
        snprintf(outputs[i], ol, "%s%s%s", dir, sep, assets[i]);
        any_video |= ct_media_kind_of(inputs[i]) == CT_MEDIA_VIDEO;
    }
    if (video_opt && !any_video) {
        rc = usage_error("embed ", "--codec, --crf, --bitrate and --preset are for video input");
        goto done;
    }
    rc = open_unlocked(c);
    if (rc != 0) {
        goto done;
    }
    /* A vendor that cannot receive assets is one error, not one per file. */
    ct_vendor v;
    ct_status st = ct_vendor_find(c->ctx, vendor, &v);
    if (st != CT_OK) {
        rc = fail(c, st);
        goto done;
    }
    if (v.revoked_at != 0) {
        rc = die("vendor '%s' is revoked and can no longer receive assets", v.name);
        goto done;
    }
    if (any_video) {
        keep_frame_memory();
    }
    ebatch b = {vendor, inputs, outputs, assets, eo, vo, json, 0};
    cli_pool_ops ops = {n, sizeof(eres), embed_run, embed_done, json ? NULL : embed_label, &b};
    rc = cli_pool_run(c->ctx, jobs > 0 ? jobs : cli_pool_default_jobs(), &ops);
    if (rc < 0) {
        rc = die("out of memory");
    } else if (rc == 0 && b.failed > 0) {
        rc = EXIT_ERR;
    }
done:
    for (size_t i = 0; outputs != NULL && i < n; i++) {
        free(outputs[i]);
    }
    for (size_t i = 0; assets != NULL && i < n; i++) {
        free(assets[i]);
    }
    free(outputs);
    free(assets);
    return rc;
}

/* embed with one input: an image, a video or a frame sequence. */
static int embed_one(cli *c, const char *vendor, const char *input, const char *output,
                     const char *asset, ct_embed_opts *eo, ct_video_opts *vo, int video_opt,
                     int json)
{
    eo->asset = asset;
    ct_media_kind kind = ct_media_kind_of(input);
    if (video_opt && kind != CT_MEDIA_VIDEO) {
        return usage_error("embed ", "--codec, --crf, --bitrate and --preset are for video input");
    }
    int rc = open_unlocked(c);
    if (rc != 0) {
        return rc;
    }
    ct_embed_result r;
    ct_status st;
    if (kind != CT_MEDIA_IMAGE) {
        vo->strength = eo->strength;
        vo->asset = asset;
        if (!json && isatty(STDERR_FILENO)) {
            vo->progress = progress_bar;
        }
        if (kind == CT_MEDIA_VIDEO) {
            keep_frame_memory();
        }
        st = ct_embed_video(c->ctx, vendor, input, output, vo, &r);
        if (st != CT_OK) {
            if (vo->progress != NULL) {
                fputs("\r\033[K", stderr);
            }
            return fail(c, st);
        }
    } else {
        st = ct_embed_file(c->ctx, vendor, input, output, eo, &r);
        if (st != CT_OK) {
            return fail(c, st);
        }
    }
    print_embedded(input, output, asset, kind, &r, json);
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
                                         {"codec", required_argument, NULL, OPT_CODEC},
                                         {"crf", required_argument, NULL, OPT_CRF},
                                         {"bitrate", required_argument, NULL, OPT_BITRATE},
                                         {"preset", required_argument, NULL, OPT_PRESET},
                                         {"jobs", required_argument, NULL, OPT_JOBS},
                                         {NULL, 0, NULL, 0}};
    const char *vendor = NULL, *output = NULL, *asset = NULL;
    unsigned long jobs = 0;
    ct_embed_opts eo = {0.0, 0, NULL, NULL}; /* 0: the library's default */
    ct_video_opts vo = {0};
    int video_opt = 0;
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
        case OPT_CODEC:
            vo.codec = optarg;
            video_opt = 1;
            break;
        case OPT_CRF:
            vo.crf = (int)strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || vo.crf < 1 || vo.crf > 63) {
                return usage_error("embed ", "--crf takes a whole number from 1 to 63");
            }
            video_opt = 1;
            break;
        case OPT_BITRATE:
            if (parse_bitrate(optarg, &vo.bitrate) != 0) {
                return usage_error("embed ", "--bitrate takes bits per second, e.g. 8M or 2500k");
            }
            video_opt = 1;
            break;
        case OPT_PRESET:
            vo.preset = optarg;
            video_opt = 1;
            break;
        case OPT_JOBS:
            if (parse_jobs(optarg, &jobs) != 0) {
                return usage_error("embed ", "--jobs takes a whole number from 1 to 64");
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
    if (argc - optind < 1) {
        return usage_error("embed ", "embed needs an INPUT file");
    }
    if (vo.crf > 0 && vo.bitrate > 0) {
        return usage_error("embed ", "--crf and --bitrate exclude each other");
    }
    if (argc - optind > 1) {
        return embed_batch(c, vendor, argv + optind, (size_t)(argc - optind), output, asset, &eo,
                           &vo, video_opt, (unsigned)jobs, json);
    }
    const char *input = argv[optind];
    char *name = asset == NULL ? input_name(input) : NULL;
    if (asset == NULL && name == NULL) {
        return die("out of memory");
    }
    int rc = embed_one(c, vendor, input, output, asset != NULL ? asset : name, &eo, &vo,
                       video_opt, json);
    free(name);
    return rc;
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

#define WALK_DEPTH_MAX 64

/* The folders from the top of a walk down to the one being listed: a
 * symbolic link back to one of them would list it again, forever. */
typedef struct walk_up {
    dev_t dev[WALK_DEPTH_MAX + 1];
    ino_t ino[WALK_DEPTH_MAX + 1];
} walk_up;

/* Files under a folder, recursively, sorted; hidden entries skipped;
 * symbolic links followed, but never back into a folder above. */
static int walk_dir(walk *w, const char *dir, int depth, walk_up *up)
{
    struct stat ds;
    if (depth <= WALK_DEPTH_MAX && stat(dir, &ds) == 0) {
        for (int i = 0; i < depth; i++) {
            if (up->dev[i] == ds.st_dev && up->ino[i] == ds.st_ino) {
                fprintf(stderr, "celtrace: warning: %s: a link back to a folder above it; "
                                "not followed\n",
                        dir);
                return 0;
            }
        }
        up->dev[depth] = ds.st_dev;
        up->ino[depth] = ds.st_ino;
    }
    DIR *d = opendir(dir);
    if (d == NULL || depth > WALK_DEPTH_MAX) {
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
            rc = walk_dir(w, p, depth + 1, up);
        } else if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
            rc = walk_add(w, p);
        }
        free(p);
    }
    closedir(d);
    if (w->n > first) { /* an empty folder has no list to sort (paths may be NULL) */
        qsort(w->paths + first, w->n - first, sizeof *w->paths, cmp_str);
    }
    return rc;
}

/* One file's verify result, kept until it is printed. */
typedef struct vres {
    ct_status st;
    char err[512];
    ct_verdict v;
} vres;

typedef struct vsettings {
    ct_verify_opts opts;
    double max_seconds;
} vsettings;

static void verify_one(ct_ctx *ctx, const char *path, const vsettings *vs, vres *r)
{
    r->st = ct_media_kind_of(path) != CT_MEDIA_IMAGE
                ? ct_verify_video(ctx, path, vs->max_seconds, &r->v)
                : ct_verify_file_opts(ctx, path, &vs->opts, &r->v);
    r->err[0] = '\0';
    if (r->st != CT_OK) {
        const char *msg = ct_errmsg(ctx);
        snprintf(r->err, sizeof r->err, "%s", msg[0] ? msg : ct_strerror(r->st));
    }
}

/* Print one result; returns -1 when out of memory. */
static int print_verdict(const char *path, const vres *r, int json, int *identified, int *errors)
{
    const ct_verdict *v = &r->v;
    if (r->st != CT_OK) {
        (*errors)++;
        if (json) {
            printf("{\"file\":");
            json_string_out(path);
            printf(",\"status\":\"error\",\"vendor\":null,\"vendor_id\":null,"
                   "\"false_positive_probability\":null,\"record\":null,\"error\":");
            json_string_out(r->err);
            printf("}\n");
        } else {
            die("%s", r->err);
        }
        fflush(stdout);
        return 0;
    }
    *identified += v->identified;
    if (json) {
        char *s = NULL;
        if (ct_verdict_json(path, v, &s) != CT_OK) {
            return -1;
        }
        puts(s);
        ct_free(s);
    } else if (v->identified) {
        printf("%s: identified%s: vendor \"%s\" (id %u), serial %u, "
               "false-positive probability %.1e\n",
               path, v->named_by == CT_NAMED_INFORMED ? " (informed, against the original)" : "",
               v->vendor, v->vendor_id, v->serial, v->false_positive_probability);
        if (v->evidence == 2) {
            printf("%s:   evidence from the single frame at %.2f s\n", path, v->time_first);
        } else if (v->frames_used > 0) {
            printf("%s:   evidence from the average of %u frames, %.2f s to %.2f s\n", path,
                   v->frames_used, v->time_first, v->time_last);
        }
        if (v->has_record) {
            char when[32];
            print_time(v->record.issued_at, when);
            printf("%s:   asset \"%s\", issued %s by %s, ledger record %" PRIu64 "%s\n", path,
                   v->record.asset, when, v->record.issued_by, v->record.id,
                   v->record.signature_valid ? ", signature valid" : ", SIGNATURE INVALID");
        } else {
            printf("%s:   no ledger record of serial %u\n", path, v->serial);
        }
        for (int k = 1; k < v->nvendors; k++) {
            printf("%s:   also the mark of vendor id %u, serial %u (copies combined)\n", path,
                   v->vendor_ids[k], v->serials[k]);
        }
    } else {
        printf("%s: no mark found\n", path);
    }
    if (!json && v->asset_match.matched && v->named_by != CT_NAMED_BLIND) {
        printf("%s:   derives from asset \"%s\" (ledger record %" PRIu64 ", original %s, "
               "similarity %.2f)\n",
               path, v->asset_match.asset, v->asset_match.record_id, v->asset_match.original,
               v->asset_match.score);
        if (v->informed.ran && !v->identified) {
            printf("%s:   no recipient's pattern found (best z %.1f over %" PRIu64 " tests)\n",
                   path, v->informed.nrecipients > 0 ? v->informed.recipients[0].z : 0.0,
                   v->informed.tests);
        }
    }
    fflush(stdout);
    return 0;
}

/* verify's items for the pool (cli/pool.h). */
typedef struct vbatch {
    char **paths;
    const vsettings *vs;
    int json, *identified, *errors;
} vbatch;

static void verify_run(void *arg, ct_ctx *ctx, size_t i, void *res)
{
    const vbatch *b = arg;
    verify_one(ctx, b->paths[i], b->vs, res);
}

static int verify_done(void *arg, size_t i, void *res)
{
    const vbatch *b = arg;
    return print_verdict(b->paths[i], res, b->json, b->identified, b->errors) != 0
               ? die("out of memory")
               : 0;
}

static const char *verify_label(void *arg, size_t i)
{
    return ((const vbatch *)arg)->paths[i];
}

/* Verify paths[0..n) on `jobs` workers (the calling thread prints). */
static int verify_files(cli *c, char **paths, size_t n, const vsettings *vs, unsigned jobs,
                        int json, int *identified, int *errors)
{
    vbatch b = {paths, vs, json, identified, errors};
    cli_pool_ops ops = {n, sizeof(vres), verify_run, verify_done, json ? NULL : verify_label, &b};
    int rc = cli_pool_run(c->ctx, jobs, &ops);
    return rc < 0 ? die("out of memory") : rc;
}

/* "K/N" with 1 <= K <= N. */
static int parse_shard(const char *s, unsigned long *k, unsigned long *n)
{
    char *end = NULL;
    errno = 0;
    *k = strtoul(s, &end, 10);
    if (end == s || *end != '/' || s[0] == '-') {
        return -1;
    }
    const char *t = end + 1;
    *n = strtoul(t, &end, 10);
    if (errno != 0 || end == t || *end != '\0' || t[0] == '-' || *n < 1 || *n > 1000000 ||
        *k < 1 || *k > *n) {
        return -1;
    }
    return 0;
}

static int cmd_verify(cli *c, int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS,
                                         {"max-seconds", required_argument, NULL, OPT_MAXSEC},
                                         {"originals", required_argument, NULL, OPT_ORIGINALS},
                                         {"informed", required_argument, NULL, OPT_INFORMED},
                                         {"jobs", required_argument, NULL, OPT_JOBS},
                                         {"shard", required_argument, NULL, OPT_SHARD},
                                         {NULL, 0, NULL, 0}};
    int json = 0, opt;
    vsettings vs = {{NULL, CT_INFORMED_AUTO, 0}, 0};
    unsigned long jobs = 0, shard_k = 1, shard_n = 1;
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
        if (opt == OPT_MAXSEC) {
            char *end = NULL;
            vs.max_seconds = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(vs.max_seconds > 0 && vs.max_seconds <= 1e6)) {
                return usage_error("verify ", "--max-seconds takes a positive number");
            }
            continue;
        }
        if (opt == OPT_ORIGINALS) {
            struct stat ob;
            if (stat(optarg, &ob) != 0 || !S_ISDIR(ob.st_mode)) {
                return usage_error("verify ", "--originals: %s is not a folder", optarg);
            }
            vs.opts.originals = optarg;
            continue;
        }
        if (opt == OPT_INFORMED) {
            if (strcmp(optarg, "auto") == 0) {
                vs.opts.informed = CT_INFORMED_AUTO;
            } else if (strcmp(optarg, "always") == 0) {
                vs.opts.informed = CT_INFORMED_ALWAYS;
            } else if (strcmp(optarg, "never") == 0) {
                vs.opts.informed = CT_INFORMED_NEVER;
            } else {
                return usage_error("verify ", "--informed takes auto, always or never");
            }
            continue;
        }
        if (opt == OPT_JOBS) {
            if (parse_jobs(optarg, &jobs) != 0) {
                return usage_error("verify ", "--jobs takes a whole number from 1 to 64");
            }
            continue;
        }
        if (opt == OPT_SHARD) {
            if (parse_shard(optarg, &shard_k, &shard_n) != 0) {
                return usage_error("verify ", "--shard takes K/N with 1 <= K <= N (e.g. 2/8)");
            }
            continue;
        }
        return usage_error("verify ", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind >= argc) {
        return usage_error("verify ", "verify needs at least one FILE or DIR");
    }
    int rc = open_unlocked(c);
    if (rc != 0) {
        return rc;
    }
    walk_up up;
    for (int i = optind; i < argc; i++) {
        struct stat sb;
        /* A folder of numbered frames is one clip, not many files. */
        int r = stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode) &&
                        ct_media_kind_of(argv[i]) != CT_MEDIA_SEQUENCE
                    ? walk_dir(&w, argv[i], 0, &up)
                    : walk_add(&w, argv[i]);
        if (r != 0) {
            rc = die("out of memory listing files");
            goto done;
        }
    }
    /* A shard keeps every Nth file of the list (folders are listed sorted),
     * so N machines given the same arguments split the work exactly. */
    size_t keep = 0;
    for (size_t i = 0; i < w.n; i++) {
        if (i % shard_n == shard_k - 1) {
            w.paths[keep++] = w.paths[i];
        } else {
            free(w.paths[i]);
        }
    }
    w.n = keep;
    if (jobs == 0) {
        /* One per CPU, at most 4: a worker holds up to about 50 bytes per
         * pixel of its image (measured on 4K with informed detection;
         * blind alone under 20), so 5 GB for a 100 MP scan. */
        jobs = cli_pool_default_jobs();
    }
    int identified = 0, errors = 0;
    rc = verify_files(c, w.paths, w.n, &vs, (unsigned)jobs, json, &identified, &errors);
    if (rc == 0) {
        rc = identified > 0 ? 0 : (errors > 0 ? EXIT_ERR : EXIT_NOTFOUND);
    }
done:
    for (size_t i = 0; i < w.n; i++) {
        free(w.paths[i]);
    }
    free(w.paths);
    return rc;
}

/* --since: a UTC date (midnight) or Unix seconds. */
static int parse_since(const char *s, int64_t *out)
{
    char *end = NULL;
    int y, m, d, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) == 3 && s[n] == '\0' && n == 10 &&
        m >= 1 && m <= 12 && d >= 1 && d <= 31 && y >= 1970) {
        struct tm tm = {0};
        tm.tm_year = y - 1900;
        tm.tm_mon = m - 1;
        tm.tm_mday = d;
        *out = (int64_t)timegm(&tm);
        return 0;
    }
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0) {
        return -1;
    }
    *out = v;
    return 0;
}

static int print_record(const cli *c, const ct_record *r, int json, int detail)
{
    if (json) {
        char *s = NULL;
        ct_status st = ct_record_json(r, &s);
        if (st != CT_OK) {
            return fail(c, st);
        }
        puts(s);
        ct_free(s);
        return 0;
    }
    char when[32];
    print_time(r->issued_at, when);
    if (!detail) {
        printf("%6" PRIu64 "  %10u  %-24s  %-32s  %s  %s%s\n", r->id, r->serial, r->vendor,
               r->asset, when, r->issued_by, r->signature_valid ? "" : "  SIGNATURE INVALID");
        return 0;
    }
    printf("record:        %" PRIu64 "\n"
           "vendor:        %s (id %u)\n"
           "asset:         %s\n"
           "original:      %s\n"
           "issued:        %s\n"
           "operator:      %s\n"
           "serial:        %u\n"
           "algorithm:     %u (strength %g)\n"
           "input sha256:  %s\n"
           "output sha256: %s\n"
           "phash:         %s\n"
           "prev hash:     %s\n"
           "record hash:   %s\n"
           "signature:     %s\n",
           r->id, r->vendor, r->vendor_id, r->asset, r->original[0] ? r->original : "-", when,
           r->issued_by, r->serial, r->algo_version, r->strength, r->input_sha256,
           r->output_sha256, r->phash, r->prev_hash, r->record_hash,
           r->signature_valid ? "valid (studio key)" : "INVALID");
    return 0;
}

/* verify and check: 0 valid, 1 altered (one stderr line naming the
 * record), 2 could not tell. */
static int ledger_status(const cli *c, ct_status st)
{
    if (st == CT_ERR_AUTH) {
        fail(c, st);
        return EXIT_NOTFOUND;
    }
    return fail(c, st);
}

static int cmd_ledger(cli *c, int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS,
                                         {"vendor", required_argument, NULL, OPT_VENDOR},
                                         {"asset", required_argument, NULL, OPT_ASSET},
                                         {"since", required_argument, NULL, OPT_SINCE},
                                         {"pubkey", required_argument, NULL, OPT_PUBKEY},
                                         {"output", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    ct_ledger_filter f = {NULL, NULL, 0};
    const char *pubkey = NULL, *output = NULL;
    int json = 0, opt, since_set = 0;
    while ((opt = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        int co = common_opt(c, opt, &json);
        if (co < 0) {
            return usage_error("ledger ", "--max-pixels takes a positive whole number");
        }
        if (co > 0) {
            continue;
        }
        switch (opt) {
        case OPT_HELP:
            fputs(LEDGER_HELP, stdout);
            return 0;
        case OPT_VENDOR:
            f.vendor = optarg;
            break;
        case OPT_ASSET:
            f.asset = optarg;
            break;
        case OPT_SINCE:
            if (parse_since(optarg, &f.since) != 0) {
                return usage_error("ledger ", "--since takes a date YYYY-MM-DD or Unix seconds");
            }
            since_set = 1;
            break;
        case OPT_PUBKEY:
            pubkey = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        default:
            return usage_error("ledger ", "unknown option '%s'", argv[optind - 1]);
        }
    }
    int nargs = argc - optind;
    if (nargs < 1) {
        return usage_error("ledger ", "ledger needs list, show, verify, export or check");
    }
    const char *sub = argv[optind];
    int is_list = strcmp(sub, "list") == 0, is_show = strcmp(sub, "show") == 0;
    int is_verify = strcmp(sub, "verify") == 0, is_export = strcmp(sub, "export") == 0;
    int is_check = strcmp(sub, "check") == 0;
    if (!is_list && !is_show && !is_verify && !is_export && !is_check) {
        return usage_error("ledger ", "unknown ledger command '%s'", sub);
    }
    if (nargs != ((is_show || is_check) ? 2 : 1)) {
        return usage_error("ledger ", "'ledger %s' takes %s", sub,
                           is_show ? "one record id" : is_check ? "one export file"
                                                                : "no argument");
    }
    if ((f.vendor != NULL || f.asset != NULL || since_set) && !is_list) {
        return usage_error("ledger ", "--vendor, --asset and --since go with 'ledger list'");
    }
    if (pubkey != NULL && !is_check) {
        return usage_error("ledger ", "--pubkey goes with 'ledger check'");
    }
    if (is_check && pubkey == NULL) {
        return usage_error("ledger ", "'ledger check' needs --pubkey FILE");
    }
    if (output != NULL && !is_export) {
        return usage_error("ledger ", "-o goes with 'ledger export'");
    }
    if (json && !is_list && !is_show) {
        return usage_error("ledger ", "--json goes with 'ledger list' and 'ledger show'");
    }
    uint64_t id = 0;
    if (is_show) {
        const char *a = argv[optind + 1];
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(a, &end, 10);
        if (errno != 0 || end == a || *end != '\0' || a[0] == '-' || v == 0) {
            return usage_error("ledger ", "'ledger show' takes a record id (1, 2, ...)");
        }
        id = v;
    }
    ct_status st;
    if (is_check) {
        /* A lawyer or a vendor has no home: any folder will do, since the
         * check reads only the two files it is given. */
        if (ct_ctx_new(c->home, &c->ctx) != CT_OK && ct_ctx_new(".", &c->ctx) != CT_OK) {
            return die("out of memory");
        }
        uint64_t n = 0, bad = 0;
        st = ct_ledger_check_export(c->ctx, argv[optind + 1], pubkey, &n, &bad);
        if (st != CT_OK) {
            return ledger_status(c, st);
        }
        printf("%s: valid: %" PRIu64 " records, chained and signed by the given studio key\n",
               argv[optind + 1], n);
        return 0;
    }
    int rc = open_ctx(c);
    if (rc != 0) {
        return rc;
    }
    if (is_verify) {
        uint64_t n = 0, bad = 0;
        st = ct_ledger_verify(c->ctx, &n, &bad);
        if (st != CT_OK) {
            return ledger_status(c, st);
        }
        printf("ledger valid: %" PRIu64 " records, chained and signed by the studio key\n", n);
        return 0;
    }
    if (is_export) {
        st = ct_ledger_export(c->ctx, output);
        return st != CT_OK ? fail(c, st) : 0;
    }
    if (is_show) {
        ct_record r;
        st = ct_ledger_get(c->ctx, id, &r);
        return st != CT_OK ? fail(c, st) : print_record(c, &r, json, 1);
    }
    ct_record *all = NULL;
    size_t n = 0;
    st = ct_ledger_list(c->ctx, &f, &all, &n);
    if (st != CT_OK) {
        return fail(c, st);
    }
    if (!json) {
        printf("%6s  %10s  %-24s  %-32s  %-20s  %s\n", "ID", "SERIAL", "VENDOR", "ASSET",
               "ISSUED", "OPERATOR");
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = print_record(c, &all[i], json, 0);
    }
    ct_free(all);
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
    {"ledger", cmd_ledger},
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

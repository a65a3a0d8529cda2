/* replay_main: a main() for the fuzz targets without libFuzzer. Feeds every
 * file named on the command line, or found in a directory named there, to
 * LLVMFuzzerTestOneInput, in name order. Built with the ordinary compiler
 * (and under ARSENAL_SANITIZE with ASan/UBSan), it is the ctest that
 * replays the seed corpora and every saved crash input
 * (tests/fuzz/regressions/<target>/) through the same entry points: a
 * crash, an abort from a violated property, a sanitizer report or an input
 * running longer than ARSENAL_REPLAY_TIMEOUT seconds (default 60) fails it.
 * Files whose name starts with '.' or "README" are skipped, and so are the
 * inputs a directory's PENDING file lists ("name  finding" per line, '#'
 * comments): open findings that still crash or hang, replayed only with
 * ARSENAL_REPLAY_PENDING=1 (to check a fix; then delete the line).
 * Options:
 *   --require-inputs   fail when no input at all was found (a corpus that
 *                      went missing must not pass silently) */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long replayed, pending_skipped;
static const char *current = "";

static void on_alarm(int signal_number)
{
    (void)signal_number;
    static const char prefix[] = "replay: TIMEOUT (a hang) on ";
    if (write(STDERR_FILENO, prefix, sizeof prefix - 1) < 0 || write(STDERR_FILENO, current, strlen(current)) < 0 ||
        write(STDERR_FILENO, "\n", 1) < 0) {
        /* nothing more to say */
    }
    _exit(1);
}

static unsigned timeout_seconds(void)
{
    const char *text = getenv("ARSENAL_REPLAY_TIMEOUT");
    long value = text ? strtol(text, NULL, 10) : 60;
    return value > 0 ? (unsigned)value : 60;
}

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t capacity = 1 << 16, size = 0, got;
    uint8_t *data = malloc(capacity);
    while (data && (got = fread(data + size, 1, capacity - size, f)) > 0) {
        size += got;
        if (size == capacity) {
            uint8_t *grown = realloc(data, capacity *= 2);
            if (!grown) free(data);
            data = grown;
        }
    }
    int failed = ferror(f) || !data;
    fclose(f);
    if (failed) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(data);
        return 1;
    }
    printf("replay: %s (%zu bytes)\n", path, size);
    fflush(stdout);
    current = path;
    alarm(timeout_seconds());
    LLVMFuzzerTestOneInput(data, size);
    alarm(0);
    free(data);
    replayed++;
    return 0;
}

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int skipped_name(const char *name)
{
    return name[0] == '.' || strncmp(name, "README", 6) == 0 || strcmp(name, "PENDING") == 0;
}

/* The finding that keeps name pending in dir/PENDING, or NULL. */
static const char *pending_finding(const char *dir, const char *name)
{
    static char finding[256];
    if (getenv("ARSENAL_REPLAY_PENDING") && strcmp(getenv("ARSENAL_REPLAY_PENDING"), "1") == 0) return NULL;
    char path[4096], line[1024];
    snprintf(path, sizeof path, "%s/PENDING", dir);
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    const char *found = NULL;
    while (!found && fgets(line, sizeof line, f)) {
        char listed[512];
        if (line[0] == '#' || sscanf(line, "%511s", listed) != 1 || strcmp(listed, name) != 0) continue;
        const char *rest = line + strspn(line, " \t");
        rest += strlen(listed);
        rest += strspn(rest, " \t");
        snprintf(finding, sizeof finding, "%.*s", (int)strcspn(rest, "\n"), rest);
        found = finding;
    }
    fclose(f);
    return found;
}

static int replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: cannot open directory %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char **names = NULL;
    size_t count = 0, capacity = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (skipped_name(e->d_name)) continue;
        if (count == capacity) {
            capacity = capacity ? 2 * capacity : 64;
            char **grown = realloc(names, capacity * sizeof *names);
            if (!grown) break;
            names = grown;
        }
        names[count] = strdup(e->d_name);
        if (names[count]) count++;
    }
    closedir(d);
    if (count) qsort(names, count, sizeof *names, compare_strings);
    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        const char *finding = pending_finding(dir, names[i]);
        if (finding) {
            printf("replay: %s skipped: pending (%s)\n", path, finding);
            pending_skipped++;
        } else if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            rc |= replay_file(path);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = 0, require = 0;
    signal(SIGALRM, on_alarm);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (strcmp(argv[i], "--require-inputs") == 0) require = 1;
        else if (stat(argv[i], &st) != 0) {
            /* an absent regressions directory just means no crash was saved yet */
            printf("replay: %s does not exist, skipped\n", argv[i]);
        } else if (S_ISDIR(st.st_mode)) rc |= replay_dir(argv[i]);
        else rc |= replay_file(argv[i]);
    }
    printf("replay: %ld inputs, no crash; %ld pending inputs skipped\n", replayed, pending_skipped);
    if (require && replayed == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    return rc;
}

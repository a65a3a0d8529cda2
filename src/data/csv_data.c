/* csv_data: CSV files (data = csv:PATH, label = COLUMN). It owns the CSV
 * parser: a header row of column names, then one sample per line, values
 * separated by commas; fields may be double-quoted ("" for a quote inside,
 * no line break inside); spaces around a field, blank lines, a UTF-8 byte
 * order mark and \r\n line ends are accepted. Every column but the label
 * is a numeric feature. Two passes: the first counts the rows, so that
 * the memory is checked and allocated once at its exact size; the second
 * parses. A value that does not parse is refused with the file, line,
 * column number and name, and the text. Always read into memory. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arsenal/error.h"
#include "user_data.h"

enum { CSV_MAX_LINE = 64 << 20 };

typedef struct line_reader {
    FILE *f;
    const char *path;
    char *buf;
    size_t cap, len;
    int64_t line;        /* number of the line in buf, 1-based */
    char **fields;       /* into buf, after split_fields */
    int field_count, field_cap;
} line_reader;

/* Reads the next line (without its line end) into r->buf: 1, or 0 at the
 * end of the file, or an error. */
static int next_line(line_reader *r)
{
    r->len = 0;
    int c = EOF, any = 0;
    while ((c = getc(r->f)) != EOF) {
        any = 1;
        if (c == '\n') break;
        if (c == '\0')
            return ars_error(ARS_EFORMAT, "%s:%lld: a NUL byte: not a text file", r->path, (long long)r->line + 1);
        if (r->len + 2 > r->cap) {
            if (r->cap >= CSV_MAX_LINE)
                return ars_error(ARS_EFORMAT, "%s:%lld: a line longer than %d MiB", r->path, (long long)r->line + 1,
                                 CSV_MAX_LINE >> 20);
            size_t cap = r->cap ? 2 * r->cap : 4096;
            char *grown = realloc(r->buf, cap);
            if (!grown) return ars_error(ARS_ENOMEM, "%s: out of memory for a line", r->path);
            r->buf = grown;
            r->cap = cap;
        }
        r->buf[r->len++] = (char)c;
    }
    if (ferror(r->f)) return ars_error(ARS_EIO, "%s: read failed: %s", r->path, strerror(errno));
    if (!any) return 0;
    r->line++;
    if (r->len > 0 && r->buf[r->len - 1] == '\r') r->len--;
    if (!r->buf) {   /* an empty first line */
        r->buf = malloc(4096);
        if (!r->buf) return ars_error(ARS_ENOMEM, "%s: out of memory for a line", r->path);
        r->cap = 4096;
    }
    r->buf[r->len] = '\0';
    return 1;
}

static int is_blank(const line_reader *r)
{
    for (size_t i = 0; i < r->len; i++)
        if (r->buf[i] != ' ' && r->buf[i] != '\t') return 0;
    return 1;
}

/* The next line that is not blank: 1, 0 at the end, or an error. */
static int next_row(line_reader *r)
{
    int rc;
    while ((rc = next_line(r)) == 1 && is_blank(r)) {}
    return rc;
}

static int add_field(line_reader *r, char *field)
{
    if (r->field_count == r->field_cap) {
        int cap = r->field_cap ? 2 * r->field_cap : 64;
        char **grown = realloc(r->fields, (size_t)cap * sizeof *grown);
        if (!grown) return ars_error(ARS_ENOMEM, "%s: out of memory for the fields of a line", r->path);
        r->fields = grown;
        r->field_cap = cap;
    }
    r->fields[r->field_count++] = field;
    return 0;
}

/* Splits r->buf in place into r->fields: quotes removed, spaces around
 * a field trimmed, each field NUL-terminated. */
static int split_fields(line_reader *r)
{
    r->field_count = 0;
    char *p = r->buf, *w = r->buf;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        char *start = w;
        if (*p == '"') {
            p++;
            for (;;) {
                if (*p == '\0')
                    return ars_error(ARS_EFORMAT, "%s:%lld: field %d: a quote that is not closed on its line (line "
                                     "breaks inside quotes are not supported)", r->path, (long long)r->line,
                                     r->field_count + 1);
                if (*p == '"') {
                    if (p[1] == '"') {
                        *w++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *w++ = *p++;
            }
            while (*p == ' ' || *p == '\t') p++;
            if (*p != ',' && *p != '\0')
                return ars_error(ARS_EFORMAT, "%s:%lld: field %d: text after its closing quote", r->path,
                                 (long long)r->line, r->field_count + 1);
        } else {
            while (*p != ',' && *p != '\0') *w++ = *p++;
            while (w > start && (w[-1] == ' ' || w[-1] == '\t')) w--;
        }
        const int more = *p == ',';
        p++;        /* past the comma (or the terminator: then we stop) */
        *w++ = '\0';   /* w <= p - 1: the byte just examined, or earlier */
        TRY(add_field(r, start));
        if (!more) return 0;
    }
}

static void field_text(char *out, size_t size, const char *text)
{
    size_t n = strlen(text);
    if (n + 1 <= size) snprintf(out, size, "%s", text);
    else snprintf(out, size, "%.*s...", (int)(size - 4), text);
}

static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

static int open_csv(const char *path, FILE **out)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return ars_error(ARS_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) rc = ars_error(ARS_EIO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode)) rc = ars_error(ARS_EIO, "%s: is %s, expected a CSV file", path, file_kind(st.st_mode));
    int flags = rc ? 0 : fcntl(fd, F_GETFL);
    if (!rc && (flags == -1 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == -1))
        rc = ars_error(ARS_EIO, "%s: cannot set blocking reads: %s", path, strerror(errno));
    FILE *f = rc ? NULL : fdopen(fd, "rb");
    if (!rc && !f) rc = ars_error(ARS_EIO, "%s: cannot read: %s", path, strerror(errno));
    if (rc) {
        close(fd);
        return rc;
    }
    *out = f;
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The header: its column count, the label's index, and the names (copies). */
static int read_header(line_reader *r, const char *label, int *columns, int *label_at, char ***names_out)
{
    int rc = next_row(r);
    if (rc < 0) return rc;
    if (rc == 0) return ars_error(ARS_EFORMAT, "%s: empty file: expected a header row of column names", r->path);
    if (r->len >= 3 && memcmp(r->buf, "\xef\xbb\xbf", 3) == 0) {   /* UTF-8 byte order mark */
        memmove(r->buf, r->buf + 3, r->len - 2);
        r->len -= 3;
    }
    TRY(split_fields(r));
    const int n = r->field_count;
    char **names = calloc((size_t)n, sizeof *names);
    char **sorted = calloc((size_t)n, sizeof *sorted);
    rc = names && sorted ? 0 : ars_error(ARS_ENOMEM, "%s: out of memory for %d column names", r->path, n);
    *label_at = -1;
    for (int i = 0; i < n && !rc; i++) {
        if (!r->fields[i][0])
            rc = ars_error(ARS_EFORMAT, "%s:%lld: column %d has no name (a pandas index? write with index=False)",
                           r->path, (long long)r->line, i + 1);
        else if (!(names[i] = strdup(r->fields[i])))
            rc = ars_error(ARS_ENOMEM, "%s: out of memory for the column names", r->path);
        else if (strcmp(names[i], label) == 0)
            *label_at = i;
        if (!rc) sorted[i] = names[i];
    }
    if (!rc) {
        qsort(sorted, (size_t)n, sizeof *sorted, compare_names);
        for (int i = 1; i < n && !rc; i++)
            if (strcmp(sorted[i - 1], sorted[i]) == 0) {
                char name[64];
                field_text(name, sizeof name, sorted[i]);
                rc = ars_error(ARS_EFORMAT, "%s:%lld: two columns are named '%s'", r->path, (long long)r->line, name);
            }
    }
    if (!rc && *label_at < 0) {
        char list[240] = "", name[64];
        for (int i = 0; i < n && strlen(list) < 200; i++) {
            field_text(name, sizeof name, names[i]);
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", name);
        }
        field_text(name, sizeof name, label);
        rc = ars_error(ARS_EFORMAT, "%s:%lld: no column '%s' for the labels (the header has: %s%s)", r->path,
                       (long long)r->line, name, list, strlen(list) >= 200 ? ", ..." : "");
    }
    if (!rc && n < 2)
        rc = ars_error(ARS_EFORMAT, "%s: the only column is the label '%s': no features", r->path, label);
    free(sorted);
    if (rc) {
        for (int i = 0; names && i < n; i++) free(names[i]);
        free(names);
        return rc;
    }
    *columns = n;
    *names_out = names;
    return 0;
}

/* Parses one row's fields into x (features) and y (the label). */
static int parse_row(line_reader *r, char *const *names, int columns, int label_at, float *x, double *y)
{
    if (r->field_count != columns)
        return ars_error(ARS_EFORMAT, "%s:%lld: %d values, expected %d (the header has %d columns)", r->path,
                         (long long)r->line, r->field_count, columns, columns);
    for (int c = 0, j = 0; c < columns; c++) {
        const char *text = r->fields[c];
        char shown[48], name[64];
        if (!text[0]) {
            field_text(name, sizeof name, names[c]);
            return ars_error(ARS_EFORMAT, "%s:%lld: column %d ('%s') is empty (missing values are not supported)",
                             r->path, (long long)r->line, c + 1, name);
        }
        char *end;
        errno = 0;
        double v = strtod(text, &end);
        if (end == text || *end) {
            field_text(shown, sizeof shown, text);
            field_text(name, sizeof name, names[c]);
            return ars_error(ARS_EFORMAT, "%s:%lld: column %d ('%s'): '%s' is not a number", r->path,
                             (long long)r->line, c + 1, name, shown);
        }
        if (c == label_at) {
            *y = v;   /* checked as a label or target by ars_user_set_y, with this line */
            if (!isfinite(v)) {
                field_text(shown, sizeof shown, text);
                field_text(name, sizeof name, names[c]);
                return ars_error(ARS_ENUMERIC, "%s:%lld: column %d ('%s'): '%s' is not finite", r->path,
                                 (long long)r->line, c + 1, name, shown);
            }
            continue;
        }
        float f = (float)v;
        if (!isfinite(f)) {
            field_text(shown, sizeof shown, text);
            field_text(name, sizeof name, names[c]);
            return ars_error(ARS_ENUMERIC, "%s:%lld: column %d ('%s'): '%s' is %s", r->path, (long long)r->line,
                             c + 1, name, shown, isfinite(v) ? "beyond float range" : "not finite");
        }
        x[j++] = f;
    }
    return 0;
}

int ars_csv_load(const char *path, const ars_user_options *o, double budget, const char *from, ars_dataset *data)
{
    memset(data, 0, sizeof *data);
    FILE *f = NULL;
    TRY(open_csv(path, &f));
    line_reader r = {.f = f, .path = path};
    int columns = 0, label_at = -1;
    char **names = NULL;
    float *x = NULL;
    double *y = NULL;
    int64_t *lines = NULL, rows = 0;
    int rc = read_header(&r, o->label, &columns, &label_at, &names);
    /* pass 1: count the rows */
    if (!rc) {
        int more;
        while ((more = next_row(&r)) == 1) rows++;
        if (more < 0) rc = more;
    }
    if (!rc && rows == 0) rc = ars_error(ARS_EFORMAT, "%s: a header but no rows of data", path);
    if (!rc && rows > ARS_USER_MAX_ROWS)
        rc = ars_error(ARS_EFORMAT, "%s: %lld rows: at most %d are supported", path, (long long)rows,
                       ARS_USER_MAX_ROWS);
    const int64_t count = o->limit > 0 && o->limit < rows ? o->limit : rows;
    const int features = columns - 1;
    if (!rc) {
        char what[160];
        snprintf(what, sizeof what, "%lld rows of %d features (with their labels)", (long long)count, features);
        rc = ars_user_check_fits(path, what, (double)count * (4.0 * features + 8 + 8 + 4), budget, from);
    }
    if (!rc) {
        x = malloc((size_t)count * (size_t)features * sizeof *x);
        y = malloc((size_t)count * sizeof *y);
        lines = malloc((size_t)count * sizeof *lines);
        if (!x || !y || !lines) rc = ars_error(ARS_ENOMEM, "%s: cannot allocate %lld rows", path, (long long)count);
    }
    /* pass 2: parse */
    if (!rc) {
        rewind(f);
        r.line = 0;
        rc = next_row(&r);   /* the header again */
        if (rc == 1) rc = 0;
        else if (rc == 0) rc = ars_error(ARS_EIO, "%s: the file changed while it was read", path);
    }
    for (int64_t i = 0; i < count && !rc; i++) {
        rc = next_row(&r);
        if (rc == 0) rc = ars_error(ARS_EIO, "%s: the file changed while it was read (fewer rows)", path);
        if (rc < 0) break;
        rc = split_fields(&r);
        if (!rc) rc = parse_row(&r, names, columns, label_at, x + (size_t)i * (size_t)features, &y[i]);
        lines[i] = r.line;
    }
    if (!rc) rc = ars_user_set_y(data, path, y, count, 1, o->regression, names[label_at], lines, budget, from);
    if (!rc) {
        data->x = x;
        x = NULL;
        data->count = (int)count;
        data->dim = features;
        data->shape = ars_shape_vector(features);
    }
    fclose(f);
    free(r.buf);
    free(r.fields);
    for (int i = 0; names && i < columns; i++) free(names[i]);
    free(names);
    free(x);
    free(y);
    free(lines);
    if (rc) ars_dataset_free(data);
    return rc;
}

/* config: the run file. Owns reading it, --set overrides, [repeat]/
 * [residual] block expansion, the typed getters with file:line messages,
 * the unused-key check and printing the resolved file back as INI.
 * Reading is one pass of one parser: inih (ini_parse_stream) splits the
 * key = value lines, which it reads from our reader; the reader counts the
 * lines and takes what inih cannot tell us itself: section order, sections
 * without keys, the line of each key, long lines (see "loading" below). */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/config.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "arsenal/error.h"

/* inih reads a line into a fixed buffer and silently splits longer ones
 * (which would shift its line count), so the reader rejects longer lines. */
enum { MAX_LINE = INI_MAX_LINE - 3 };

#define KEY_MAX ((int)sizeof(((ars_config_entry *)0)->key) - 1)
#define VALUE_MAX ((int)sizeof(((ars_config_entry *)0)->value) - 1)
#define NAME_MAX_LEN ((int)sizeof(((ars_config_section *)0)->name) - 1)

/* ---- small helpers ---------------------------------------------------- */

static int is_space(char c) { return isspace((unsigned char)c) != 0; }

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_name_char(char c) { return is_alnum(c) || c == '_' || c == '-'; }
static int is_key_char(char c) { return is_name_char(c) || c == '.'; }

static void trim(const char **s, size_t *len)
{
    while (*len && is_space(**s)) (*s)++, (*len)--;
    while (*len && is_space((*s)[*len - 1])) (*len)--;
}

/* A printable excerpt of s for a message: at most limit characters,
 * control bytes as '?', "..." when cut. */
static void excerpt(char *out, size_t size, const char *s, size_t len, size_t limit)
{
    size_t n = len < limit ? len : limit, j = 0;
    for (size_t i = 0; i < n && j + 4 < size; i++)
        out[j++] = (unsigned char)s[i] < 32 || s[i] == 127 ? '?' : s[i];
    if (n < len && j + 4 <= size) memcpy(out + j, "...", 3), j += 3;
    out[j] = '\0';
}

static int equals_ignore_case(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}

static int is_named(const ars_config_section *s, const char *name) { return strcmp(s->name, name) == 0; }
static int is_opener(const ars_config_section *s) { return is_named(s, "repeat") || is_named(s, "residual"); }

/* A growing string; remembers allocation failure instead of reporting it
 * at every append. */
typedef struct strbuf {
    char *s;
    size_t n, cap;
    int failed;
} strbuf;

static void sb_append(strbuf *b, const char *s, size_t len)
{
    if (b->failed) return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->s = p, b->cap = cap;
    }
    memcpy(b->s + b->n, s, len);
    b->n += len;
    b->s[b->n] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_append(b, s, strlen(s)); }

static void sb_indent(strbuf *b, int depth)
{
    for (int i = 0; i < depth; i++) sb_append(b, "  ", 2);
}

/* ---- sections --------------------------------------------------------- */

static void free_sections(ars_config_section *sections, int count)
{
    for (int i = 0; i < count; i++) free(sections[i].entries);
    free(sections);
}

static ars_config_section *push_written(ars_config *c)
{
    if (c->written_count == c->written_capacity) {
        int cap = c->written_capacity ? c->written_capacity * 2 : 16;
        ars_config_section *p = realloc(c->written, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        c->written = p, c->written_capacity = cap;
    }
    ars_config_section *s = &c->written[c->written_count++];
    memset(s, 0, sizeof *s);
    return s;
}

static ars_config_entry *add_entry(ars_config_section *s, const char *key, const char *value, int line)
{
    if (s->entry_count == s->entry_capacity) {
        int cap = s->entry_capacity ? s->entry_capacity * 2 : 1; /* most sections have 0-2 keys */
        ars_config_entry *p = realloc(s->entries, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        s->entries = p, s->entry_capacity = cap;
    }
    ars_config_entry *e = &s->entries[s->entry_count++];
    memset(e, 0, sizeof *e);
    snprintf(e->key, sizeof e->key, "%s", key);
    snprintf(e->value, sizeof e->value, "%s", value);
    e->line = line;
    return e;
}

static ars_config_entry *lookup(ars_config_section *s, const char *key)
{
    if (!s || !key) return NULL;
    for (int i = 0; i < s->entry_count; i++)
        if (strcmp(s->entries[i].key, key) == 0) return &s->entries[i];
    return NULL;
}

static long total_entries(const ars_config_section *sections, int count)
{
    long n = 0;
    for (int i = 0; i < count; i++) n += sections[i].entry_count;
    return n;
}

/* Section names sorted (then by position): gives occurrence numbers and the
 * list of names for messages without quadratic scans. */
typedef struct name_ref {
    const char *name;
    int index;
} name_ref;

static int compare_name_ref(const void *a, const void *b)
{
    const name_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

static name_ref *sorted_names(const ars_config_section *sections, int count)
{
    name_ref *refs = malloc((size_t)(count ? count : 1) * sizeof *refs);
    if (!refs) return NULL;
    for (int i = 0; i < count; i++) refs[i] = (name_ref){sections[i].name, i};
    qsort(refs, (size_t)count, sizeof *refs, compare_name_ref);
    return refs;
}

/* "a, b, c" (distinct names, sorted), shortened to fit. */
static void list_names(char *out, size_t size, const ars_config_section *sections, int count)
{
    out[0] = '\0';
    name_ref *refs = sorted_names(sections, count);
    if (!refs) return;
    size_t used = 0;
    for (int i = 0; i < count; i++) {
        if (i > 0 && strcmp(refs[i].name, refs[i - 1].name) == 0) continue;
        size_t len = strlen(refs[i].name);
        if (used + len + 8 >= size) {
            snprintf(out + used, size - used, "%s...", used ? ", " : "");
            break;
        }
        used += (size_t)snprintf(out + used, size - used, "%s%s", used ? ", " : "", refs[i].name);
    }
    free(refs);
}

/* ---- loading: one pass, inih reading from our reader --------------------- */

/* inih alone would lose what the run file needs: its handler gets no line
 * numbers and no call for a section without keys, cannot tell two
 * consecutive sections of one name apart, sees section names cut at 49
 * characters, and inih splits a long line silently and takes an indented
 * line for a continuation. So inih reads its lines from read_line (an
 * ini_parse_stream reader), which counts them, takes the comments, blank
 * lines and [section] headers itself (recording each section, in order),
 * checks what inih would get wrong, and hands inih the key lines
 * unindented and without their comment, and an empty line for every other
 * line, so that inih counts lines as the file does. inih splits each key
 * line (key = value, or key: value) and calls on_entry while that line is
 * the reader's current one. */
typedef struct parse_state {
    ars_config *config;
    const char *next;   /* the source not read yet */
    int line;           /* the line last handed to inih */
    long section_keys;  /* key lines in the current section */
    long keys;          /* key lines in all sections */
    int read_error;     /* the reader's first error: ends the parse and wins */
    int error_line;     /* first error found by the handler (0: none) */
    int error_code;
} parse_state;

static int syntax_error(const ars_config *c, int line, const char *text, size_t len, const char *what)
{
    char shown[96];
    trim(&text, &len);
    excerpt(shown, sizeof shown, text, len, 80);
    return ars_error(ARS_EINVAL, "%s:%d: syntax error: %s, found '%s'", c->path, line, what, shown);
}

/* A "[name]" line: records the section. */
static int read_header(parse_state *st, int line, const char *s, size_t len)
{
    ars_config *c = st->config;
    const char *close = memchr(s, ']', len);
    if (!close) return syntax_error(c, line, s, len, "section header without ']'");
    const char *rest = close + 1;
    size_t rest_len = len - (size_t)(rest - s);
    trim(&rest, &rest_len);
    if (rest_len && rest[0] != ';' && rest[0] != '#')
        return syntax_error(c, line, s, len, "text after the section header's ']'");

    const char *name = s + 1;
    size_t name_len = (size_t)(close - name);
    trim(&name, &name_len);
    char shown[96];
    excerpt(shown, sizeof shown, name, name_len, 60);
    if (name_len == 0) return ars_error(ARS_EINVAL, "%s:%d: empty section name '[]'", c->path, line);
    if (name_len > (size_t)NAME_MAX_LEN)
        return ars_error(ARS_EINVAL, "%s:%d: section name '%s' is too long (at most %d characters)", c->path,
                         line, shown, NAME_MAX_LEN);
    for (size_t i = 0; i < name_len; i++)
        if (!is_name_char(name[i]))
            return ars_error(ARS_EINVAL, "%s:%d: section name '[%s]': expected letters, digits, '_' or '-'",
                             c->path, line, shown);
    if (name_len == 12 && memcmp(name, "residual_add", 12) == 0)
        return ars_error(ARS_EINVAL, "%s:%d: [residual_add] is not written: it is what the [end] of a "
                         "[residual] block becomes", c->path, line);
    if (c->written_count >= ARS_CONFIG_MAX_SECTIONS)
        return ars_error(ARS_EINVAL, "%s:%d: more than %d sections", c->path, line, ARS_CONFIG_MAX_SECTIONS);

    ars_config_section *sec = push_written(c);
    if (!sec) return ars_error(ARS_ENOMEM, "%s: out of memory", c->path);
    memcpy(sec->name, name, name_len);
    sec->name[name_len] = '\0';
    sec->line = line;
    st->section_keys = 0;
    return 0;
}

/* One line of the source. A key line goes to inih (*key_line, *key_len)
 * without its indentation and comment, so that inih never sees a
 * continuation line; other lines give it nothing (*key_len = 0). */
static int read_source_line(parse_state *st, int line, const char *s, size_t len, const char **key_line,
                            size_t *key_len)
{
    ars_config *c = st->config;
    *key_len = 0;
    trim(&s, &len);
    if (len == 0 || s[0] == ';' || s[0] == '#') return 0;
    if (s[0] == '[') return read_header(st, line, s, len);

    /* Drop an inline comment (';' after a space, where inih cuts too) so it
     * does not count against the line limit. */
    for (size_t i = 1; i < len; i++)
        if (s[i] == ';' && is_space(s[i - 1])) {
            len = i;
            trim(&s, &len);
            break;
        }
    char shown[96];
    excerpt(shown, sizeof shown, s, len, 60);
    if (c->written_count == 0)
        return ars_error(ARS_EINVAL, "%s:%d: '%s' comes before any [section] header", c->path, line, shown);
    if (len > MAX_LINE)
        return ars_error(ARS_EINVAL, "%s:%d: line is %zu characters long, at most %d are allowed ('%s')", c->path,
                         line, len, MAX_LINE, shown);
    if (st->section_keys >= ARS_CONFIG_MAX_KEYS)
        return ars_error(ARS_EINVAL, "%s:%d: [%s] has more than %d keys", c->path, line,
                         c->written[c->written_count - 1].name, ARS_CONFIG_MAX_KEYS);
    if (st->keys >= ARS_CONFIG_MAX_ENTRIES)
        return ars_error(ARS_EINVAL, "%s:%d: more than %d keys", c->path, line, ARS_CONFIG_MAX_ENTRIES);
    st->section_keys++;
    st->keys++;
    *key_line = s;
    *key_len = len;
    return 0;
}

/* The ini_reader (fgets-style): exactly one source line per call. */
static char *read_line(char *str, int num, void *stream)
{
    parse_state *st = stream;
    if (st->read_error || !*st->next) return NULL;
    const char *s = st->next, *eol = strchr(s, '\n'), *key_line = NULL;
    size_t len = eol ? (size_t)(eol - s) : strlen(s), key_len;
    st->next = s + len + (eol != NULL);
    int rc = read_source_line(st, ++st->line, s, len, &key_line, &key_len);
    if (!rc && key_len + 2 > (size_t)num) /* MAX_LINE leaves room for "\n" and NUL in INI_MAX_LINE */
        rc = ars_error(ARS_EINVAL, "%s:%d: line of %zu characters: inih's buffer holds %d", st->config->path,
                       st->line, key_len, num);
    if (rc) {
        st->read_error = rc;
        return NULL;
    }
    if (key_len) memcpy(str, key_line, key_len);
    str[key_len] = '\n';
    str[key_len + 1] = '\0';
    return str;
}

/* Records the handler's first error; inih goes on parsing regardless. */
static int handler_error(parse_state *st, int line, int code)
{
    st->error_line = line;
    st->error_code = code;
    return 1;
}

/* section is always "": the reader hands inih no headers; the entry
 * belongs to the section the reader read last. */
static int on_entry(void *user, const char *section, const char *name, const char *value)
{
    parse_state *st = user;
    ars_config *c = st->config;
    (void)section;
    if (st->error_line) return 1;
    if (!value || c->written_count == 0) return 0; /* inih flags the line */

    ars_config_section *s = &c->written[c->written_count - 1];
    int line = st->line;
    char shown[96];
    size_t key_len = strlen(name);
    excerpt(shown, sizeof shown, name, key_len, 60);
    if (key_len == 0)
        return handler_error(st, line, ars_error(ARS_EINVAL, "%s:%d: [%s] a key is missing before '='",
                                                 c->path, line, s->name));
    if (key_len > (size_t)KEY_MAX)
        return handler_error(st, line, ars_error(ARS_EINVAL, "%s:%d: [%s] key '%s' is too long (at most %d "
                                                 "characters)", c->path, line, s->name, shown, KEY_MAX));
    for (size_t i = 0; i < key_len; i++)
        if (!is_key_char(name[i]))
            return handler_error(st, line, ars_error(ARS_EINVAL, "%s:%d: [%s] key '%s': expected letters, "
                                                     "digits, '_', '-' or '.'", c->path, line, s->name, shown));
    if (strlen(value) > (size_t)VALUE_MAX)
        return handler_error(st, line, ars_error(ARS_EINVAL, "%s:%d: [%s] %s: value is too long (at most %d "
                                                 "characters)", c->path, line, s->name, name, VALUE_MAX));
    const ars_config_entry *first = lookup(s, name);
    if (first)
        return handler_error(st, line, ars_error(ARS_EINVAL, "%s:%d: [%s] duplicate key '%s' (first set on "
                                                 "line %d)", c->path, line, s->name, name, first->line));
    if (!add_entry(s, name, value, line))
        return handler_error(st, line, ars_error(ARS_ENOMEM, "%s: out of memory", c->path));
    return 1;
}

/* The text of line `line` of the source (for syntax error messages). */
static void source_line(const char *source, int line, const char **start, size_t *len)
{
    const char *p = source;
    for (int i = 1; i < line && p; i++) {
        p = strchr(p, '\n');
        if (p) p++;
    }
    if (!p) p = "";
    const char *eol = strchr(p, '\n');
    *start = p;
    *len = eol ? (size_t)(eol - p) : strlen(p);
}

/* Which error wins: the reader's, wherever it is; else the first in the
 * file of inih's syntax errors and the handler's. */
static int parse(parse_state *st)
{
    ars_config *c = st->config;
    st->next = c->source;
    if (strncmp(st->next, "\xEF\xBB\xBF", 3) == 0) st->next += 3; /* UTF-8 BOM, as inih */
    int r = ini_parse_stream(read_line, st, on_entry, st);
    /* An inih built to stop at its first error leaves lines unread; the
     * reader's checks still see every line. */
    char rest[MAX_LINE + 2];
    while (read_line(rest, (int)sizeof rest, st)) continue;
    if (st->read_error) return st->read_error;

    name_ref *refs = sorted_names(c->written, c->written_count);
    if (!refs) return ars_error(ARS_ENOMEM, "%s: out of memory", c->path);
    for (int i = 0; i < c->written_count; i++) {
        int same = i > 0 && strcmp(refs[i].name, refs[i - 1].name) == 0;
        c->written[refs[i].index].occurrence = same ? c->written[refs[i - 1].index].occurrence + 1 : 1;
    }
    free(refs);

    if (r > 0 && (!st->error_line || r <= st->error_line)) {
        const char *text;
        size_t len;
        source_line(c->source, r, &text, &len);
        return syntax_error(c, r, text, len, "expected 'key = value', '[section]' or a comment");
    }
    if (st->error_line) return st->error_code;
    if (r == -2) return ars_error(ARS_ENOMEM, "%s: out of memory", c->path);
    if (r != 0) return ars_error(ARS_EINVAL, "%s: inih failed (%d)", c->path, r);
    return 0;
}

/* ---- blocks --------------------------------------------------------------- */

/* Pairs each [repeat]/[residual] with its [end], both ways: match[i] is the
 * partner's index, -1 for other sections. Also rejects keys on [end]. */
static int match_blocks(const ars_config *c, int *match)
{
    int stack[ARS_CONFIG_MAX_DEPTH], depth = 0;
    for (int i = 0; i < c->written_count; i++) {
        const ars_config_section *s = &c->written[i];
        match[i] = -1;
        if (is_opener(s)) {
            if (depth == ARS_CONFIG_MAX_DEPTH)
                return ars_error(ARS_EINVAL, "%s:%d: [%s] nested more than %d blocks deep", c->path, s->line,
                                 s->name, ARS_CONFIG_MAX_DEPTH);
            stack[depth++] = i;
        } else if (is_named(s, "end")) {
            if (depth == 0)
                return ars_error(ARS_EINVAL, "%s:%d: [end] without an open [repeat] or [residual]", c->path,
                                 s->line);
            if (s->entry_count) {
                const ars_config_entry *e = &s->entries[0];
                if (e->line)
                    return ars_error(ARS_EINVAL, "%s:%d: [end] takes no keys, found '%s'", c->path, e->line,
                                     e->key);
                return ars_error(ARS_EINVAL, "--set end.%s: [end] takes no keys", e->key);
            }
            int open = stack[--depth];
            match[open] = i, match[i] = open;
        }
    }
    if (depth) {
        const ars_config_section *s = &c->written[stack[depth - 1]];
        return ars_error(ARS_EINVAL, "%s:%d: [%s] is never closed: add [end] after its sections", c->path,
                         s->line, s->name);
    }
    return 0;
}

/* counts[i] = the count of each [repeat]; its only key. */
static int repeat_counts(ars_config *c, long *counts)
{
    for (int i = 0; i < c->written_count; i++) {
        ars_config_section *s = &c->written[i];
        counts[i] = 0;
        if (!is_named(s, "repeat")) continue;
        for (int j = 0; j < s->entry_count; j++) {
            const ars_config_entry *e = &s->entries[j];
            if (strcmp(e->key, "count") == 0) continue;
            if (e->line)
                return ars_error(ARS_EINVAL, "%s:%d: [repeat] unknown key '%s' (it takes only count)", c->path,
                                 e->line, e->key);
            return ars_error(ARS_EINVAL, "--set repeat.%s: unknown key ([repeat] takes only count)", e->key);
        }
        if (!lookup(s, "count"))
            return ars_error(ARS_EINVAL, "%s:%d: [repeat] needs count = N (1..%d)", c->path, s->line,
                             ARS_CONFIG_MAX_REPEAT);
        int rc = ars_config_get_int(c, s, "count", 1, 1, ARS_CONFIG_MAX_REPEAT, &counts[i]);
        if (rc) return rc;
    }
    return 0;
}

/* Saturating arithmetic: sizes only need to be known up to the limit. */
static long long saturate(long long x) { return x > ARS_CONFIG_MAX_SECTIONS ? ARS_CONFIG_MAX_SECTIONS + 1LL : x; }

/* Sections and entries the written range [begin, end) expands to. */
static void measure(const ars_config *c, const int *match, const long *counts, int begin, int end,
                    long long *sections, long long *entries)
{
    for (int i = begin; i < end; i++) {
        const ars_config_section *s = &c->written[i];
        if (is_named(s, "repeat")) {
            long long inner_sections = 0, inner_entries = 0;
            measure(c, match, counts, i + 1, match[i], &inner_sections, &inner_entries);
            *sections = saturate(*sections + saturate(inner_sections * counts[i]));
            *entries = saturate(*entries + saturate(inner_entries * counts[i]));
            i = match[i];
        } else { /* a layer, [residual], or the [end] of a residual (residual_add) */
            *sections = saturate(*sections + 1);
            *entries = saturate(*entries + s->entry_count);
        }
    }
}

static int append_copy(ars_config *c, const ars_config_section *s, const char *name, int line, int occurrence)
{
    ars_config_section *out = &c->sections[c->section_count];
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->line = line;
    out->occurrence = occurrence;
    if (s && s->entry_count) {
        out->entries = malloc((size_t)s->entry_count * sizeof *out->entries);
        if (!out->entries) return ars_error(ARS_ENOMEM, "%s: out of memory expanding blocks", c->path);
        memcpy(out->entries, s->entries, (size_t)s->entry_count * sizeof *out->entries);
        for (int j = 0; j < s->entry_count; j++) out->entries[j].used = 0;
        out->entry_count = out->entry_capacity = s->entry_count;
    }
    c->section_count++;
    return 0;
}

/* Appends the expansion of the written range [begin, end); sized by measure. */
static int emit(ars_config *c, const int *match, const long *counts, int begin, int end)
{
    for (int i = begin; i < end; i++) {
        const ars_config_section *s = &c->written[i];
        int rc;
        if (is_named(s, "repeat")) {
            for (long r = 0; r < counts[i]; r++)
                if ((rc = emit(c, match, counts, i + 1, match[i]))) return rc;
            i = match[i];
            continue;
        }
        if (is_named(s, "end")) /* a repeat's [end] was jumped over: this closes a residual */
            rc = append_copy(c, NULL, "residual_add", s->line, c->written[match[i]].occurrence);
        else
            rc = append_copy(c, s, s->name, s->line, s->occurrence);
        if (rc) return rc;
    }
    return 0;
}

int ars_config_expand(ars_config *config)
{
    if (!config) return ars_error(ARS_EINVAL, "ars_config_expand: config is NULL");
    ars_config *c = config;
    free_sections(c->sections, c->section_count);
    c->sections = NULL;
    c->section_count = c->section_capacity = 0;
    c->expanded = 0;

    int n = c->written_count;
    int *match = malloc((size_t)(n ? n : 1) * sizeof *match);
    long *counts = malloc((size_t)(n ? n : 1) * sizeof *counts);
    int rc = match && counts ? 0 : ars_error(ARS_ENOMEM, "%s: out of memory", c->path);
    if (!rc) rc = match_blocks(c, match);
    if (!rc) rc = repeat_counts(c, counts);
    long long sections = 0, entries = 0;
    if (!rc) measure(c, match, counts, 0, n, &sections, &entries);
    if (!rc && sections > ARS_CONFIG_MAX_SECTIONS)
        rc = ars_error(ARS_EINVAL, "%s: [repeat] blocks expand to more than %d sections", c->path,
                       ARS_CONFIG_MAX_SECTIONS);
    if (!rc && entries > ARS_CONFIG_MAX_ENTRIES)
        rc = ars_error(ARS_EINVAL, "%s: [repeat] blocks expand to more than %d keys", c->path,
                       ARS_CONFIG_MAX_ENTRIES);
    if (!rc && sections > 0) {
        c->sections = malloc((size_t)sections * sizeof *c->sections);
        if (!c->sections) rc = ars_error(ARS_ENOMEM, "%s: out of memory expanding blocks", c->path);
        else c->section_capacity = (int)sections;
    }
    if (!rc) rc = emit(c, match, counts, 0, n);
    free(match);
    free(counts);
    if (rc) {
        free_sections(c->sections, c->section_count);
        c->sections = NULL;
        c->section_count = c->section_capacity = 0;
        return rc;
    }
    c->expanded = 1;
    return 0;
}

/* ---- load / free ---------------------------------------------------------- */

static int load_text(ars_config *config, const char *text, size_t len, const char *label)
{
    memset(config, 0, sizeof *config);
    snprintf(config->path, sizeof config->path, "%s", label ? label : "<string>");
    if (len > ARS_CONFIG_MAX_TEXT)
        return ars_error(ARS_EINVAL, "%s: run file is %zu bytes, at most %d are allowed", config->path, len,
                         ARS_CONFIG_MAX_TEXT);
    config->source = malloc(len + 1);
    if (!config->source) return ars_error(ARS_ENOMEM, "%s: out of memory", config->path);
    memcpy(config->source, text, len);
    config->source[len] = '\0';

    parse_state st = {.config = config};
    int rc = parse(&st);
    if (!rc) { /* block structure cannot change with overrides: report it now */
        int *match = malloc((size_t)(config->written_count ? config->written_count : 1) * sizeof *match);
        rc = match ? match_blocks(config, match) : ars_error(ARS_ENOMEM, "%s: out of memory", config->path);
        free(match);
    }
    if (rc) ars_config_free(config);
    return rc;
}

int ars_config_load_string(ars_config *config, const char *text, const char *label)
{
    if (!config) return ars_error(ARS_EINVAL, "ars_config_load_string: config is NULL");
    if (!text) {
        memset(config, 0, sizeof *config);
        return ars_error(ARS_EINVAL, "ars_config_load_string: text is NULL");
    }
    return load_text(config, text, strlen(text), label);
}

int ars_config_load_file(ars_config *config, const char *path)
{
    if (!config) return ars_error(ARS_EINVAL, "ars_config_load_file: config is NULL");
    memset(config, 0, sizeof *config);
    if (!path) return ars_error(ARS_EINVAL, "ars_config_load_file: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return ars_error(ARS_EIO, "cannot open run file '%s': %s", path, strerror(errno));
    strbuf text = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0 && text.n <= ARS_CONFIG_MAX_TEXT)
        sb_append(&text, chunk, got);
    int read_error = ferror(f), saved = errno;
    fclose(f);
    int rc = 0;
    if (read_error) rc = ars_error(ARS_EIO, "cannot read run file '%s': %s", path, strerror(saved));
    else if (text.failed) rc = ars_error(ARS_ENOMEM, "%s: out of memory", path);
    else if (text.n > ARS_CONFIG_MAX_TEXT)
        rc = ars_error(ARS_EINVAL, "%s: run file is larger than %d bytes", path, ARS_CONFIG_MAX_TEXT);
    else if (text.n && memchr(text.s, '\0', text.n)) {
        const char *nul = memchr(text.s, '\0', text.n);
        int line = 1;
        for (const char *p = text.s; p < nul; p++) line += *p == '\n';
        rc = ars_error(ARS_EINVAL, "%s:%d: NUL byte: not a text file", path, line);
    }
    if (!rc) rc = load_text(config, text.s ? text.s : "", text.n, path);
    free(text.s);
    return rc;
}

void ars_config_free(ars_config *config)
{
    if (!config) return;
    free_sections(config->sections, config->section_count);
    free_sections(config->written, config->written_count);
    free(config->source);
    memset(config, 0, sizeof *config);
}

/* ---- overrides -------------------------------------------------------------- */

static int malformed(const char *assignment, const char *why)
{
    char shown[96];
    excerpt(shown, sizeof shown, assignment, strlen(assignment), 80);
    return ars_error(ARS_EINVAL, "--set '%s': %s; expected section.key=value or section#k.key=value "
                     "(e.g. run.lr=0.01, dense#2.units=64)", shown, why);
}

/* Sets key in s (adding it when absent), as from the command line;
 * *total counts the keys of all written sections. */
static int set_entry(ars_config_section *s, const char *key, const char *value, long *total)
{
    ars_config_entry *e = lookup(s, key);
    if (e) {
        snprintf(e->value, sizeof e->value, "%s", value);
        e->line = 0;
        return 0;
    }
    if (s->entry_count >= ARS_CONFIG_MAX_KEYS)
        return ars_error(ARS_EINVAL, "--set %s.%s: [%s] already has %d keys", s->name, key, s->name,
                         ARS_CONFIG_MAX_KEYS);
    if (*total >= ARS_CONFIG_MAX_ENTRIES)
        return ars_error(ARS_EINVAL, "--set %s.%s: more than %d keys", s->name, key, ARS_CONFIG_MAX_ENTRIES);
    if (!add_entry(s, key, value, 0)) return ars_error(ARS_ENOMEM, "--set: out of memory");
    (*total)++;
    return 0;
}

/* The value must print back as the same value: one line, no inline
 * comment, short enough for inih. */
static int check_override_value(const char *assignment, const char *key, const char *value, size_t len)
{
    if (len > (size_t)VALUE_MAX) return malformed(assignment, "value is too long");
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)value[i] < 32 || value[i] == 127)
            return malformed(assignment, "control character in the value");
        if (value[i] == ';' && i > 0 && is_space(value[i - 1]))
            return malformed(assignment, "' ;' in the value would start a comment");
    }
    if (strlen(key) + 3 + len > (size_t)MAX_LINE) return malformed(assignment, "line too long for the run file");
    return 0;
}

int ars_config_override(ars_config *config, const char *assignment)
{
    if (!config || !assignment) return ars_error(ARS_EINVAL, "ars_config_override: NULL argument");
    if (config->expanded)
        return ars_error(ARS_EINVAL, "--set '%s': overrides must come before ars_config_expand", assignment);
    const char *eq = strchr(assignment, '=');
    if (!eq) return malformed(assignment, "no '='");
    const char *lhs = assignment, *value = eq + 1;
    size_t lhs_len = (size_t)(eq - assignment), value_len = strlen(value);
    trim(&lhs, &lhs_len);
    trim(&value, &value_len);
    const char *dot = memchr(lhs, '.', lhs_len);
    if (!dot) return malformed(assignment, "no '.' between section and key");
    const char *name = lhs, *key = dot + 1;
    size_t name_len = (size_t)(dot - lhs), key_len = lhs_len - name_len - 1;
    trim(&name, &name_len);
    trim(&key, &key_len);

    long occurrence = 0; /* 0: every section of that name */
    const char *hash = memchr(name, '#', name_len);
    if (hash) {
        const char *digits = hash + 1;
        size_t n_digits = name_len - (size_t)(digits - name);
        occurrence = n_digits && n_digits < 10 ? 0 : -1;
        for (size_t i = 0; i < n_digits && occurrence >= 0; i++)
            occurrence = digits[i] >= '0' && digits[i] <= '9' ? occurrence * 10 + (digits[i] - '0') : -1;
        if (occurrence <= 0) return malformed(assignment, "expected a number 1, 2, ... after '#'");
        name_len = (size_t)(hash - name);
        trim(&name, &name_len);
    }
    if (name_len == 0) return malformed(assignment, "no section name");
    if (key_len == 0) return malformed(assignment, "no key");
    if (key_len > (size_t)KEY_MAX) return malformed(assignment, "key is too long");
    for (size_t i = 0; i < key_len; i++)
        if (!is_key_char(key[i])) return malformed(assignment, "keys have letters, digits, '_', '-' or '.'");

    char section_name[sizeof config->written[0].name] = "", key_text[KEY_MAX + 1], value_text[VALUE_MAX + 1];
    memcpy(key_text, key, key_len);
    key_text[key_len] = '\0';
    int rc = check_override_value(assignment, key_text, value, value_len);
    if (rc) return rc;
    memcpy(value_text, value, value_len);
    value_text[value_len] = '\0';
    if (name_len < sizeof section_name) memcpy(section_name, name, name_len), section_name[name_len] = '\0';

    int named = 0, changed = 0;
    long total = total_entries(config->written, config->written_count);
    for (int i = 0; i < config->written_count && !rc; i++) {
        ars_config_section *s = &config->written[i];
        if (!section_name[0] || strcmp(s->name, section_name) != 0) continue;
        named++;
        if (occurrence && s->occurrence != occurrence) continue;
        rc = set_entry(s, key_text, value_text, &total);
        changed++;
    }
    if (rc) return rc;
    char shown[96];
    excerpt(shown, sizeof shown, assignment, strlen(assignment), 80);
    if (named && !changed)
        return ars_error(ARS_EINVAL, "--set '%s': %s has only %d [%s] section%s", shown, config->path, named,
                         section_name, named == 1 ? "" : "s");
    if (!named) {
        char names[1024];
        list_names(names, sizeof names, config->written, config->written_count);
        char wanted[96];
        excerpt(wanted, sizeof wanted, name, name_len, 60);
        return ars_error(ARS_EINVAL, "--set '%s': %s has no section [%s]; its sections: %s", shown, config->path,
                         wanted, names[0] ? names : "(none)");
    }
    return 0;
}

int ars_config_override_all(ars_config *config, char *const *assignments, int count)
{
    for (int i = 0; i < count; i++) {
        int rc = ars_config_override(config, assignments[i]);
        if (rc) return ars_error_context(rc, "--set %s", assignments[i]);
    }
    return 0;
}

/* ---- lookups and getters ---------------------------------------------------- */

ars_config_section *ars_config_find(ars_config *config, const char *name)
{
    if (!config || !name) return NULL;
    for (int i = 0; i < config->section_count; i++)
        if (is_named(&config->sections[i], name)) return &config->sections[i];
    return NULL;
}

int ars_config_has(const ars_config_section *section, const char *key)
{
    return lookup((ars_config_section *)section, key) != NULL;
}

static int invalid(const ars_config *c, const ars_config_section *s, const ars_config_entry *e,
                   const char *expected)
{
    char value[128];
    excerpt(value, sizeof value, e->value, strlen(e->value), 100);
    if (e->line > 0)
        return ars_error(ARS_EINVAL, "%s:%d: [%s] %s = '%s': expected %s", c ? c->path : "?", e->line, s->name,
                         e->key, value, expected);
    return ars_error(ARS_EINVAL, "--set %s.%s = '%s': expected %s", s->name, e->key, value, expected);
}

int ars_config_get_int(const ars_config *config, ars_config_section *section, const char *key, long fallback,
                       long min, long max, long *out)
{
    if (!out) return ars_error(ARS_EINVAL, "ars_config_get_int: out is NULL");
    *out = fallback;
    ars_config_entry *e = lookup(section, key);
    if (!e) return 0;
    e->used = 1;
    char *end;
    errno = 0;
    long v = strtol(e->value, &end, 10);
    if (end != e->value && *end == '\0' && errno == 0 && v >= min && v <= max) {
        *out = v;
        return 0;
    }
    char expected[96];
    if (min == LONG_MIN && max == LONG_MAX) snprintf(expected, sizeof expected, "an integer");
    else if (max == LONG_MAX) snprintf(expected, sizeof expected, "an integer >= %ld", min);
    else if (min == LONG_MIN) snprintf(expected, sizeof expected, "an integer <= %ld", max);
    else snprintf(expected, sizeof expected, "an integer in %ld..%ld", min, max);
    return invalid(config, section, e, expected);
}

int ars_config_get_double(const ars_config *config, ars_config_section *section, const char *key,
                          double fallback, double min, double max, double *out)
{
    if (!out) return ars_error(ARS_EINVAL, "ars_config_get_double: out is NULL");
    *out = fallback;
    ars_config_entry *e = lookup(section, key);
    if (!e) return 0;
    e->used = 1;
    char *end;
    double v = strtod(e->value, &end);
    /* overflow gives inf, caught by isfinite; underflow is close enough */
    if (end != e->value && *end == '\0' && isfinite(v) && v >= min && v <= max) {
        *out = v;
        return 0;
    }
    char expected[96];
    int low = isfinite(min) && min > -DBL_MAX, high = isfinite(max) && max < DBL_MAX;
    if (low && high) snprintf(expected, sizeof expected, "a number in [%g, %g]", min, max);
    else if (low) snprintf(expected, sizeof expected, "a number >= %g", min);
    else if (high) snprintf(expected, sizeof expected, "a number <= %g", max);
    else snprintf(expected, sizeof expected, "a finite number");
    return invalid(config, section, e, expected);
}

int ars_config_get_bool(const ars_config *config, ars_config_section *section, const char *key, int fallback,
                        int *out)
{
    static const char *const truths[] = {"true", "yes", "on", "1"}, *const lies[] = {"false", "no", "off", "0"};
    if (!out) return ars_error(ARS_EINVAL, "ars_config_get_bool: out is NULL");
    *out = fallback;
    ars_config_entry *e = lookup(section, key);
    if (!e) return 0;
    e->used = 1;
    for (size_t i = 0; i < sizeof truths / sizeof truths[0]; i++) {
        if (equals_ignore_case(e->value, truths[i])) return *out = 1, 0;
        if (equals_ignore_case(e->value, lies[i])) return *out = 0, 0;
    }
    return invalid(config, section, e, "true/false, yes/no, on/off or 1/0");
}

int ars_config_get_string(const ars_config *config, ars_config_section *section, const char *key,
                          const char *fallback, const char *const *choices, char *out, size_t out_size)
{
    if (!out || out_size == 0) return ars_error(ARS_EINVAL, "ars_config_get_string: no output buffer");
    if (!fallback) fallback = "";
    if (strlen(fallback) >= out_size)
        return ars_error(ARS_EINVAL, "ars_config_get_string: fallback for '%s' is longer than the buffer",
                         key ? key : "?");
    snprintf(out, out_size, "%s", fallback);
    ars_config_entry *e = lookup(section, key);
    if (!e) return 0;
    e->used = 1;
    int ok = !choices;
    for (size_t i = 0; choices && choices[i] && !ok; i++) ok = strcmp(e->value, choices[i]) == 0;
    char expected[1024];
    if (!ok) {
        size_t used = (size_t)snprintf(expected, sizeof expected, "one of:");
        for (size_t i = 0; choices[i] && used < sizeof expected; i++)
            used += (size_t)snprintf(expected + used, sizeof expected - used, "%s %s", i ? "," : "", choices[i]);
        return invalid(config, section, e, expected);
    }
    if (strlen(e->value) >= out_size) {
        snprintf(expected, sizeof expected, "at most %zu characters", out_size - 1);
        return invalid(config, section, e, expected);
    }
    snprintf(out, out_size, "%s", e->value);
    return 0;
}

int ars_config_check_unused(const ars_config *config)
{
    if (!config) return ars_error(ARS_EINVAL, "ars_config_check_unused: config is NULL");
    for (int i = 0; i < config->section_count; i++) {
        const ars_config_section *s = &config->sections[i];
        for (int j = 0; j < s->entry_count; j++) {
            const ars_config_entry *e = &s->entries[j];
            if (e->used) continue;
            if (e->line)
                return ars_error(ARS_EINVAL, "%s:%d: [%s] unknown key '%s'", config->path, e->line, s->name,
                                 e->key);
            return ars_error(ARS_EINVAL, "--set %s.%s: unknown key", s->name, e->key);
        }
    }
    return 0;
}

/* ---- printing ------------------------------------------------------------------ */

char *ars_config_to_string(const ars_config *config)
{
    strbuf b = {0};
    sb_puts(&b, "");
    int depth = 0;
    for (int i = 0; config && i < config->written_count; i++) {
        const ars_config_section *s = &config->written[i];
        int end = is_named(s, "end");
        if (end && depth > 0) depth--;
        if (i > 0 && depth == 0 && !end) sb_puts(&b, "\n"); /* between top-level sections */
        sb_indent(&b, depth);
        sb_puts(&b, "[");
        sb_puts(&b, s->name);
        sb_puts(&b, "]\n");
        for (int j = 0; j < s->entry_count; j++) {
            const ars_config_entry *e = &s->entries[j];
            /* inih reads " ;" as a comment, and "key=value" always fits
             * where it was read from, "key = value" not quite */
            int spaced = e->value[0] != ';' && strlen(e->key) + 3 + strlen(e->value) <= (size_t)MAX_LINE;
            sb_indent(&b, depth);
            sb_puts(&b, e->key);
            sb_puts(&b, spaced ? " = " : "=");
            sb_puts(&b, e->value);
            sb_puts(&b, "\n");
        }
        if (is_opener(s)) depth++;
    }
    if (b.failed) {
        free(b.s);
        ars_error(ARS_ENOMEM, "ars_config_to_string: out of memory");
        return NULL;
    }
    return b.s;
}

/* config: the run file. INI sections in the spirit of Darknet's .cfg, read
 * with inih: a [run] section, then one section per layer in order. Blocks:
 *   [repeat] count = N ... [end]   the sections between, N times
 *   [residual] ... [end]           y = x + F(x); [end] becomes [residual_add]
 * Sections may repeat, so each is kept with its occurrence number and line.
 * `--set name.key=value` overrides a key in every section called name;
 * `--set name#k.key=value` in the k-th (1-based) only. Typed getters
 * validate and mark keys used; ars_config_check_unused() then rejects any
 * key nobody asked for (a typo), naming file, line and section.
 *
 * Lifecycle: load -> override... -> expand -> find/get... -> check_unused
 * -> free. Syntax: ';' or '#' starts a comment line, " ;" an inline
 * comment ("key = value ; note"); indentation is ignored (no continuation
 * lines). Section names: letters, digits, '_' and '-'; keys also '.'. A
 * key line may hold at most 197 characters without indentation and comment
 * (inih's line buffer). */
#ifndef ARSENAL_CONFIG_H
#define ARSENAL_CONFIG_H

#include <stddef.h>

typedef struct ars_config_entry {
    char key[48];
    char value[256];
    int line;            /* 0 when it came from --set */
    int used;
} ars_config_entry;

typedef struct ars_config_section {
    char name[48];
    int line;            /* line of the [header] (of [end] for residual_add) */
    int occurrence;      /* k-th section of this name in the file, 1-based */
    ars_config_entry *entries;
    int entry_count, entry_capacity;
} ars_config_section;

typedef struct ars_config {
    char path[512];      /* file name for messages */
    ars_config_section *sections;   /* after block expansion, in order;
                                       empty until ars_config_expand */
    int section_count, section_capacity;
    char *source;        /* the text as read */
    /* The sections as written (blocks not expanded) with overrides applied:
     * what ars_config_expand and ars_config_to_string work from. */
    ars_config_section *written;
    int written_count, written_capacity;
    int expanded;        /* ars_config_expand succeeded */
} ars_config;

/* Limits: past them loading or expanding fails with a clear error. */
enum {
    ARS_CONFIG_MAX_TEXT = 16 << 20,     /* bytes of run file */
    ARS_CONFIG_MAX_SECTIONS = 1000000,  /* sections, as written or expanded */
    ARS_CONFIG_MAX_ENTRIES = 1000000,   /* keys in all sections, likewise */
    ARS_CONFIG_MAX_KEYS = 1000,         /* keys in one section */
    ARS_CONFIG_MAX_DEPTH = 64,          /* nesting of [repeat]/[residual] */
    ARS_CONFIG_MAX_REPEAT = 1000000     /* [repeat] count */
};

/* Both overwrite *config (free a previous load first). On failure *config
 * is left empty, so ars_config_free is safe either way. label names the
 * text in messages (NULL: "<string>"). */
int ars_config_load_file(ars_config *config, const char *path);
int ars_config_load_string(ars_config *config, const char *text, const char *label);
/* Frees everything and zeroes *config; safe on a zeroed config. */
void ars_config_free(ars_config *config);

/* "section.key=value" or "section#k.key=value"; must be called before
 * ars_config_expand. Applies to the sections as written (a section inside a
 * [repeat] changes in every copy). Adds the key if absent. The value runs to
 * the end (it may contain '='); surrounding spaces are dropped. */
int ars_config_override(ars_config *config, const char *assignment);
/* The --set overrides of a command line, in order: the first that fails
 * stops, its error in the context "--set ASSIGNMENT". */
int ars_config_override_all(ars_config *config, char *const *assignments, int count);

/* Expands [repeat] and [residual] blocks into the flat section list.
 * Errors: [end] without a block, a block without [end], bad count. Copies
 * keep the line and occurrence of the section as written; residual_add takes
 * the line of its [end] and the occurrence of its [residual]. Calling it
 * again rebuilds the list (and forgets which keys were read). */
int ars_config_expand(ars_config *config);

/* First section named name, or NULL. */
ars_config_section *ars_config_find(ars_config *config, const char *name);

/* Getters: 0 and *out set when present and valid; *out = fallback and 0
 * when absent (also when section is NULL); ARS_EINVAL with "file:line:
 * [section] key = 'value': expected ..." when invalid ("--set section.key
 * = 'value': ..." for an override). All mark the entry used. Bools: true/
 * false, yes/no, on/off, 1/0 (any case). Doubles must be finite. */
int ars_config_get_int(const ars_config *config, ars_config_section *section, const char *key,
                       long fallback, long min, long max, long *out);
int ars_config_get_double(const ars_config *config, ars_config_section *section, const char *key,
                          double fallback, double min, double max, double *out);
int ars_config_get_bool(const ars_config *config, ars_config_section *section, const char *key,
                        int fallback, int *out);
/* choices: NULL-terminated list; NULL choices = any string. A value that
 * does not fit out_size is an error; fallback NULL means "". */
int ars_config_get_string(const ars_config *config, ars_config_section *section, const char *key,
                          const char *fallback, const char *const *choices,
                          char *out, size_t out_size);
/* 1 when section has key (does not mark it used). */
int ars_config_has(const ars_config_section *section, const char *key);

/* ARS_EINVAL for the first entry of the expanded sections never read by a
 * getter: "file:line: [section] unknown key 'k'", or "--set section.key:
 * unknown key" for an override. */
int ars_config_check_unused(const ars_config *config);

/* The resolved run file: the sections as written (blocks not expanded, so
 * it stays short) with --set overrides applied, as INI text that loads back
 * to the same config (blocks indented). Caller frees; NULL when out of
 * memory. */
char *ars_config_to_string(const ars_config *config);

#endif

/* test_config: the run-file parser (src/config.c): sections and blocks,
 * line numbers, getters and their messages, overrides, unused keys, the
 * printed form, and malformed input that must fail cleanly. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/config.h"
#include "arsenal/error.h"

static const char *const example =
    "[run]\n"                 /* 1 */
    "data = fashion-mnist\n"  /* 2 */
    "epochs = 5\n"            /* 3 */
    "lr = 1e-3\n"             /* 4 */
    "[dense]\n"               /* 5 */
    "units = 256\n"           /* 6 */
    "[relu]\n"                /* 7 */
    "[repeat]\n"              /* 8 */
    "count = 3\n"             /* 9 */
    "[dense]\n"               /* 10 */
    "units = 256\n"           /* 11 */
    "[residual]\n"            /* 12 */
    "[batchnorm]\n"           /* 13 */
    "[relu]\n"                /* 14 */
    "[dense]\n"               /* 15 */
    "units = 256\n"           /* 16 */
    "[end]\n"                 /* 17 */
    "[end]\n"                 /* 18 */
    "[dense]\n"               /* 19 */
    "units = 10\n";           /* 20 */

/* Fails unless the last error message contains needle. */
static void assert_message_has(const char *needle)
{
    if (!strstr(ars_error_message(), needle))
        fail_msg("expected '%s' in the error message: '%s'", needle, ars_error_message());
}

static void load_expanded(ars_config *c, const char *text)
{
    ARS_ASSERT_OK(ars_config_load_string(c, text, "t.cfg"));
    ARS_ASSERT_OK(ars_config_expand(c));
}

/* Loading (or, if it loads, expanding) text fails with EINVAL and a message
 * containing each of the NULL-terminated needles. */
static void expect_error(const char *text, const char *needle, ...)
{
    ars_config c;
    int rc = ars_config_load_string(&c, text, "t.cfg");
    if (rc == 0) rc = ars_config_expand(&c);
    ars_config_free(&c);
    assert_int_equal(rc, ARS_EINVAL);
    va_list ap;
    va_start(ap, needle);
    for (const char *n = needle; n; n = va_arg(ap, const char *)) assert_message_has(n);
    va_end(ap);
}

static void test_example(void **state)
{
    (void)state;
    ars_config c;
    load_expanded(&c, example);
    static const struct {
        const char *name;
        int line, occurrence, keys;
    } want[] = {
        {"run", 1, 1, 3},       {"dense", 5, 1, 1},     {"relu", 7, 1, 0},
        {"dense", 10, 2, 1},    {"residual", 12, 1, 0}, {"batchnorm", 13, 1, 0},
        {"relu", 14, 2, 0},     {"dense", 15, 3, 1},    {"residual_add", 17, 1, 0},
    };
    assert_int_equal(c.section_count, 3 + 3 * 6 + 1);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(c.sections[i].name, want[i].name);
        assert_int_equal(c.sections[i].line, want[i].line);
    }
    for (int r = 0; r < 3; r++)
        for (int i = 3; i < 9; i++) {
            const ars_config_section *s = &c.sections[3 + r * 6 + (i - 3)];
            assert_string_equal(s->name, want[i].name);
            assert_int_equal(s->line, want[i].line);
            assert_int_equal(s->occurrence, want[i].occurrence);
            assert_int_equal(s->entry_count, want[i].keys);
        }
    const ars_config_section *last = &c.sections[21];
    assert_string_equal(last->name, "dense");
    assert_int_equal(last->line, 19);
    assert_int_equal(last->occurrence, 4);
    assert_string_equal(last->entries[0].key, "units");
    assert_string_equal(last->entries[0].value, "10");
    assert_int_equal(last->entries[0].line, 20);

    ars_config_section *run = ars_config_find(&c, "run");
    assert_non_null(run);
    assert_int_equal(run->entries[2].line, 4);
    assert_ptr_equal(ars_config_find(&c, "dense"), &c.sections[1]);
    assert_null(ars_config_find(&c, "conv"));
    assert_null(ars_config_find(&c, "repeat")); /* consumed by the expansion */
    assert_null(ars_config_find(&c, "end"));
    ars_config_free(&c);
    ars_config_free(&c); /* idempotent */
}

static void test_empty_sections_and_comments(void **state)
{
    (void)state;
    ars_config c;
    load_expanded(&c, "; leading comment\n"
                      "\n"
                      "[relu]\n"
                      "[relu]\n"
                      "# hash comment\n"
                      "  [ relu ]   ; trailing comment\n"
                      "[dense]\r\n"
                      "    units = 8 ; inline comment\r\n"
                      "\tbias: no\n"
                      "name = a;b\n"
                      "[relu]"); /* no final newline */
    assert_int_equal(c.section_count, 5);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(c.sections[i].name, "relu");
        assert_int_equal(c.sections[i].occurrence, i + 1);
        assert_int_equal(c.sections[i].entry_count, 0);
    }
    assert_int_equal(c.sections[0].line, 3);
    assert_int_equal(c.sections[2].line, 6);
    ars_config_section *d = &c.sections[3];
    assert_int_equal(d->line, 7);
    assert_int_equal(d->entry_count, 3);
    assert_string_equal(d->entries[0].value, "8");
    assert_int_equal(d->entries[0].line, 8);
    assert_string_equal(d->entries[1].key, "bias");
    assert_int_equal(d->entries[1].line, 9);
    assert_string_equal(d->entries[2].value, "a;b"); /* ';' without a space before is data */
    assert_int_equal(c.sections[4].line, 11);
    assert_int_equal(c.sections[4].occurrence, 4);
    ars_config_free(&c);

    load_expanded(&c, ""); /* an empty file is fine here; the model checks */
    assert_int_equal(c.section_count, 0);
    ars_config_free(&c);
    load_expanded(&c, "\xEF\xBB\xBF[run]\nepochs = 1\n");
    assert_string_equal(c.sections[0].name, "run");
    ars_config_free(&c);
}

static void test_getters(void **state)
{
    (void)state;
    ars_config c;
    load_expanded(&c, "[run]\n"
                      "epochs = 5\n"           /* 2 */
                      "lr = 1e-3\n"            /* 3 */
                      "flag = Yes\n"           /* 4 */
                      "off = off\n"            /* 5 */
                      "opt = adam\n"           /* 6 */
                      "bad_int = 5x\n"         /* 7 */
                      "big = 99999999999999999999\n" /* 8 */
                      "bad_double = nan\n"     /* 9 */
                      "bad_bool = maybe\n"     /* 10 */
                      "empty =\n");            /* 11 */
    ars_config_section *s = ars_config_find(&c, "run");
    long l;
    double d;
    int b;
    char text[16];
    static const char *const optimizers[] = {"sgd", "adam", "adamw", NULL};

    ARS_ASSERT_OK(ars_config_get_int(&c, s, "epochs", 1, 1, 100, &l));
    assert_int_equal(l, 5);
    ARS_ASSERT_OK(ars_config_get_int(&c, s, "absent", 7, 1, 100, &l));
    assert_int_equal(l, 7);
    ARS_ASSERT_OK(ars_config_get_int(&c, NULL, "epochs", 9, 1, 100, &l)); /* no section: all absent */
    assert_int_equal(l, 9);
    ARS_ASSERT_OK(ars_config_get_double(&c, s, "lr", 0.1, 0, 1, &d));
    assert_true(d == 1e-3);
    ARS_ASSERT_OK(ars_config_get_double(&c, s, "absent", 0.5, 0, 1, &d));
    assert_true(d == 0.5);
    ARS_ASSERT_OK(ars_config_get_bool(&c, s, "flag", 0, &b));
    assert_int_equal(b, 1);
    ARS_ASSERT_OK(ars_config_get_bool(&c, s, "off", 1, &b));
    assert_int_equal(b, 0);
    ARS_ASSERT_OK(ars_config_get_bool(&c, s, "absent", 1, &b));
    assert_int_equal(b, 1);
    ARS_ASSERT_OK(ars_config_get_string(&c, s, "opt", "sgd", optimizers, text, sizeof text));
    assert_string_equal(text, "adam");
    ARS_ASSERT_OK(ars_config_get_string(&c, s, "absent", "sgd", optimizers, text, sizeof text));
    assert_string_equal(text, "sgd");
    ARS_ASSERT_OK(ars_config_get_string(&c, s, "empty", "x", NULL, text, sizeof text));
    assert_string_equal(text, "");
    assert_true(ars_config_has(s, "epochs"));
    assert_false(ars_config_has(s, "absent"));

    /* out of range */
    assert_int_equal(ars_config_get_int(&c, s, "epochs", 1, 10, 100, &l), ARS_EINVAL);
    assert_message_has("t.cfg:2: [run] epochs = '5': expected an integer in 10..100");
    assert_int_equal(ars_config_get_double(&c, s, "lr", 0.1, 0.01, 1, &d), ARS_EINVAL);
    assert_message_has("t.cfg:3: [run] lr = '1e-3': expected a number in [0.01, 1]");
    /* not numbers / not in the choices */
    assert_int_equal(ars_config_get_int(&c, s, "bad_int", 1, 0, 1000, &l), ARS_EINVAL);
    assert_message_has("t.cfg:7: [run] bad_int = '5x'");
    assert_int_equal(ars_config_get_int(&c, s, "big", 1, 0, 0x7fffffffffffffffL, &l), ARS_EINVAL);
    assert_message_has("t.cfg:8:");
    assert_message_has("an integer >= 0");
    assert_int_equal(ars_config_get_double(&c, s, "bad_double", 1, -1e300, 1e300, &d), ARS_EINVAL);
    assert_message_has("t.cfg:9: [run] bad_double = 'nan'");
    assert_int_equal(ars_config_get_double(&c, s, "empty", 1, 0, 2, &d), ARS_EINVAL);
    assert_message_has("t.cfg:11: [run] empty = ''");
    assert_int_equal(ars_config_get_bool(&c, s, "bad_bool", 1, &b), ARS_EINVAL);
    assert_message_has("t.cfg:10: [run] bad_bool = 'maybe': expected true/false");
    assert_int_equal(ars_config_get_string(&c, s, "bad_bool", "sgd", optimizers, text, sizeof text), ARS_EINVAL);
    assert_message_has("expected one of: sgd, adam, adamw");
    char tiny[4];
    assert_int_equal(ars_config_get_string(&c, s, "opt", "", NULL, tiny, sizeof tiny), ARS_EINVAL);
    assert_message_has("at most 3 characters");

    ARS_ASSERT_OK(ars_config_check_unused(&c)); /* every key was read, if not valid */
    ars_config_free(&c);
}

static void test_unknown_key(void **state)
{
    (void)state;
    ars_config c;
    load_expanded(&c, "[run]\nepochs = 2\n[dense]\nunits = 4\nunitz = 5\n");
    long v;
    ARS_ASSERT_OK(ars_config_get_int(&c, &c.sections[0], "epochs", 1, 1, 9, &v));
    ARS_ASSERT_OK(ars_config_get_int(&c, &c.sections[1], "units", 1, 1, 9, &v));
    assert_int_equal(ars_config_check_unused(&c), ARS_EINVAL);
    assert_message_has("t.cfg:5: [dense] unknown key 'unitz'");
    ars_config_free(&c);

    /* an override key nobody reads */
    ARS_ASSERT_OK(ars_config_load_string(&c, "[run]\nepochs = 2\n", "t.cfg"));
    ARS_ASSERT_OK(ars_config_override(&c, "run.epocs=3"));
    ARS_ASSERT_OK(ars_config_expand(&c));
    ARS_ASSERT_OK(ars_config_get_int(&c, &c.sections[0], "epochs", 1, 1, 9, &v));
    assert_int_equal(ars_config_check_unused(&c), ARS_EINVAL);
    assert_message_has("--set run.epocs: unknown key");
    ars_config_free(&c);
}

static void test_syntax_errors(void **state)
{
    (void)state;
    expect_error("[dense]\nunits = 1\nunits = 2\n", "t.cfg:3: [dense] duplicate key 'units' (first set on line 2)",
                 NULL);
    expect_error("[a]\nk = 1\n\nthis line is bad\nj = 2\n", "t.cfg:4: syntax error", "'this line is bad'", NULL);
    expect_error("[a]\nk ; comment = 1\n", "t.cfg:2: syntax error", NULL);
    expect_error("[a]\n[b\n", "t.cfg:2: syntax error: section header without ']'", NULL);
    expect_error("[a] b\n", "t.cfg:1: syntax error: text after", NULL);
    expect_error("k = 1\n[a]\n", "t.cfg:1: 'k = 1' comes before any [section]", NULL);
    expect_error("[a]\n[]\n", "t.cfg:2: empty section name", NULL);
    expect_error("[a]\n[x.y]\n", "t.cfg:2: section name '[x.y]'", NULL);
    expect_error("[a]\n = 5\n", "t.cfg:2: [a] a key is missing", NULL);
    expect_error("[a]\nmy key = 5\n", "t.cfg:2: [a] key 'my key'", NULL);
    expect_error("[residual_add]\n", "t.cfg:1: [residual_add] is not written", NULL);
    /* the handler's error comes after a syntax error: the syntax error wins */
    expect_error("[a]\nbad\nk = 1\nk = 2\n", "t.cfg:2: syntax error", NULL);
}

static void test_overrides(void **state)
{
    (void)state;
    ars_config c;
    ARS_ASSERT_OK(ars_config_load_string(&c, example, "t.cfg"));
    ARS_ASSERT_OK(ars_config_override(&c, "dense.units=32"));         /* every [dense] */
    ARS_ASSERT_OK(ars_config_override(&c, " dense#4 . units = 10 ")); /* spaces are trimmed */
    ARS_ASSERT_OK(ars_config_override(&c, "dense#1.init=he_normal"));  /* added */
    ARS_ASSERT_OK(ars_config_override(&c, "run.data=path=with=equals"));
    ARS_ASSERT_OK(ars_config_override(&c, "repeat.count=2"));

    assert_int_equal(ars_config_override(&c, "conv.units=3"), ARS_EINVAL);
    assert_message_has("no section [conv]");
    assert_message_has("batchnorm, dense, end, relu, repeat, residual, run");
    assert_int_equal(ars_config_override(&c, "dense#5.units=3"), ARS_EINVAL);
    assert_message_has("has only 4 [dense] sections");
    static const char *const malformed[] = {"dense.units", "units=3",   ".units=3",     "dense.=3",
                                            "dense#0.units=3", "dense#x.units=3", "dense#.units=3",
                                            "dense.un its=3", "dense.units=a ; b", "dense.units=a\nb"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        assert_int_equal(ars_config_override(&c, malformed[i]), ARS_EINVAL);
        assert_message_has("expected section.key=value or section#k.key=value");
    }

    ARS_ASSERT_OK(ars_config_expand(&c));
    assert_int_equal(c.section_count, 3 + 2 * 6 + 1);
    assert_string_equal(c.sections[0].entries[0].value, "path=with=equals");
    assert_int_equal(c.sections[0].entries[0].line, 0);
    assert_string_equal(c.sections[1].entries[0].value, "32");
    assert_string_equal(c.sections[1].entries[1].key, "init");
    assert_string_equal(c.sections[3].entries[0].value, "32");
    assert_int_equal(c.sections[3].entries[0].line, 0);
    assert_int_equal(c.sections[3].entry_count, 1);
    assert_string_equal(c.sections[15].entries[0].value, "10");

    long v;
    assert_int_equal(ars_config_get_int(&c, &c.sections[3], "units", 1, 100, 200, &v), ARS_EINVAL);
    assert_message_has("--set dense.units = '32': expected an integer in 100..200");

    assert_int_equal(ars_config_override(&c, "run.lr=1"), ARS_EINVAL); /* too late */
    assert_message_has("before ars_config_expand");
    ars_config_free(&c);
}

static void test_blocks(void **state)
{
    (void)state;
    expect_error("[run]\n[relu]\n[end]\n", "t.cfg:3: [end] without an open [repeat] or [residual]", NULL);
    expect_error("[run]\n[repeat]\ncount = 2\n[relu]\n[residual]\n[relu]\n[end]\n",
                 "t.cfg:2: [repeat] is never closed", NULL);
    expect_error("[residual]\n[relu]\n", "t.cfg:1: [residual] is never closed", NULL);
    expect_error("[residual]\n[end]\nx = 1\n", "t.cfg:3: [end] takes no keys", NULL);
    expect_error("[repeat]\ncount = 0\n[relu]\n[end]\n", "t.cfg:2: [repeat] count = '0': expected an integer in 1..1000000",
                 NULL);
    expect_error("[repeat]\ncount = three\n[end]\n", "t.cfg:2: [repeat] count = 'three'", NULL);
    expect_error("[repeat]\ncount = 1000001\n[end]\n", "t.cfg:2:", "1..1000000", NULL);
    expect_error("[repeat]\n[relu]\n[end]\n", "t.cfg:1: [repeat] needs count", NULL);
    expect_error("[repeat]\ncount = 2\ncuont = 3\n[end]\n", "t.cfg:3: [repeat] unknown key 'cuont'", NULL);
    /* 1001 x 1000 sections: over the cap, refused before allocating */
    expect_error("[repeat]\ncount = 1001\n[repeat]\ncount = 1000\n[relu]\n[end]\n[end]\n",
                 "expand to more than 1000000 sections", NULL);
    /* products that overflow 64 bits saturate instead */
    expect_error("[repeat]\ncount=1000000\n[repeat]\ncount=1000000\n[repeat]\ncount=1000000\n[repeat]\n"
                 "count=1000000\n[relu]\n[end]\n[end]\n[end]\n[end]\n",
                 "more than 1000000 sections", NULL);
    /* nesting deeper than the limit */
    char deep[4096] = "";
    for (int i = 0; i < ARS_CONFIG_MAX_DEPTH + 1; i++) strcat(deep, "[residual]\n");
    for (int i = 0; i < ARS_CONFIG_MAX_DEPTH + 1; i++) strcat(deep, "[end]\n");
    expect_error(deep, "nested more than 64 blocks deep", NULL);

    ars_config c;
    /* nested repeat; an empty one vanishes; residual keeps its keys */
    load_expanded(&c, "[repeat]\n"     /* 1 */
                      "count = 2\n"    /* 2 */
                      "[dense]\n"      /* 3 */
                      "units = 4\n"    /* 4 */
                      "[repeat]\n"     /* 5 */
                      "count = 3\n"    /* 6 */
                      "[residual]\n"   /* 7 */
                      "sync = no\n"    /* 8 */
                      "[relu]\n"       /* 9 */
                      "[end]\n"        /* 10 */
                      "[end]\n"        /* 11 */
                      "[end]\n"        /* 12 */
                      "[repeat]\n"     /* 13 */
                      "count = 5\n"    /* 14 */
                      "[end]\n"        /* 15 */
                      "[residual]\n"   /* 16 */
                      "[end]\n");      /* 17 */
    assert_int_equal(c.section_count, 2 * (1 + 3 * 3) + 2);
    static const char *const names[] = {"dense", "residual", "relu", "residual_add"};
    static const int lines[] = {3, 7, 9, 10};
    for (int r = 0; r < 2; r++) {
        const ars_config_section *s = &c.sections[r * 10];
        assert_string_equal(s[0].name, names[0]);
        assert_int_equal(s[0].line, lines[0]);
        for (int k = 0; k < 3; k++)
            for (int j = 1; j < 4; j++) {
                assert_string_equal(s[1 + 3 * k + j - 1].name, names[j]);
                assert_int_equal(s[1 + 3 * k + j - 1].line, lines[j]);
            }
        assert_string_equal(s[1].entries[0].key, "sync");
    }
    assert_string_equal(c.sections[20].name, "residual");
    assert_int_equal(c.sections[20].occurrence, 2);
    assert_string_equal(c.sections[21].name, "residual_add");
    assert_int_equal(c.sections[21].line, 17);
    assert_int_equal(c.sections[21].occurrence, 2);
    ars_config_free(&c);

    /* an override can break the expansion, and expand reports it */
    ARS_ASSERT_OK(ars_config_load_string(&c, example, "t.cfg"));
    ARS_ASSERT_OK(ars_config_override(&c, "repeat.count=-1"));
    assert_int_equal(ars_config_expand(&c), ARS_EINVAL);
    assert_message_has("--set repeat.count = '-1'");
    ars_config_free(&c);
}

/* The written sections of a and b are the same. */
static void assert_same_written(const ars_config *a, const ars_config *b)
{
    assert_int_equal(a->written_count, b->written_count);
    for (int i = 0; i < a->written_count; i++) {
        const ars_config_section *x = &a->written[i], *y = &b->written[i];
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->occurrence, y->occurrence);
        assert_int_equal(x->entry_count, y->entry_count);
        for (int j = 0; j < x->entry_count; j++) {
            assert_string_equal(x->entries[j].key, y->entries[j].key);
            assert_string_equal(x->entries[j].value, y->entries[j].value);
        }
    }
}

static void test_to_string(void **state)
{
    (void)state;
    ars_config a, b;
    ARS_ASSERT_OK(ars_config_load_string(&a, example, "t.cfg"));
    ARS_ASSERT_OK(ars_config_override(&a, "repeat.count=1000"));
    ARS_ASSERT_OK(ars_config_override(&a, "dense#2.units=64"));
    ARS_ASSERT_OK(ars_config_override(&a, "run.note=;starts with a semicolon"));
    char *text = ars_config_to_string(&a);
    assert_non_null(text);
    assert_true(strlen(text) < 400); /* the [repeat] is not unrolled */
    assert_non_null(strstr(text, "count = 1000\n"));
    assert_non_null(strstr(text, "  [residual]\n"));
    ARS_ASSERT_OK(ars_config_load_string(&b, text, "resolved.cfg"));
    assert_same_written(&a, &b);
    ARS_ASSERT_OK(ars_config_expand(&a));
    ARS_ASSERT_OK(ars_config_expand(&b));
    assert_int_equal(a.section_count, 3 + 1000 * 6 + 1);
    assert_int_equal(b.section_count, a.section_count);
    char *again = ars_config_to_string(&b);
    assert_string_equal(text, again);
    free(again);
    free(text);
    ars_config_free(&a);
    ars_config_free(&b);

    /* a value that only fits as "key=value" stays loadable */
    char line[256];
    snprintf(line, sizeof line, "[a]\nk=%0195d\n", 7);
    ARS_ASSERT_OK(ars_config_load_string(&a, line, "t.cfg"));
    text = ars_config_to_string(&a);
    ARS_ASSERT_OK(ars_config_load_string(&b, text, "resolved.cfg"));
    assert_same_written(&a, &b);
    free(text);
    ars_config_free(&a);
    ars_config_free(&b);
}

static void test_limits(void **state)
{
    (void)state;
    size_t n = 100000;
    char *big = malloc(n + 64);
    assert_non_null(big);
    /* a huge value: a clear error, not a crash or a silent cut */
    strcpy(big, "[a]\nk = ");
    memset(big + 8, 'x', n);
    strcpy(big + 8 + n, "\nj = 1\n");
    expect_error(big, "t.cfg:2: line is", "at most 197", NULL);
    /* a huge section name and a huge header line */
    big[0] = '[';
    memset(big + 1, 'n', n);
    strcpy(big + 1 + n, "]\n");
    expect_error(big, "t.cfg:1: section name", "too long", NULL);
    /* a long trailing comment is fine */
    strcpy(big, "[a]\nk = 1 ;");
    memset(big + 11, 'c', n);
    strcpy(big + 11 + n, "\nj = 2\n");
    ars_config c;
    load_expanded(&c, big);
    assert_string_equal(c.sections[0].entries[0].value, "1");
    assert_int_equal(c.sections[0].entries[1].line, 3);
    ars_config_free(&c);
    /* a long comment line is fine */
    big[0] = ';';
    memset(big + 1, 'c', n);
    strcpy(big + 1 + n, "\n[a]\nk = 1\n");
    load_expanded(&c, big);
    assert_int_equal(c.sections[0].line, 2);
    assert_int_equal(c.sections[0].entries[0].line, 3);
    ars_config_free(&c);
    free(big);

    char key[128];
    snprintf(key, sizeof key, "[a]\n%060d = 1\n", 0);
    expect_error(key, "t.cfg:2: [a] key", "too long (at most 47", NULL);

    ARS_ASSERT_OK(ars_config_load_string(&c, "[a]\n", "t.cfg"));
    char set[512];
    snprintf(set, sizeof set, "a.k=%0300d", 0);
    assert_int_equal(ars_config_override(&c, set), ARS_EINVAL);
    snprintf(set, sizeof set, "a.%060d=1", 0);
    assert_int_equal(ars_config_override(&c, set), ARS_EINVAL);
    snprintf(set, sizeof set, "%0100d.k=1", 0);
    assert_int_equal(ars_config_override(&c, set), ARS_EINVAL);
    assert_message_has("no section");
    ars_config_free(&c);

    /* too many keys in one section */
    size_t keys = ARS_CONFIG_MAX_KEYS + 1;
    char *many = malloc(keys * 16 + 16);
    assert_non_null(many);
    size_t at = (size_t)sprintf(many, "[a]\n");
    for (size_t i = 0; i < keys; i++) at += (size_t)sprintf(many + at, "k%zu = 1\n", i);
    expect_error(many, "[a] has more than 1000 keys", NULL);
    free(many);
}

static void test_files(void **state)
{
    (void)state;
    ars_config c;
    assert_int_equal(ars_config_load_file(&c, "/nonexistent/dir/run.cfg"), ARS_EIO);
    assert_message_has("/nonexistent/dir/run.cfg");
    ars_config_free(&c);

    char dir[512], path[600];
    ars_test_tempdir(dir, sizeof dir, "config");
    snprintf(path, sizeof path, "%s/run.cfg", dir);
    ars_test_write_file(path, example, strlen(example));
    ARS_ASSERT_OK(ars_config_load_file(&c, path));
    assert_string_equal(c.path, path);
    ARS_ASSERT_OK(ars_config_expand(&c));
    assert_int_equal(c.section_count, 22);
    ars_config_free(&c);

    ars_test_write_file(path, "[a]\nk = 1\n[b]\nx = \0\n", 19);
    assert_int_equal(ars_config_load_file(&c, path), ARS_EINVAL);
    assert_message_has(":4: NUL byte");
    ars_config_free(&c);
    ars_test_write_file(path, "[a]\nk = 1\n[b]\nbroken\n", 21);
    assert_int_equal(ars_config_load_file(&c, path), ARS_EINVAL);
    assert_message_has("run.cfg:4: syntax error");
    ars_config_free(&c);

    assert_int_equal(ars_config_load_file(&c, dir), ARS_EIO); /* a directory */
    ars_config_free(&c);
    remove(path);
    remove(dir);
}

/* Mutated and random inputs: each must load or fail cleanly, and whatever
 * loads must print and load back to the same thing. */
static void test_garbage(void **state)
{
    (void)state;
    static const char alphabet[] = "[]=:;#. \t\n\rrepeatcountresidualend0123456789xX-_\x01\xff";
    unsigned long long seed = 12345;
    char text[1024];
    for (int iter = 0; iter < 3000; iter++) {
        size_t len;
        if (iter % 3 == 0) { /* random bytes */
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            len = (size_t)(seed >> 33) % 200;
            for (size_t i = 0; i < len; i++) {
                seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
                text[i] = alphabet[(seed >> 33) % (sizeof alphabet - 1)];
            }
        } else { /* the example with a few bytes replaced, inserted or dropped */
            len = strlen(example);
            memcpy(text, example, len);
            for (int m = 0; m < 3; m++) {
                seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
                size_t at = (size_t)(seed >> 33) % len;
                char ch = alphabet[(seed >> 20) % (sizeof alphabet - 1)];
                switch ((seed >> 40) % 3) {
                case 0: text[at] = ch; break;
                case 1: memmove(text + at + 1, text + at, len - at), text[at] = ch, len++; break;
                default: memmove(text + at, text + at + 1, len - at - 1), len--; break;
                }
            }
        }
        text[len] = '\0';
        ars_config a, b;
        if (ars_config_load_string(&a, text, "fuzz.cfg") != 0) {
            assert_true(ars_error_message()[0] != '\0');
            ars_config_free(&a);
            continue;
        }
        (void)ars_config_override(&a, "dense.units=7");
        char *printed = ars_config_to_string(&a);
        assert_non_null(printed);
        if (ars_config_load_string(&b, printed, "printed.cfg") != 0)
            fail_msg("input:\n%s\nprinted:\n%s\ndoes not load back: %s", text, printed, ars_error_message());
        assert_same_written(&a, &b);
        int ra = ars_config_expand(&a), rb = ars_config_expand(&b);
        assert_int_equal(ra, rb);
        assert_int_equal(a.section_count, b.section_count);
        (void)ars_config_check_unused(&a);
        free(printed);
        ars_config_free(&a);
        ars_config_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example),  cmocka_unit_test(test_empty_sections_and_comments),
        cmocka_unit_test(test_getters),  cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_syntax_errors), cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_blocks),   cmocka_unit_test(test_to_string),
        cmocka_unit_test(test_limits),   cmocka_unit_test(test_files),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

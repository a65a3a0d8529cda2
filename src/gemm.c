/* gemm: the layers' matrix products, each in the layout measured fastest
 * for it on this machine (see gemm.h for the layouts). The table of
 * choices is per process; a product runs as asked unless the table holds
 * another layout for it. Single-threaded by design, like the layers. */
#define _POSIX_C_SOURCE 200809L
#include "gemm.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arsenal/error.h"
#include "gemm_bf16.h"

/* ---- the table ----------------------------------------------------------- */

typedef struct entry {
    ars_gemm_choice choice;   /* layout < 0: empty slot */
} entry;

/* Scratch buffers of the layouts: op(A) and op(B) copies, C^T, and (while
 * measuring) a saved C. Grown only by ars_gemm_install and measurement. */
typedef struct scratch {
    float *p;
    size_t floats;
} scratch;

static struct {
    bool disabled;
    entry *slots;
    size_t capacity, used;   /* capacity: a power of two, or 0 */
    scratch a, b, c, saved;
    /* recording */
    bool recording, measuring;
    ars_gemm_choice *record;
    int *record_calls;
    int record_count, record_capacity;
    int record_rc;
    double measure_seconds, measure_cpu_seconds;
} g;

void ars_gemm_set_enabled(bool enabled) { g.disabled = !enabled; }
bool ars_gemm_enabled(void) { return !g.disabled; }

static bool same_product(const ars_gemm_choice *x, const ars_gemm_choice *y)
{
    return x->trans_a == y->trans_a && x->trans_b == y->trans_b && x->m == y->m && x->n == y->n && x->k == y->k &&
           x->lda == y->lda && x->ldb == y->ldb && x->ldc == y->ldc && x->beta_zero == y->beta_zero;
}

static size_t hash_of(const ars_gemm_choice *c)
{
    uint64_t h = 1469598103934665603ull;
    const int32_t fields[9] = {c->trans_a, c->trans_b, c->m, c->n, c->k, c->lda, c->ldb, c->ldc, c->beta_zero};
    for (int i = 0; i < 9; i++) {
        h ^= (uint32_t)fields[i];
        h *= 1099511628211ull;
    }
    return (size_t)(h ^ (h >> 29));
}

static entry *find(const ars_gemm_choice *key)
{
    if (!g.capacity) return NULL;
    for (size_t i = hash_of(key) & (g.capacity - 1);; i = (i + 1) & (g.capacity - 1)) {
        entry *e = &g.slots[i];
        if (e->choice.layout < 0) return NULL;
        if (same_product(&e->choice, key)) return e;
    }
}

static int grow_table(void)
{
    size_t capacity = g.capacity ? 2 * g.capacity : 64;
    entry *slots = malloc(sizeof *slots * capacity);
    if (!slots) return ars_error(ARS_ENOMEM, "gemm: out of memory for %zu table entries", capacity);
    for (size_t i = 0; i < capacity; i++) slots[i].choice.layout = -1;
    entry *old = g.slots;
    size_t old_capacity = g.capacity;
    g.slots = slots;
    g.capacity = capacity;
    for (size_t i = 0; i < old_capacity; i++) {
        if (old[i].choice.layout < 0) continue;
        size_t j = hash_of(&old[i].choice) & (capacity - 1);
        while (slots[j].choice.layout >= 0) j = (j + 1) & (capacity - 1);
        slots[j] = old[i];
    }
    free(old);
    return 0;
}

static int put(const ars_gemm_choice *choice)
{
    entry *e = find(choice);
    if (e) {
        e->choice.layout = choice->layout;
        return 0;
    }
    if (2 * (g.used + 1) > g.capacity) TRY(grow_table());
    size_t i = hash_of(choice) & (g.capacity - 1);
    while (g.slots[i].choice.layout >= 0) i = (i + 1) & (g.capacity - 1);
    g.slots[i].choice = *choice;
    g.used++;
    return 0;
}

static int reserve(scratch *s, size_t floats, const char *what)
{
    if (floats <= s->floats) return 0;
    void *p = NULL;
    size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes) != 0)
        return ars_error(ARS_ENOMEM, "gemm: out of memory for %zu floats of %s scratch", floats, what);
    memset(p, 0, bytes);   /* touched now, not in a step */
    free(s->p);
    s->p = p;
    s->floats = floats;
    return 0;
}

/* The scratch a layout of a product needs (all layouts when layout < 0). */
static int reserve_for(const ars_gemm_choice *c, int layout)
{
    if (layout == ARS_GEMM_AS_ASKED || layout == ARS_GEMM_COLUMN_MAJOR) return 0;
    const size_t m = (size_t)c->m, n = (size_t)c->n, k = (size_t)c->k;
    const int all = layout < 0;
    if (all || (layout & 2)) TRY(reserve(&g.a, m * k, "A copy"));
    if (all || (layout & 1)) TRY(reserve(&g.b, k * n, "B copy"));
    if (all || (layout & 4)) TRY(reserve(&g.c, m * n, "C^T"));
    return 0;
}

void ars_gemm_reset(void)
{
    free(g.slots);
    g.slots = NULL;
    g.capacity = g.used = 0;
}

static int check_choice(const ars_gemm_choice *c)
{
    const int a_cols = c->trans_a ? c->m : c->k, b_cols = c->trans_b ? c->k : c->n;
    if ((c->trans_a != 0 && c->trans_a != 1) || (c->trans_b != 0 && c->trans_b != 1) || c->m < 1 || c->n < 1 ||
        c->k < 1 || c->lda < a_cols || c->ldb < b_cols || c->ldc < c->n || (c->beta_zero != 0 && c->beta_zero != 1))
        return ars_error(ARS_EFORMAT, "not a valid product: trans %d %d, m n k %d %d %d, ld %d %d %d, beta_zero %d",
                         (int)c->trans_a, (int)c->trans_b, (int)c->m, (int)c->n, (int)c->k, (int)c->lda,
                         (int)c->ldb, (int)c->ldc, (int)c->beta_zero);
    if (c->layout < 0 || c->layout >= ARS_GEMM_LAYOUTS)
        return ars_error(ARS_EFORMAT, "layout %d, expected 0 to %d", (int)c->layout, ARS_GEMM_LAYOUTS - 1);
    return 0;
}

int ars_gemm_install(const ars_gemm_choice *choices, int count)
{
    for (int i = 0; i < count; i++) {
        int rc = check_choice(&choices[i]);
        if (rc) return ars_error_context(rc, "gemm choice %d", i);
    }
    for (int i = 0; i < count; i++) {
        TRY(reserve_for(&choices[i], choices[i].layout));
        TRY(put(&choices[i]));
    }
    return 0;
}

/* ---- running a layout ---------------------------------------------------- */

enum { BLOCK = 16 };

/* dst[cols, rows] (leading dimension ldd) = src[rows, cols]^T. */
static void transpose(const float *src, int rows, int cols, int lds, float *dst, int ldd)
{
    for (int i0 = 0; i0 < rows; i0 += BLOCK)
        for (int j0 = 0; j0 < cols; j0 += BLOCK) {
            const int i1 = i0 + BLOCK < rows ? i0 + BLOCK : rows, j1 = j0 + BLOCK < cols ? j0 + BLOCK : cols;
            for (int i = i0; i < i1; i++)
                for (int j = j0; j < j1; j++) dst[(size_t)j * ldd + i] = src[(size_t)i * lds + j];
        }
}

/* c[m, n] = beta c + s[n, m]^T. */
static void add_transposed(const float *s, int m, int n, float beta, float *c, int ldc)
{
    for (int i0 = 0; i0 < m; i0 += BLOCK)
        for (int j0 = 0; j0 < n; j0 += BLOCK) {
            const int i1 = i0 + BLOCK < m ? i0 + BLOCK : m, j1 = j0 + BLOCK < n ? j0 + BLOCK : n;
            for (int i = i0; i < i1; i++) {
                float *row = c + (size_t)i * ldc;
                if (beta == 0.0f)
                    for (int j = j0; j < j1; j++) row[j] = s[(size_t)j * m + i];
                else if (beta == 1.0f)
                    for (int j = j0; j < j1; j++) row[j] += s[(size_t)j * m + i];
                else
                    for (int j = j0; j < j1; j++) row[j] = beta * row[j] + s[(size_t)j * m + i];
            }
        }
}

static inline CBLAS_TRANSPOSE flag(bool t) { return t ? CblasTrans : CblasNoTrans; }

static void as_asked(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                     int ldb, float beta, float *c, int ldc)
{
    cblas_sgemm(CblasRowMajor, flag(ta), flag(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static bool scratch_fits(int layout, int m, int n, int k)
{
    const size_t mm = (size_t)m, nn = (size_t)n, kk = (size_t)k;
    return (!(layout & 2) || g.a.floats >= mm * kk) && (!(layout & 1) || g.b.floats >= kk * nn) &&
           (!(layout & 4) || g.c.floats >= mm * nn);
}

void ars_gemm_in_layout(int layout, bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc)
{
    if (layout == ARS_GEMM_COLUMN_MAJOR) {
        /* row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T */
        cblas_sgemm(CblasColMajor, flag(tb), flag(ta), n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
        return;
    }
    if (layout <= 0 || layout >= ARS_GEMM_COLUMN_MAJOR || !scratch_fits(layout, m, n, k)) {
        as_asked(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    if (layout & 2) {   /* A as stored ([m, k], or [k, m] when ta) into its transpose */
        const int rows = ta ? k : m, cols = ta ? m : k;
        transpose(a, rows, cols, lda, g.a.p, rows);
        a = g.a.p;
        lda = rows;
        ta = !ta;
    }
    if (layout & 1) {
        const int rows = tb ? n : k, cols = tb ? k : n;
        transpose(b, rows, cols, ldb, g.b.p, rows);
        b = g.b.p;
        ldb = rows;
        tb = !tb;
    }
    if (!(layout & 4)) {
        as_asked(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    /* C^T[n, m] = op(B)^T op(A)^T into scratch, then into C */
    as_asked(!tb, !ta, n, m, k, alpha, b, ldb, a, lda, 0.0f, g.c.p, m);
    add_transposed(g.c.p, m, n, beta, c, ldc);
}

/* ---- measuring ------------------------------------------------------------ */

static double seconds_now(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* How much faster than as asked another layout must be to be chosen, in
 * every paired round: the timing noise of a shared machine is a few
 * percent, and as asked is the fixed layout's rounding. */
#define MIN_GAIN 0.96
enum { CONFIRM_ROUNDS = 2, CANDIDATES = 2 };

static void save_c(const float *c, int m, int n, int ldc)
{
    for (int i = 0; i < m; i++) memcpy(g.saved.p + (size_t)i * n, c + (size_t)i * ldc, sizeof(float) * (size_t)n);
}

static void restore_c(float *c, int m, int n, int ldc)
{
    for (int i = 0; i < m; i++) memcpy(c + (size_t)i * ldc, g.saved.p + (size_t)i * n, sizeof(float) * (size_t)n);
}

typedef struct trial {
    const ars_gemm_choice *key;
    float alpha, beta;
    const float *a, *b;
    float *c;
    clockid_t clock;
    int calls;   /* per sample: enough to be well above the clock's resolution */
} trial;

static double time_layout(const trial *t, int layout)
{
    const ars_gemm_choice *k = t->key;
    if (t->beta != 0.0f) restore_c(t->c, k->m, k->n, k->ldc);
    double s = seconds_now(t->clock);
    for (int i = 0; i < t->calls; i++)
        ars_gemm_in_layout(layout, k->trans_a, k->trans_b, k->m, k->n, k->k, t->alpha, t->a, k->lda, t->b, k->ldb,
                           t->beta, t->c, k->ldc);
    return seconds_now(t->clock) - s;
}

/* Times every layout of the product once on its operands, then the
 * fastest few against as asked in paired rounds; a layout is chosen when
 * it beat as asked by MIN_GAIN in every round. C is left as it was. */
static int measure(const ars_gemm_choice *key, float alpha, const float *a, const float *b, float beta, float *c,
                   int *layout)
{
    TRY(reserve_for(key, -1));
    TRY(reserve(&g.saved, (size_t)key->m * (size_t)key->n, "saved C"));
    save_c(c, key->m, key->n, key->ldc);
    /* CPU time on one BLAS thread: time spent descheduled on a busy machine does not count */
    trial t = {key, alpha, beta, a, b, c, openblas_get_num_threads() == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC,
               1};
    const double once = time_layout(&t, ARS_GEMM_AS_ASKED);   /* also warms the operands */
    t.calls = once > 50e-6 ? 1 : once < 50e-9 ? 1000 : (int)(50e-6 / once) + 1;
    double first[ARS_GEMM_LAYOUTS];
    for (int l = 0; l < ARS_GEMM_LAYOUTS; l++) first[l] = time_layout(&t, l);
    int chosen = ARS_GEMM_AS_ASKED;
    double chosen_ratio = 1;
    for (int pick = 0; pick < CANDIDATES; pick++) {
        int best = -1;   /* the fastest not tried yet */
        for (int l = 1; l < ARS_GEMM_LAYOUTS; l++)
            if (first[l] < MIN_GAIN * first[0] && (best < 0 || first[l] < first[best])) best = l;
        if (best < 0) break;
        double worst = first[best] / first[0];
        for (int r = 0; r < CONFIRM_ROUNDS && worst < MIN_GAIN; r++) {
            /* each first in turn: the second of a pair finds the operands the first warmed */
            double asked, other;
            if (r % 2) {
                other = time_layout(&t, best);
                asked = time_layout(&t, ARS_GEMM_AS_ASKED);
            } else {
                asked = time_layout(&t, ARS_GEMM_AS_ASKED);
                other = time_layout(&t, best);
            }
            if (other / asked > worst) worst = other / asked;
        }
        if (worst < MIN_GAIN && worst < chosen_ratio) {
            chosen = best;
            chosen_ratio = worst;
        }
        first[best] = 1e30;
    }
    restore_c(c, key->m, key->n, key->ldc);
    *layout = chosen;
    return 0;
}

static int note(const ars_gemm_choice *key)
{
    for (int i = 0; i < g.record_count; i++)
        if (same_product(&g.record[i], key)) {
            g.record_calls[i]++;
            return 0;
        }
    if (g.record_count == g.record_capacity) {
        int grown = g.record_capacity ? 2 * g.record_capacity : 16;
        ars_gemm_choice *r = realloc(g.record, sizeof *r * (size_t)grown);
        if (r) g.record = r;
        int *calls = r ? realloc(g.record_calls, sizeof *calls * (size_t)grown) : NULL;
        if (calls) g.record_calls = calls;
        if (!r || !calls) return ars_error(ARS_ENOMEM, "gemm: out of memory recording products");
        g.record_capacity = grown;
    }
    g.record[g.record_count] = *key;
    g.record_calls[g.record_count++] = 1;
    return 0;
}

static void record(ars_gemm_choice *key, float alpha, const float *a, const float *b, float beta, float *c)
{
    if (g.record_rc) return;
    int rc = 0;
    /* the layouts are fp32 OpenBLAS's: nothing to measure in another precision */
    if (g.measuring && !find(key) && ars_gemm_precision() == ARS_PRECISION_FP32) {
        double s = seconds_now(CLOCK_MONOTONIC), cpu = seconds_now(CLOCK_PROCESS_CPUTIME_ID);
        rc = measure(key, alpha, a, b, beta, c, &key->layout);
        if (!rc) rc = put(key);
        g.measure_seconds += seconds_now(CLOCK_MONOTONIC) - s;
        g.measure_cpu_seconds += seconds_now(CLOCK_PROCESS_CPUTIME_ID) - cpu;
    }
    if (!rc) rc = note(key);
    g.record_rc = rc;
}

int ars_gemm_record_start(bool measure_new)
{
    if (g.recording) return ars_error(ARS_EINVAL, "gemm: already recording");
    g.recording = true;
    g.measuring = measure_new;
    g.record_count = 0;
    g.record_rc = 0;
    g.measure_seconds = g.measure_cpu_seconds = 0;
    return 0;
}

int ars_gemm_record_stop(ars_gemm_choice **choices, int **calls, int *count, double *seconds, double *cpu_seconds)
{
    g.recording = g.measuring = false;
    *choices = NULL;
    if (calls) *calls = NULL;
    *count = 0;
    if (seconds) *seconds = g.measure_seconds;
    if (cpu_seconds) *cpu_seconds = g.measure_cpu_seconds;
    int rc = g.record_rc;
    const int n = g.record_count;
    g.record_count = 0;
    if (rc || n == 0) return rc;
    *choices = malloc(sizeof **choices * (size_t)n);
    if (calls) *calls = malloc(sizeof **calls * (size_t)n);
    if (!*choices || (calls && !*calls)) {
        free(*choices);
        *choices = NULL;
        if (calls) {
            free(*calls);
            *calls = NULL;
        }
        return ars_error(ARS_ENOMEM, "gemm: out of memory for %d products", n);
    }
    for (int i = 0; i < n; i++) {
        (*choices)[i] = g.record[i];
        const entry *e = find(&g.record[i]);
        (*choices)[i].layout = e ? e->choice.layout : ARS_GEMM_AS_ASKED;
    }
    if (calls) memcpy(*calls, g.record_calls, sizeof **calls * (size_t)n);
    *count = n;
    return 0;
}

/* ---- the door ------------------------------------------------------------- */

static ars_gemm_choice key_of(bool ta, bool tb, int m, int n, int k, int lda, int ldb, int ldc, float beta)
{
    return (ars_gemm_choice){.trans_a = ta, .trans_b = tb, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb,
                             .ldc = ldc, .beta_zero = beta == 0.0f, .layout = ARS_GEMM_AS_ASKED};
}

int ars_gemm_layout_of(bool ta, bool tb, int m, int n, int k, int lda, int ldb, int ldc, float beta)
{
    if (g.disabled || !g.used) return ARS_GEMM_AS_ASKED;
    ars_gemm_choice key = key_of(ta, tb, m, n, k, lda, ldb, ldc, beta);
    const entry *e = find(&key);
    return e ? e->choice.layout : ARS_GEMM_AS_ASKED;
}

/* One product. Another precision branches first, before the layout: the
 * fp32 layouts and their table are OpenBLAS's. */
void ars_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc)
{
    if (g.recording && m > 0 && n > 0 && k > 0) {   /* the bench's raw baseline: in any precision */
        ars_gemm_choice key = key_of(trans_a, trans_b, m, n, k, lda, ldb, ldc, beta);
        record(&key, alpha, a, b, beta, c);
    }
    if (ars_gemm_precision() != ARS_PRECISION_FP32) {   /* [run] precision = bf16 | bf16_emulated */
        ars_gemm_reduced(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    const int layout = ars_gemm_layout_of(trans_a, trans_b, m, n, k, lda, ldb, ldc, beta);
    if (layout == ARS_GEMM_AS_ASKED)
        as_asked(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
        ars_gemm_in_layout(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* ---- names ---------------------------------------------------------------- */

const char *ars_gemm_layout_name(const ars_gemm_choice *c, char *text, int size)
{
    const int l = c->layout;
    if (l == ARS_GEMM_COLUMN_MAJOR) {
        snprintf(text, (size_t)size, "cm");
        return text;
    }
    bool ta = c->trans_a ^ ((l >> 1) & 1), tb = c->trans_b ^ (l & 1);
    if (l & 4)
        snprintf(text, (size_t)size, "T:%c%c", tb ? 'N' : 'T', ta ? 'N' : 'T');
    else
        snprintf(text, (size_t)size, "%c%c", ta ? 'T' : 'N', tb ? 'T' : 'N');
    return text;
}

void ars_gemm_describe(const ars_gemm_choice *choices, int count, char *text, int size)
{
    int used = 0, changed = 0;
    text[0] = '\0';
    for (int i = 0; i < count && used < size; i++) {
        const ars_gemm_choice *c = &choices[i];
        if (c->layout == ARS_GEMM_AS_ASKED) continue;
        char name[8];
        int w = snprintf(text + used, (size_t)(size - used), "%s%c%c %dx%dx%d %s", changed++ ? ", " : "",
                         c->trans_a ? 'T' : 'N', c->trans_b ? 'T' : 'N', (int)c->m, (int)c->n, (int)c->k,
                         ars_gemm_layout_name(c, name, sizeof name));
        if (w < 0) break;
        used += w;
    }
    if (!changed) snprintf(text, (size_t)size, "all as asked");
}

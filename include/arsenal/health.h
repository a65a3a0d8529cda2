/* health: live diagnosis of gradient health from the gradient history.
 * After each history record the monitor evaluates a few rules on that
 * record (and a short window before it): vanishing and exploding
 * gradients, non-finite values, saturated sigmoid/tanh units, dead ReLU
 * units, a loss plateau and an oscillating loss. A problem is announced
 * once when it starts and once when it ends (hysteresis: it starts after
 * `patience` consecutive bad records and ends after `recovery` clean
 * ones), with the layers involved grouped into ranges, the figures and the
 * lecture's remedies, and is recorded as a history event
 * ("step N: vanishing gradient starts: ..."). The same rules replayed over
 * a whole history give `arsenal inspect` its diagnosis. Thresholds come
 * from the run file's [health] section (docs/health.md). */
#ifndef ARSENAL_HEALTH_H
#define ARSENAL_HEALTH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "arsenal/config.h"
#include "arsenal/history.h"

typedef enum {
    ARS_HEALTH_VANISHING,    /* per parameterized layer */
    ARS_HEALTH_EXPLODING,    /* per parameterized layer and the whole network */
    ARS_HEALTH_NONFINITE,    /* whole network */
    ARS_HEALTH_SATURATION,   /* per sigmoid/tanh layer */
    ARS_HEALTH_DEAD_RELU,    /* per relu layer */
    ARS_HEALTH_PLATEAU,      /* whole network */
    ARS_HEALTH_OSCILLATION,  /* whole network */
    ARS_HEALTH_PROBLEMS
} ars_health_problem;

/* The thresholds, keys of the [health] section (defaults in brackets). */
typedef struct ars_health_config {
    int enabled;                 /* enabled [true]: run the monitor during training */
    int patience;                /* patience [3]: consecutive bad records before a per-layer
                                    problem or a plateau starts */
    int recovery;                /* recovery [5]: consecutive clean records before it ends */
    double vanish_ratio;         /* vanish_ratio [1e-3]: layer gradient norm / output layer's below */
    double vanish_update_floor;  /* vanish_update_floor [1e-7]: update/weight ratio below ... */
    int vanish_update_records;   /* vanish_update_records [20]: ... for this many records */
    double explode_ratio;        /* explode_ratio [1e3]: layer gradient norm / output layer's above */
    double explode_spike;        /* explode_spike [10]: global norm / its running median above */
    int explode_window;          /* explode_window [20]: records in that running median */
    double explode_growth;       /* explode_growth [2]: global norm grows by this factor or more
                                    record over record ... */
    int explode_growth_records;  /* explode_growth_records [4]: ... until it has grown
                                    explode_growth ^ this in total (16x) */
    double saturation_max;       /* saturation_max [0.5]: saturated fraction of a sigmoid/tanh layer */
    double dead_max;             /* dead_max [0.5]: dead fraction of a relu layer */
    int plateau_window;          /* plateau_window [40]: records compared (older half vs newer) */
    double plateau_improvement;  /* plateau_improvement [0.01]: relative improvement below */
    double plateau_high;         /* plateau_high [0.8]: only while loss > this x first loss */
    int oscillation_window;      /* oscillation_window [10]: records looked at */
    double oscillation_rise;     /* oscillation_rise [0.5]: a swing = a rise by this x first loss */
    int oscillation_count;       /* oscillation_count [3]: swings in the window */
    /* automatic cures (src/cure.c, docs/health.md "Automatic cures") */
    int cure;                    /* cure [suggest]: ARS_CURE_OFF | SUGGEST | APPLY */
    int max_cures;               /* max_cures [3]: cures per run before the run stops */
    int cure_trial;              /* cure_trial [30]: records a cure is on trial after its rollback */
} ars_health_config;

enum { ARS_CURE_OFF, ARS_CURE_SUGGEST, ARS_CURE_APPLY };

void ars_health_config_defaults(ars_health_config *out);

/* Reads the [health] section (NULL: defaults only) with the config getters:
 * every key is validated (range) and marked used; absent keys keep their
 * defaults. */
int ars_health_config_load(ars_config *config, ars_config_section *section, ars_health_config *out);

/* Short name ("vanishing gradient") and the config-free key ("vanishing"). */
const char *ars_health_problem_name(ars_health_problem problem);
const char *ars_health_problem_key(ars_health_problem problem);

/* What happened to one problem over the records seen so far. */
typedef struct ars_health_summary {
    int episodes;            /* times it started */
    int active;              /* still going at the last record */
    int64_t records;         /* records observed while it was going */
    int64_t first_step;      /* step of its first start (-1: never) */
    int64_t last_end_step;   /* step of its last end (-1: none) */
    double worst;            /* the layers' figure at its worst: smallest gradient ratio to the
                                output layer (vanishing), largest (exploding), largest fraction
                                (saturation, dead); the network's for the others: smallest
                                improvement (plateau), most swings (oscillation), non-finite
                                records (non-finite) */
    int64_t worst_step;
    int worst_layer;         /* -1 for a whole-network figure */
    double worst_global;     /* exploding: the global norm at most this many times its recent level */
    int64_t worst_global_step;
    char first_detail[640];  /* the text of its first start, without "step N: " */
} ars_health_summary;

/* Per-subject, per-problem hysteresis state. */
typedef struct ars_health_track {
    int bad, bad_alt, good;  /* consecutive bad records (two conditions) and clean ones */
    int flagged;
} ars_health_track;

/* Subjects of a problem: the layers 0..L-1, and L for the whole network. */
typedef struct ars_health_monitor {
    ars_health_config config;
    int layer_count;
    char (*names)[40];
    char (*kinds)[24];
    char optimizer[16];          /* "" when unknown */
    int has_saturating, has_relu, has_norm, has_residual, has_rnn, has_attention;
    int output_layer;            /* last layer with parameters (-1: none), once a record is seen */
    unsigned char *candidates;   /* [P][L]: layers each rule looks at, once a record is seen */
    int ready;                   /* candidates set up */
    /* state */
    size_t next_record;          /* first history record not yet observed */
    int calls;
    double first_loss;           /* first finite loss (NaN until seen) */
    int growth_streak;           /* consecutive records of global-norm growth ... */
    double growth_total;         /* ... and the factor grown over them */
    int clipped;                 /* clipping has scaled a gradient */
    ars_health_track *tracks;    /* [P][L + 1] */
    unsigned char *ever;         /* [P][L + 1]: ever flagged */
    ars_health_summary summary[ARS_HEALTH_PROBLEMS];
    /* per-record work arrays */
    double *figures;             /* [L + 1] */
    signed char *verdicts;       /* [L + 1] */
    unsigned char *alternates;   /* [L + 1] */
    unsigned char *flags;        /* [L + 1] */
    double *window;              /* max(explode_window, plateau_window, oscillation_window) */
} ars_health_monitor;

/* names: the history's layer names ("003_dense"); kinds: each layer's kind
 * ("dense", "sigmoid", ...) or NULL to take it from the name after '_';
 * optimizer: "sgd" | "adam" | "adamw" or NULL (only tailors the remedies). */
int ars_health_init(ars_health_monitor *monitor, const ars_health_config *config, int layer_count,
                    const char (*names)[40], const char (*kinds)[24], const char *optimizer);
void ars_health_free(ars_health_monitor *monitor);

/* A diagnosis as it starts or ends: text is "<problem> starts: ..." or
 * "<problem> ends" (no step prefix). */
typedef void (*ars_health_event_fn)(void *context, ars_health_problem problem, int64_t step,
                                    int started, const char *text);

/* Observes the records of h not yet seen, in order, calling fn (may be
 * NULL) for each start and end. */
int ars_health_observe(ars_health_monitor *monitor, const ars_history *h, ars_health_event_fn fn,
                       void *context);

/* The trainer's call, after each new history record (rank 0): observes the
 * new record(s); each start and end is printed to log (may be NULL) as
 * "arsenal: health: step N: ..." and added to h with ars_history_add_event.
 * On the first call, records older than the newest one (a resumed run's
 * history, whose events are already in h) are observed silently. */
int ars_health_update(ars_health_monitor *monitor, ars_history *h, FILE *log);

/* Observes every record of h not yet seen silently (after a resume). */
int ars_health_catch_up(ars_health_monitor *monitor, const ars_history *h);

/* 1 if the layer has trainable parameters: its kind always has (dense,
 * batchnorm, layernorm, embedding, attention, rnn, ...), or the history's
 * first records show a non-zero weight norm (residual_add with a
 * projection). */
int ars_health_layer_has_params(const ars_health_monitor *monitor, const ars_history *h, int layer);

/* Layers a per-layer rule looks at ([L]; all zero for whole-network
 * problems) and layers it ever flagged ([L + 1], the last: the network). */
const unsigned char *ars_health_candidates(const ars_health_monitor *monitor, ars_health_problem problem);
const unsigned char *ars_health_ever(const ars_health_monitor *monitor, ars_health_problem problem);

/* The lecture's remedies for a problem, for this model (e.g. "replace
 * sigmoid/tanh with ReLU and He initialization, add BatchNorm/LayerNorm or
 * residual connections"). */
void ars_health_remedy(const ars_health_monitor *monitor, ars_health_problem problem, char *out,
                       size_t size);

/* A sentence in plain words about a problem over everything observed
 * (layers ever flagged as ranges, the worst figure, when), without the
 * remedy. Empty when the problem never started. */
void ars_health_describe(const ars_health_monitor *monitor, ars_health_problem problem, char *out,
                         size_t size);

/* "layers 000-036" / "layer 003" / "layers 000-004, 010": flags[L] as
 * ranges over the candidate layers (candidates NULL: every layer), named
 * by the number in front of '_' in the layer names. */
void ars_health_format_layers(const char (*names)[40], int layer_count, const unsigned char *flags,
                              const unsigned char *candidates, char *out, size_t size);

#endif

/* optim: SGD (momentum, Nesterov, weight decay), Adam (bias-corrected, L2
 * weight decay as PyTorch's Adam) and AdamW (decoupled decay), each one fused
 * pass over the flat parameter/gradient/state buffers; and learning-rate
 * schedules. Semantics follow torch.optim so results compare directly. */
#ifndef ARSENAL_OPTIM_H
#define ARSENAL_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ARS_OPT_SGD, ARS_OPT_ADAM, ARS_OPT_ADAMW } ars_optimizer_kind;

typedef struct ars_optim_config {
    ars_optimizer_kind kind;
    float lr;
    float momentum;       /* SGD */
    int nesterov;         /* SGD */
    float weight_decay;
    float beta1, beta2, eps;  /* Adam, AdamW */
} ars_optim_config;

/* torch.optim defaults: lr 0.01 (SGD) / 1e-3 (Adam, AdamW), momentum 0,
 * betas 0.9/0.999, eps 1e-8, weight_decay 0 (AdamW: 1e-2). */
void ars_optim_config_defaults(ars_optim_config *config, ars_optimizer_kind kind);
int ars_optimizer_parse(const char *name, ars_optimizer_kind *kind);
const char *ars_optimizer_name(ars_optimizer_kind kind);

typedef struct ars_optimizer {
    ars_optim_config config;
    size_t count;
    float *m;       /* SGD momentum buffer or Adam first moment (NULL if unused) */
    float *v;       /* Adam second moment (NULL if unused) */
    int64_t step;   /* updates applied so far */
} ars_optimizer;

/* Validates config (ranges; nesterov needs momentum > 0) and allocates the
 * zeroed state. m is NULL for SGD without momentum, v NULL for SGD. */
int ars_optimizer_create(ars_optimizer *opt, const ars_optim_config *config, size_t count);
void ars_optimizer_destroy(ars_optimizer *opt);

/* One update of params from grads at learning rate lr (the schedule's
 * value for this step). Increments opt->step. */
void ars_optimizer_step(ars_optimizer *opt, float *params, const float *grads, float lr);
/* The same with the gradient multiplied by grad_scale on the fly (the
 * global-norm clip), in the optimizer's one pass: bitwise the update of
 * scaling the gradient in place first. */
void ars_optimizer_step_scaled(ars_optimizer *opt, float *params, const float *grads, float grad_scale,
                               float lr);

typedef enum { ARS_SCHED_CONSTANT, ARS_SCHED_STEP, ARS_SCHED_COSINE } ars_schedule_kind;

typedef struct ars_schedule {
    ars_schedule_kind kind;
    int64_t warmup_steps;   /* linear warm-up from lr/warmup to lr, all kinds */
    int64_t step_size;      /* STEP: multiply by gamma every step_size steps */
    float gamma;
    int64_t total_steps;    /* COSINE: decay from lr to min_lr over total_steps */
    float min_lr;
} ars_schedule;

int ars_schedule_parse(const char *name, ars_schedule_kind *kind);
const char *ars_schedule_name(ars_schedule_kind kind);

/* Checks the fields the kind uses (step_size > 0, gamma > 0; cosine:
 * total_steps > warmup_steps, min_lr >= 0). ars_schedule_lr does not fail:
 * call this once when the schedule is configured. */
int ars_schedule_check(const ars_schedule *schedule);

/* Learning rate for update number step (0-based). Warm-up: steps
 * 0..warmup_steps-1 get lr*(step+1)/warmup_steps. The decay then counts
 * t = step - warmup_steps: STEP lr*gamma^floor(t/step_size); COSINE
 * min_lr + (lr-min_lr)(1+cos(pi t/(total_steps-warmup_steps)))/2, so it
 * reaches min_lr at step total_steps and stays there. */
float ars_schedule_lr(const ars_schedule *schedule, float base_lr, int64_t step);

#endif

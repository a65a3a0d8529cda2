/* cure: [health] cure = apply. When a health rule starts (with its
 * hysteresis), every rank rolls back to the last healthy state (an
 * in-memory snapshot, so it works without --ckpt-dir), applies the remedy
 * of that rule's row in docs/health.md and continues; a cure after which
 * the same rule fires again within cure_trial records is reverted and the
 * next remedy tried, or the run stops with a report. Rank 0 decides; one
 * broadcast per history record carries the decision. Cures are recorded
 * in the history (/health/cures) and re-applied by --resume. `suggest`
 * (the default) prints the cure apply would make; `off` says nothing.
 * Internal to the library, called from train.c. */
#ifndef ARSENAL_CURE_H
#define ARSENAL_CURE_H

#include "trainer.h"

/* After trainer_setup, before ars_trainer_resume (every rank): allocates
 * the cure state for the trainer's run config (run: the trainer's own
 * copy, which cures change); on --resume, re-applies the checkpoint's
 * active cures to the run config and the model (layer kinds), so that the
 * checkpoint loads and the run continues with the cured settings. */
int ars_cure_setup(ars_trainer *t, ars_run_config *run);

/* After the resume, before the first step (every rank): the first healthy
 * snapshot. */
int ars_cure_begin(ars_trainer *t);

/* After each history record and its health update (every rank). Sets
 * *rolled_back to 1 when the trainer went back to an earlier step (its
 * step, model, optimizer and history are the snapshot's). ARS_ESTOP when
 * no cure is left (agreed on every rank). */
int ars_cure_after_record(ars_trainer *t, int *rolled_back);

/* The run file checkpoints store: the run's own with the active cures
 * applied, or options->config_text when there are none. */
const char *ars_cure_config_text(const ars_trainer *t);

void ars_cure_free(ars_trainer *t);

#endif

/* cmd_replay: `arsenal replay CKPT.h5 --step K [--against CKPT2.h5]`: one
 * step of a run recomputed on one process (src/replay.c), with its
 * per-layer figures; --against compares it with the run's own record of
 * that step in a later checkpoint. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/ckpt.h"
#include "arsenal/error.h"
#include "arsenal/replay.h"
#include "cli.h"

static const char replay_usage[] =
    "usage: arsenal replay CKPT.h5 --step K [--against CKPT2.h5]\n"
    "\n"
    "Recomputes step K of the run (0-based, as /history/step and the health messages count) on one\n"
    "process, from a checkpoint written at or before it (its step S <= K; steps S to K-1 are trained on the\n"
    "way), reproducing the run's ranks shard by shard, and prints the loss, the global gradient norm and\n"
    "per layer the gradient norm, the update/weight ratio and the activation statistics.\n"
    "\n"
    "  --step K             the step to recompute\n"
    "  --against CKPT2.h5   a later checkpoint of the same run whose history recorded step K: the\n"
    "                       recorded global gradient norm and loss next to the replayed ones; exit status 1\n"
    "                       when the norm differs by more than 1e-6 (relative)\n";

enum { AGREEMENT_LIMIT_PPM = 1 };

static void print_value(double v)
{
    if (isnan(v)) printf(" %10s", "-");
    else printf(" %10.3e", v);
}

static void print_replay(const char *path, const ars_replay *r)
{
    printf("replay of step %" PRId64 " (epoch %d) from %s, written after %" PRId64 " steps (%" PRId64
           " trained on the way)\n", r->step, r->epoch + 1, path, r->from_step, r->step - r->from_step);
    printf("the run: %d rank%s, global batch %d; recomputed %s\n", r->world, r->world == 1 ? "" : "s",
           r->global_batch, r->shard_wise ? "shard by shard, gradients summed in rank order"
                                          : "in one pass over the global batch (BatchNorm synchronized over ranks)");
    printf("loss %.9g  lr %.6g  global gradient norm %.17g  clip scale %.6g%s\n", r->loss, r->lr, r->grad_norm,
           r->clip_scale, r->nonfinite ? "  NON-FINITE: the run skipped this update" : "");
    printf("\n%-20s %10s %10s %10s %10s %10s %10s %10s %10s %10s\n", "layer", "grad", "applied", "weight",
           "upd/weight", "dL/dy", "act mean", "act std", "saturated", "dead");
    for (int l = 0; l < r->layer_count; l++) {
        const ars_replay_layer *y = &r->layers[l];
        if (!y->has_params && !y->is_activation) continue;
        printf("%-20s", y->name);
        if (y->has_params) {
            print_value(y->grad_norm);
            print_value(r->nonfinite ? NAN : y->grad_norm_applied);
            print_value(r->nonfinite ? NAN : y->weight_norm);
            print_value(r->nonfinite ? NAN : y->update_ratio);
        } else {
            printf(" %10s %10s %10s %10s", "", "", "", "");
        }
        print_value(y->output_grad_norm);
        print_value(y->act_mean);
        print_value(y->act_std);
        print_value(y->act_saturated);
        print_value(y->act_dead);
        printf("\n");
    }
    printf("(grad: the parameter gradient's norm before clipping, applied: after; weight and upd/weight after\n"
           "the update; dL/dy and the activation statistics over rank 0's rows, as the history records them)\n");
}

/* The run's record of step in path's history; 1 found, 0 not, <0 error. */
static int compare(const char *path, const ars_replay *r)
{
    ars_history h;
    int rc = ars_ckpt_validate(path);
    if (!rc) rc = ars_ckpt_read_history(path, &h);
    if (rc) {
        fprintf(stderr, "arsenal replay: --against %s\n", ars_error_message());
        return 1;
    }
    size_t at = h.count;
    for (size_t k = 0; k < h.count; k++)
        if (h.steps[k].step == r->step) at = k;
    int status = 0;
    if (at == h.count) {
        fprintf(stderr, "arsenal replay: --against %s: its history has no record of step %" PRId64
                " (records are kept every [run] probe_every steps and at non-finite steps)\n", path, r->step);
        status = 1;
    } else {
        const ars_history_step *s = &h.steps[at];
        double diff = fabs(r->grad_norm - s->grad_norm) / fmax(fabs(s->grad_norm), 1e-300);
        if (isnan(s->grad_norm) && isnan(r->grad_norm)) diff = 0;
        printf("\nagainst %s: the run recorded loss %.9g and global gradient norm %.17g at step %" PRId64
               "; relative difference of the norm %.2e (%s 1e-6)\n", path, s->loss, s->grad_norm, r->step, diff,
               diff <= AGREEMENT_LIMIT_PPM * 1e-6 ? "within" : "MORE THAN");
        status = !(diff <= AGREEMENT_LIMIT_PPM * 1e-6);
    }
    ars_history_free(&h);
    return status;
}

int ars_cmd_replay(int argc, char **argv)
{
    const char *path = NULL, *against = NULL, *value, *step_text = NULL;
    int error = 0;
    for (int i = 1; i < argc && !error; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(replay_usage, stdout);
            return 0;
        } else if (ars_cli_option(argc, argv, &i, "--step", &value, &error)) {
            step_text = value;
        } else if (ars_cli_option(argc, argv, &i, "--against", &value, &error)) {
            against = value;
        } else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "arsenal replay: unexpected argument '%s' (arsenal replay --help)\n", argv[i]);
            error = 1;
        } else {
            path = argv[i];
        }
    }
    if (!error && (!path || !step_text)) {
        fprintf(stderr, "arsenal replay: %s\n%s", !path ? "which checkpoint?" : "--step K is required", replay_usage);
        error = 1;
    }
    long long step = 0;
    if (!error) {
        char *end;
        step = strtoll(step_text, &end, 10);
        if (*step_text == '\0' || *end != '\0' || step < 0) {
            fprintf(stderr, "arsenal replay: --step '%s': expected a step number from 0 (as /history/step)\n",
                    step_text);
            error = 1;
        }
    }
    if (error) return 2;
    ars_replay r;
    if (ars_replay_step(path, step, &r, stderr)) {
        fprintf(stderr, "arsenal replay: %s\n", ars_error_message());
        return 1;
    }
    print_replay(path, &r);
    int status = against ? compare(against, &r) : 0;
    ars_replay_free(&r);
    return status;
}

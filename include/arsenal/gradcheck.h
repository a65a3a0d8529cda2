/* gradcheck: finite-difference checks of the analytic gradients, used by
 * the tests and by `arsenal gradcheck`.
 *
 * The checked function is the scalar L = sum(y .* r) over the output y of a
 * layer (or model) with a fixed random projection r ~ N(0, 1), accumulated
 * in double; backward is run with dy = r. Each checked coordinate v is
 * perturbed in float by h = step * max(1, |v|) and the analytic derivative
 * a compared with the central quotient n = (L(v+h) - L(v-h)) / (2h), the
 * step taken from the float values actually stored.
 *
 * The float forward makes L noisy: its rounding changes with every
 * perturbation. The noise is measured per tensor (central quotients of 5
 * coordinates at 8 nearby steps each; the median over the coordinates of
 * the RMS of successive differences), bounded below by the resolution of L
 * (FLT_EPSILON * sqrt(sum (y_i r_i)^2): a perturbation whose effect falls
 * below it may not change L at all). The error of one coordinate is the
 * part of |a - n| beyond noise_z standard deviations of the quotient:
 *     max(0, |a - n| - noise_z * sd) / max(|a| + |n|, floor)
 * with floor = floor_fraction * the tensor's RMS gradient, so coordinates
 * far below the tensor's scale do not dominate. A gradient below what the
 * float forward resolves (a bias feeding a training-mode BatchNorm, whose
 * true gradient is 0; the first layers of a deep sigmoid net, ~1e-13)
 * scores 0: it is not verified, which result.resolved and result.noise
 * report.
 *
 * Kinks: when relu's corner lies within h of the point the central quotient
 * mixes two slopes, but one of the one-sided quotients (L(v+h) - L(v)) / h,
 * (L(v) - L(v-h)) / h lies wholly on the point's side. A coordinate's error
 * is the smallest of its errors against the three quotients; on smooth
 * functions that loosens the check only by the curvature term h f''/2. A
 * coordinate that still fails (several kinks within h: a first-layer weight
 * of a wide relu net moves thousands of pre-activations) is retried at h/4
 * and h/16, where kinks are rarer (the noise allowance grows as 1/h). A
 * wrong gradient fails at every step: on the example configurations a
 * relu or sigmoid derivative off by 10%, a BatchNorm backward missing a
 * term, a dropped skip gradient or a bias gradient missing one row all
 * fail, and the correct code passes.
 *
 * Training-mode BatchNorm is checked with its batch statistics recomputed
 * by every forward, i.e. the same semantics as the analytic gradient.
 * State buffers (running statistics) are restored afterwards. */
#ifndef ARSENAL_GRADCHECK_H
#define ARSENAL_GRADCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "arsenal/layer.h"
#include "arsenal/loss.h"
#include "arsenal/model.h"

/* Pass/fail threshold on max_rel_error. A gradient off by a factor k gives
 * |k - 1| / (k + 1) on its large coordinates: 1/3 for a factor 2 or 1/2,
 * 0.05 for a 10% error; a dropped term of BatchNorm's backward (the mean of
 * dy, or the xhat * mean(dy * xhat) projection) is of the size of the
 * gradient itself. What noise leaves over and O(h^2) truncation measure
 * below 1e-3 on the tests' layers, so 1e-2 leaves margin on both sides. */
#define ARS_GRADCHECK_TOLERANCE 1e-2

typedef struct ars_gradcheck_result {
    char name[40];          /* layer name ("000_dense") or loss name */
    double max_rel_error;   /* over every checked coordinate of dx and the parameters, beyond noise */
    double raw_rel_error;   /* the same without the noise allowance */
    double max_abs_error;   /* largest |a - n| (raw) */
    size_t checked;         /* coordinates compared */
    size_t resolved;        /* of those, with |a| or |n| above the noise allowance: verified */
    size_t kinks;           /* passed only by a one-sided quotient or a smaller step (kinks within h) */
    char worst[40];         /* where max_rel_error was found: "dx[12]", "weight[3]" */
    double noise;           /* largest sd of a central quotient at the default step (absolute) */
} ars_gradcheck_result;

/* All-zero options (or a NULL pointer) mean the defaults. */
typedef struct ars_gradcheck_options {
    int eval;                /* 1: check in eval mode (default train mode) */
    double step;             /* relative step h (default 3e-3) */
    double floor_fraction;   /* of the tensor's RMS gradient (default 0.1) */
    double noise_z;          /* errors within noise_z * sigma are noise (default 8) */
    int max_coords;          /* coordinates sampled per tensor (default 256) */
} ars_gradcheck_options;

/* 1 if max_rel_error <= ARS_GRADCHECK_TOLERANCE (also when nothing was
 * checked: a parameterless layer in a model check). */
int ars_gradcheck_passed(const ars_gradcheck_result *result);

/* One layer of spec built alone (residual kinds need a model: use
 * ars_gradcheck_model), parameters and state buffers randomized from seed
 * (ars_gradcheck_randomize), x ~ N(0, 1) of [rows, in_dim]. Checks dx and
 * every parameter gradient. pass: mode from options, step 1, no dist,
 * sample ids = row index (a fixed dropout mask). */
int ars_gradcheck_layer(const ars_layer_spec *spec, ars_shape in, int rows, uint64_t seed,
                        const ars_gradcheck_options *options, ars_gradcheck_result *result);

/* The same for a layer that is already set up, with its param, grad and
 * state pointers (e.g. a layer of a model, or one whose ops a test
 * replaced). x is [pass->rows, in_dim]; r comes from seed. The layer's
 * grad slice holds the analytic gradient afterwards. */
int ars_gradcheck_layer_at(ars_layer *layer, const ars_pass *pass, const float *x, uint64_t seed,
                           const ars_gradcheck_options *options, ars_gradcheck_result *result);

/* The whole model under pass (its mode wins over options->eval) on input
 * x [pass->rows, in_dim]: every layer's parameter gradients from
 * ars_model_backward, sampling at most max_coords coordinates per tensor.
 * per_layer has model->layer_count entries; layers without parameters get
 * checked = 0. Single process only: pass->dist must be NULL or 1 rank
 * (the loss of one rank does not see the other ranks' outputs). */
int ars_gradcheck_model(ars_model *model, const ars_pass *pass, const float *x, uint64_t seed,
                        const ars_gradcheck_options *options, ars_gradcheck_result *per_layer);

/* The loss gradient dlogits of ars_loss_compute against differences of the
 * global mean loss (loss_sum / rows), on random logits [rows, dim] (scale 2)
 * with random labels or targets. */
int ars_gradcheck_loss(ars_loss_kind kind, int rows, int dim, uint64_t seed,
                       const ars_gradcheck_options *options, ars_gradcheck_result *result);

/* Random values suited to a gradient check (not to training): weights
 * N(0, 1/fan_in), biases and beta N(0, 0.3^2), gamma 1 + N(0, 0.3^2),
 * running means N(0, 0.3^2), running variances U(0.5, 1.5). Deterministic
 * in (seed, layer index). */
void ars_gradcheck_randomize(ars_layer *layer, uint64_t seed);
void ars_gradcheck_randomize_model(ars_model *model, uint64_t seed);

#endif

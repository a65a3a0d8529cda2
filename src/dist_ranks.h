/* dist_ranks: the one question about a pass's dist (ars_pass.dist, opaque
 * outside dist.c) that the model asks, so that model.c need not include
 * arsenal/dist.h: dist.c plans its gradient buckets over the model and
 * includes arsenal/model.h, and the model must not depend on it back.
 * Internal to the library. */
#ifndef ARSENAL_DIST_RANKS_H
#define ARSENAL_DIST_RANKS_H

#include "arsenal/layer.h"

/* 1 when dist spans more than one rank (ars_dist_active), so a backward's
 * gradients are summed over ranks afterwards; 0 for NULL or one rank. */
int ars_dist_spans_ranks(const ars_dist *dist);

#endif

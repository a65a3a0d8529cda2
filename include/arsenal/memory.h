/* memory: how much more this process may allocate, from the tightest of
 * physical RAM (shared by the ranks on the host), the cgroup limit (v2
 * memory.max, v1 memory.limit_in_bytes, of this process's cgroup and its
 * ancestors) and RLIMIT_AS / RLIMIT_DATA, less what is already in use: to
 * refuse a model or a data set that cannot fit before allocating it. */
#ifndef ARSENAL_MEMORY_H
#define ARSENAL_MEMORY_H

typedef struct ars_memory_budget {
    double bytes;        /* left under the tightest limit */
    double limit;        /* that limit */
    double used;         /* counted against it already */
    char source[200];    /* which, for messages: "ulimit -v (RLIMIT_AS)", "cgroup memory.max ..." */
} ars_memory_budget;

void ars_memory_budget_get(ars_memory_budget *budget);

/* "ulimit -v (RLIMIT_AS) 7.6 GiB, 0.4 GiB in use" from a budget, for the
 * parenthesis of a refusal. */
void ars_memory_budget_describe(const ars_memory_budget *budget, char *out, unsigned long size);

#define ARS_GIB(bytes) ((double)(bytes) / 1073741824.0)

/* "1.5 GiB", "12.0 MiB", "300 bytes" into out (32 bytes are enough); returns out. */
const char *ars_memory_format(double bytes, char *out, unsigned long size);

#endif

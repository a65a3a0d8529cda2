/* memory: the memory this process may still allocate (see memory.h). */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/memory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Limits at or past this are "none" (cgroup v1 writes 2^63 - 4096). */
#define NO_LIMIT 0x1p60

/* The first number of a file, or -1 (absent, unreadable, "max"). */
static double read_number(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    unsigned long long v;
    int ok = fscanf(f, "%llu", &v) == 1;
    fclose(f);
    return ok ? (double)v : -1;
}

/* Keeps the tighter of the budget and limit - used. */
static void consider(ars_memory_budget *b, double limit, double used, const char *fmt, const char *arg)
{
    if (!(limit > 0) || limit >= NO_LIMIT) return;
    if (used < 0) used = 0;
    double left = limit > used ? limit - used : 0;
    if (left >= b->bytes) return;
    b->bytes = left;
    b->limit = limit;
    b->used = used;
    snprintf(b->source, sizeof b->source, fmt, arg);
}

/* This process's cgroup and every ancestor up to the hierarchy's root:
 * the tightest limit of the chain is the one that applies. */
static void consider_cgroups(ars_memory_budget *b)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        /* "0::/path" (v2) or "4:memory:/path" (v1; controllers comma-separated) */
        char *controllers = strchr(line, ':'), *path;
        if (!controllers || !(path = strchr(controllers + 1, ':'))) continue;
        *path++ = '\0';
        controllers++;
        const int v2 = strcmp(line, "0") == 0 && *controllers == '\0';
        int v1 = 0;
        for (char *c = controllers; !v2 && *c; c += strcspn(c, ","), c += *c == ',')
            v1 |= strncmp(c, "memory", 6) == 0 && (c[6] == ',' || c[6] == '\0');
        if (!v2 && !v1) continue;
        const char *root = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
        const char *limit_file = v2 ? "memory.max" : "memory.limit_in_bytes";
        const char *usage_file = v2 ? "memory.current" : "memory.usage_in_bytes";
        for (;;) {
            char dir[4400], limit_path[4500], usage_path[4500];
            snprintf(dir, sizeof dir, "%s%s", root, strcmp(path, "/") == 0 ? "" : path);
            snprintf(limit_path, sizeof limit_path, "%s/%s", dir, limit_file);
            snprintf(usage_path, sizeof usage_path, "%s/%s", dir, usage_file);
            double limit = read_number(limit_path);
            if (limit > 0 && limit < NO_LIMIT)
                consider(b, limit, read_number(usage_path), "cgroup limit %.170s", limit_path);
            char *slash = strrchr(path, '/');
            if (!slash || slash == path) {
                if (strcmp(path, "/") == 0 || !*path) break;
                path[1] = '\0';   /* the root itself, last */
                continue;
            }
            *slash = '\0';
        }
    }
    fclose(f);
}

/* Ranks sharing this host, from the launcher's environment (Open MPI,
 * MPICH/Hydra); 1 when unknown. */
static int ranks_on_host(void)
{
    static const char *const names[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = getenv(names[i]);
        int n = v ? atoi(v) : 0;
        if (n > 0) return n;
    }
    return 1;
}

void ars_memory_budget_get(ars_memory_budget *b)
{
    memset(b, 0, sizeof *b);
    b->bytes = NO_LIMIT;
    b->limit = NO_LIMIT;
    snprintf(b->source, sizeof b->source, "no limit found");
    const double page = (double)sysconf(_SC_PAGE_SIZE);
    /* statm: total program size, resident, shared, text, lib, data + stack (pages) */
    double size = -1, resident = -1, data = -1;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        unsigned long v[6];
        if (fscanf(f, "%lu %lu %lu %lu %lu %lu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) == 6) {
            size = v[0] * page;
            resident = v[1] * page;
            data = v[5] * page;
        }
        fclose(f);
    }
    const long pages = sysconf(_SC_PHYS_PAGES);
    if (pages > 0 && page > 0) {
        /* 10% for the system; the ranks of this host share the rest */
        const int ranks = ranks_on_host();
        char what[64] = "90% of physical RAM";
        if (ranks > 1) snprintf(what, sizeof what, "90%% of physical RAM / %d ranks on this host", ranks);
        consider(b, 0.9 * (double)pages * page / ranks, resident, "%s", what);
    }
    consider_cgroups(b);
    struct rlimit r;
    if (getrlimit(RLIMIT_AS, &r) == 0 && r.rlim_cur != RLIM_INFINITY)
        consider(b, (double)r.rlim_cur, size, "%s", "ulimit -v (RLIMIT_AS)");
    if (getrlimit(RLIMIT_DATA, &r) == 0 && r.rlim_cur != RLIM_INFINITY)
        consider(b, (double)r.rlim_cur, data, "%s", "ulimit -d (RLIMIT_DATA)");
}

void ars_memory_budget_describe(const ars_memory_budget *b, char *out, unsigned long size)
{
    char limit[32], used[32];
    if (b->bytes >= NO_LIMIT) snprintf(out, size, "%s", b->source);
    else snprintf(out, size, "limit from %s: %s, %s in use", b->source,
                  ars_memory_format(b->limit, limit, sizeof limit), ars_memory_format(b->used, used, sizeof used));
}

const char *ars_memory_format(double bytes, char *out, unsigned long size)
{
    if (bytes >= 1073741824.0) snprintf(out, size, "%.1f GiB", ARS_GIB(bytes));
    else if (bytes >= 1048576.0) snprintf(out, size, "%.1f MiB", bytes / 1048576.0);
    else snprintf(out, size, "%.0f bytes", bytes);
    return out;
}

/* version: what this binary is, for reports, checkpoints and --version. */
#ifndef ARSENAL_VERSION_H
#define ARSENAL_VERSION_H

/* The commit the library was built from (git describe: "0859ca5abc12",
 * "...-dirty" with uncommitted changes, "unknown" outside a git tree),
 * refreshed at every build. ARSENAL_VERSION is the release (CMake). */
const char *ars_git_commit(void);

#endif

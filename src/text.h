/* text: building a message or a run file in a fixed buffer. */
#ifndef ARSENAL_TEXT_H
#define ARSENAL_TEXT_H

#include <stddef.h>

#include "arsenal/error.h"

/* printf onto the end of the string in out[size]; what does not fit is cut. */
void ars_appendf(char *out, size_t size, const char *fmt, ...) ARS_PRINTF(3, 4);

#endif

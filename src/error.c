/* error: the per-thread error message buffer behind ars_error(). */
#include "arsenal/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { MESSAGE_CAPACITY = 2048 };
static _Thread_local char message[MESSAGE_CAPACITY];

int ars_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return code;
}

int ars_error_context(int code, const char *fmt, ...)
{
    char prefix[512], old[MESSAGE_CAPACITY];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, message, sizeof old);
    /* prefix + ": " + old, the old message cut if it must be */
    size_t used = strlen(prefix);
    memcpy(message, prefix, used);
    if (used + 2 < sizeof message) {
        memcpy(message + used, ": ", 2);
        used += 2;
    }
    size_t room = sizeof message - 1 - used, length = strlen(old);
    memcpy(message + used, old, length < room ? length : room);
    message[used + (length < room ? length : room)] = '\0';
    return code;
}

const char *ars_error_message(void) { return message; }

void ars_error_clear(void) { message[0] = '\0'; }

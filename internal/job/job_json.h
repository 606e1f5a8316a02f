/* job_json.h — private to the job module: UTF-8 checks and the allocation-free raw JSON scanning
 * that job_parse does before (and, for values it cannot parse, instead of) the json reader's pass.
 * Not for other modules. */
#ifndef PARLEY_JOB_JSON_H
#define PARLEY_JOB_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/base.h"

/* buf_append for the hot paths: inline when the room is already there. */
static inline int job_buf_put(buf_t *b, const void *s, size_t n)
{
    if ((b->limit && b->len + n > b->limit) || b->len + n >= b->cap) {
        if (buf_reserve(b, n) < 0)
            return -1;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

typedef enum {
    JOB_SCAN_OK = 0,
    JOB_SCAN_BAD_UTF8,   /* invalid UTF-8 */
    JOB_SCAN_CONTROL,    /* a raw control character inside a string, or a raw NUL anywhere */
    JOB_SCAN_NUL_ESCAPE, /* a \u0000 escape inside a string */
} job_scan_result_t;

/* One pass over a JSON text: UTF-8, raw control characters and \u0000 escapes. *at = offset of
 * the first problem. On the way, *lone = offset of the first \u escape of a lone UTF-16 surrogate in a
 * string (SIZE_MAX when none): the json reader decodes those as U+FFFD, job_parse rejects them. */
job_scan_result_t job_json_prescan(const char *p, size_t n, size_t *at, size_t *lone);
/* job_json_prescan of a text the json reader accepted (every backslash is then in a string, and no
 * control byte is in one): the same answer, ASCII without backslashes skipped 16 bytes at a time. */
job_scan_result_t job_json_postscan(const char *p, size_t n, size_t *at, size_t *lone);

/* Finds the first member named key (no escapes in the name) of the top-level object of p[0..n)
 * without building a tree; tolerant of errors elsewhere and never reads past n. Sets *tok to the
 * raw value token. false when not found or the text before it is not well-formed. */
bool job_json_find_member(const char *p, size_t n, const char *key, const char **tok, size_t *tok_len);

#endif

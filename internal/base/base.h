/* base — the few helpers every module shares: allocation through one wrapper (so tests can fail
 * the Nth allocation), clocks, a size-bounded growable buffer, a secret string that never formats
 * its value, and the chat message type that flows from job to provider.
 * It owns no global state beyond the allocation-failure counter used by torture tests, and never
 * does I/O. */
#ifndef PARLEY_BASE_H
#define PARLEY_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Allocation. All return NULL on failure (never abort). */
void *base_malloc(size_t n);
void *base_calloc(size_t count, size_t size);
void *base_realloc(void *p, size_t n);
char *base_strdup(const char *s);
char *base_strndup(const char *s, size_t n);
/* Torture hook: the n-th allocation from now fails (n >= 1); 0 turns it off. */
void base_alloc_fail_after(long n);

/* Clocks. */
int64_t base_wall_ms(void);  /* Unix epoch milliseconds */
uint64_t base_mono_ns(void); /* monotonic nanoseconds */
static inline int64_t base_mono_ms(void) { return (int64_t)(base_mono_ns() / 1000000u); }

/* A growable byte buffer with a hard size limit (0 = unlimited). data is always NUL-terminated. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
    size_t limit;
} buf_t;

void buf_init(buf_t *b, size_t limit);
/* 0 on success; -1 if out of memory or the limit would be passed (buffer unchanged). */
int buf_append(buf_t *b, const void *data, size_t n);
/* Makes room for extra more bytes (plus the NUL) without changing len; 0, or -1 as buf_append. */
int buf_reserve(buf_t *b, size_t extra);
int buf_append_str(buf_t *b, const char *s);
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* How many leading bytes of p[0..n) are plain JSON string bytes, to be copied without escaping: ASCII
 * 0x20..0x7F except '"' and '\\' (16 at a time with SSE2, else 8). */
size_t base_json_plain_run(const unsigned char *p, size_t n);

/* Writes v in decimal at out (room for 20 bytes, no NUL); returns the digits written. For hot paths,
 * where snprintf costs ~10 times more. */
size_t base_u64_dec(char *out, uint64_t v);
/* base_u64_dec for a signed value (room for 20 bytes and the sign). */
size_t base_i64_dec(char *out, int64_t v);
/* Length (1..4) of the valid UTF-8 sequence at p[0..n) (n > 0), or 0 when it is invalid: no overlong
 * forms, no UTF-16 surrogates, nothing above U+10FFFF. */
size_t base_utf8_seq_len(const unsigned char *p, size_t n);
/* Writes the n strings one after another into out (cap > 0), cut at cap - 1 bytes, NUL-terminated;
 * NULL parts are skipped. Returns the length written. For hot paths, instead of snprintf("%s%s..."). */
size_t base_join(char *out, size_t cap, const char *const *parts, size_t n);
void buf_reset(buf_t *b);
void buf_free(buf_t *b);
/* Hands the data to the caller (who frees it) and leaves b empty. */
char *buf_steal(buf_t *b, size_t *len);

/* A secret (API key, password). Print it only through secret_masked(); reveal it only where it
 * is put on the wire. */
typedef struct {
    char *value; /* NULL when unset */
} secret_t;

#define SECRET_MASK "***"
static inline const char *secret_masked(const secret_t *s)
{
    return s->value && *s->value ? SECRET_MASK : "";
}
static inline const char *secret_reveal(const secret_t *s) { return s->value ? s->value : ""; }
static inline bool secret_is_set(const secret_t *s) { return s->value && *s->value; }

/* One chat turn. content is not necessarily NUL-free; content_len is authoritative. content_json, when
 * not NULL, is the same content already written as the inside of a JSON string (valid UTF-8, escaped,
 * no quotes), as read from a stored history entry: request bodies copy it instead of escaping again. */
typedef struct {
    const char *role;
    const char *content;
    size_t content_len;
    const char *content_json;
    size_t content_json_len;
} chat_message_t;

#define BASE_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif

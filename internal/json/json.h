/* json — a JSON reader over a byte span that builds no tree and allocates nothing (but json_str_dup):
 * json_parse validates a whole document once (RFC 8259, nesting bounded by JSON_MAX_DEPTH), and the
 * values it hands out are small structs pointing into the document, read in place: member lookup by
 * key, iteration, array index, string decoding into a caller buffer, numbers as double or bounded
 * integer. It owns nothing: every value borrows the document (and the caller's optional json_doc_t,
 * a fixed table of where the first containers end), which must outlive it and stay unchanged.
 * It never writes JSON, never allocates during parse or navigation, never reads outside the span, and
 * navigation functions are only defined on values that came from a successful json_parse.
 *
 * Decoding: \uXXXX becomes UTF-8 and a surrogate pair one 4-byte sequence; a lone surrogate (a high
 * one not followed by \u + low one, or a low one alone) becomes U+FFFD — cJSON rejects such documents,
 * we keep the answer. Bytes >= 0x80 are passed through unchecked. A UTF-8 byte order mark is not
 * whitespace: a document starting with one is rejected (strip it first if the source may send one). */
#ifndef PARLEY_JSON_H
#define PARLEY_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Containers nested deeper than this are rejected ("[[1]]" has depth 2). */
#define JSON_MAX_DEPTH 64
/* Keys json_get_many and json_parse_get look up at most. */
#define JSON_GET_MANY_MAX 16

typedef enum {
    JSON_NONE = 0, /* no value: a missing member, an index past the end, a lookup on a non-container */
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
} json_type_t;

/* Spans a json_doc_t keeps: the first containers and long strings of a document. */
#define JSON_SPANS 64
/* Strings of at least this many raw bytes are kept in a json_doc_t. */
#define JSON_LONG_STRING 48

/* What json_parse learns on its way that navigation can use: where the first JSON_SPANS containers
 * and long strings end, so that they are jumped over rather than scanned again. The caller's (on its
 * stack: it allocates nothing) for as long as the values; optional. */
typedef struct {
    const char *base;
    size_t n;
    uint32_t start[JSON_SPANS]; /* offsets from base, in document order */
    uint32_t end[JSON_SPANS];
} json_doc_t;

/* A value: its raw bytes p[0..len) in the document, quotes and brackets included, and the json_doc_t
 * of its document (or NULL). */
typedef struct {
    const char *p;
    size_t len;
    json_type_t type;
    const json_doc_t *doc;
} json_value_t;

typedef struct {
    size_t offset;   /* byte offset of the first byte that does not fit */
    const char *msg; /* static text */
} json_err_t;

/* Validates text[0..len): exactly one value with optional whitespace around it; no NUL byte, no
 * control byte in a string, escapes as RFC 8259 lists them, numbers by its grammar. Fills doc when it
 * is not NULL (faster navigation afterwards). 0 with *root set, or -1 with *err filled (err may be
 * NULL) and *root of type JSON_NONE. */
int json_parse(const char *text, size_t len, json_doc_t *doc, json_value_t *root, json_err_t *err);
/* json_parse, and on the same pass json_get_many(*root, keys, n, out) when the root is an object (out
 * all JSON_NONE otherwise, and on failure). */
int json_parse_get(const char *text, size_t len, json_doc_t *doc, json_value_t *root, const char *const *keys,
                   size_t n, json_value_t *out, json_err_t *err);

/* Member of obj named key (compared after unescaping, case-sensitive; the first when keys repeat), or
 * a JSON_NONE value when absent or obj is no object. json_getn takes a key of klen bytes. */
json_value_t json_get(json_value_t obj, const char *key);
json_value_t json_getn(json_value_t obj, const char *key, size_t klen);
/* json_get of n keys (at most JSON_GET_MANY_MAX; the rest stay JSON_NONE) in one pass over obj:
 * out[i] is the member keys[i]. */
void json_get_many(json_value_t obj, const char *const *keys, size_t n, json_value_t *out);
/* Element i of arr, or JSON_NONE when arr is no array or is shorter. */
json_value_t json_at(json_value_t arr, size_t i);
/* Elements of an array or members of an object; 0 for anything else. */
size_t json_count(json_value_t v);

/* Iteration over an array's elements or an object's members (an iterator over anything else is
 * empty): for (json_iter_t it = json_iter(v); json_next(&it, &key, &val);) ... */
typedef struct {
    const char *p;
    const char *end;
    bool object;
    const json_doc_t *doc;
} json_iter_t;

json_iter_t json_iter(json_value_t v);
/* The next element into *val (for an object, its key — a JSON_STRING value — into *key, which may be
 * NULL; for an array *key gets JSON_NONE). false at the end. */
bool json_next(json_iter_t *it, json_value_t *key, json_value_t *val);

/* Strings. s must be a JSON_STRING; for anything else these decode nothing (0, false, NULL). */
/* Decodes s into dst, which needs room for s.len bytes (decoding never grows); returns the decoded
 * length. No NUL is added; the text may contain NUL bytes (from \u0000). */
size_t json_str_decode(json_value_t s, char *dst);
/* Decodes only the first min(decoded length, cap) bytes into dst (a UTF-8 sequence may be cut at the
 * end); returns the bytes written. */
size_t json_str_prefix(json_value_t s, char *dst, size_t cap);
/* The length json_str_decode would return, without writing anything. */
size_t json_str_len(json_value_t s);
/* The decoded text in a base_malloc'd NUL-terminated copy (length in *len, which may be NULL), or
 * NULL when s is no string or out of memory. */
char *json_str_dup(json_value_t s, size_t *len);
/* True when s decodes to exactly the NUL-terminated lit. */
bool json_str_eq(json_value_t s, const char *lit);

/* Numbers. 0, or -1 when v is no number. Magnitudes beyond double's range give ±HUGE_VAL (or ±0),
 * as strtod does. */
int json_double(json_value_t v, double *out);
/* The number as an integer in [min, max]: exact for integer syntax of any length; a fraction or an
 * exponent is taken when the value is integral and within ±2^53. 0, or -1 when v is no number, is
 * not integral, or is out of range. */
int json_int(json_value_t v, int64_t min, int64_t max, int64_t *out);

/* The 4 hex digits of a \u escape at p as a UTF-16 code unit, or -1 when one is not a hex digit. */
long json_hex4(const unsigned char *p);

#endif

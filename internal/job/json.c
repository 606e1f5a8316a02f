/* json.c — the byte-level JSON helpers of the job module: UTF-8 validation, the checks job_parse adds
 * to the json reader's (a scan for texts it rejected, a faster one for texts it accepted), a tree-free
 * top-level member finder (to read ids from values that cannot be parsed), and the JSON string escaper
 * every encoder uses. */
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "job/job.h"
#include "job/job_json.h"
#include "json/json.h"

/* The \u escape at p[0..n) (n >= 6): 12 when it starts a surrogate pair, 0 when it is a lone surrogate
 * (as cJSON rejects them), 6 otherwise (a bad escape is the reader's to reject). */
static size_t u_escape_len(const unsigned char *p, size_t n)
{
    long hi = json_hex4(p + 2);
    if (hi < 0xD800 || hi > 0xDFFF)
        return 6;
    if (hi >= 0xDC00)
        return 0;
    long lo = n >= 12 && p[6] == '\\' && p[7] == 'u' ? json_hex4(p + 8) : -1;
    return lo >= 0xDC00 && lo <= 0xDFFF ? 12 : 0;
}

/* The escape at p[0..n) (p[0] is a backslash inside a string): the bytes to step over, or 0 for a
 * \u0000. Notes the first lone surrogate in *lone. */
static size_t escape_step(const unsigned char *p, size_t n, size_t i, size_t *lone)
{
    if (n - i >= 6 && p[i + 1] == 'u') {
        if (memcmp(p + i + 2, "0000", 4) == 0)
            return 0;
        size_t l = u_escape_len(p + i, n - i);
        if (l == 12)
            return l; /* both halves are ASCII: nothing else to check */
        if (l == 0 && *lone == SIZE_MAX)
            *lone = i;
    }
    /* the escaped character cannot end the string */
    return i + 1 < n && p[i + 1] >= 0x20 && p[i + 1] < 0x80 ? 2 : 1;
}

/* A byte >= 0x80 at p[i]: the length of its UTF-8 sequence, or 0 with *at set. */
static size_t utf8_step(const unsigned char *p, size_t n, size_t i, size_t *at)
{
    size_t l = base_utf8_seq_len(p + i, n - i);
    if (!l)
        *at = i;
    return l;
}

job_scan_result_t job_json_prescan(const char *s, size_t n, size_t *at, size_t *lone)
{
    const unsigned char *p = (const unsigned char *)s;
    bool in_string = false;
    size_t i = 0, l;
    *lone = SIZE_MAX;
    while (i < n) {
        i += base_json_plain_run(p + i, n - i);
        if (i >= n)
            break;
        unsigned char c = p[i];
        if (c >= 0x80) {
            if (!(l = utf8_step(p, n, i, at)))
                return JOB_SCAN_BAD_UTF8;
            i += l;
            continue;
        }
        if (c == '\\' && in_string) {
            if (!(l = escape_step(p, n, i, lone))) {
                *at = i;
                return JOB_SCAN_NUL_ESCAPE;
            }
            i += l;
            continue;
        }
        if (c == '"') {
            in_string = !in_string;
        } else if (c < 0x20 && (in_string || c == 0)) {
            *at = i;
            return JOB_SCAN_CONTROL;
        }
        i++;
    }
    return JOB_SCAN_OK;
}

job_scan_result_t job_json_postscan(const char *s, size_t n, size_t *at, size_t *lone)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, l;
    *lone = SIZE_MAX;
    for (;;) {
#ifdef __SSE2__
        for (const __m128i bs = _mm_set1_epi8('\\'); n - i >= 16; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
            unsigned hit = (unsigned)_mm_movemask_epi8(_mm_or_si128(v, _mm_cmpeq_epi8(v, bs)));
            if (hit) {
                i += (size_t)__builtin_ctz(hit);
                break;
            }
        }
#endif
        while (i < n && p[i] < 0x80 && p[i] != '\\')
            i++;
        if (i >= n)
            return JOB_SCAN_OK;
        if (p[i] >= 0x80) {
            if (!(l = utf8_step(p, n, i, at)))
                return JOB_SCAN_BAD_UTF8;
        } else if (!(l = escape_step(p, n, i, lone))) {
            *at = i;
            return JOB_SCAN_NUL_ESCAPE;
        }
        i += l;
    }
}

static size_t skip_ws(const char *p, size_t n, size_t i)
{
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

/* p[*i] is '"': moves *i past the closing quote. */
static bool skip_string(const char *p, size_t n, size_t *i)
{
    size_t j = *i + 1;
    while (j < n) {
        if (p[j] == '\\') {
            j += 2;
        } else if (p[j] == '"') {
            *i = j + 1;
            return true;
        } else {
            j++;
        }
    }
    return false;
}

/* Moves *i past one value (string, object/array by bracket depth, or scalar). */
static bool skip_value(const char *p, size_t n, size_t *i)
{
    size_t j = *i;
    if (p[j] == '"')
        return skip_string(p, n, i);
    if (p[j] == '{' || p[j] == '[') {
        size_t depth = 0;
        while (j < n) {
            char c = p[j];
            if (c == '"') {
                if (!skip_string(p, n, &j))
                    return false;
                continue;
            }
            if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0) {
                    *i = j + 1;
                    return true;
                }
            }
            j++;
        }
        return false;
    }
    while (j < n && !strchr(",}] \t\r\n", p[j]))
        j++;
    if (j == *i)
        return false;
    *i = j;
    return true;
}

bool job_json_find_member(const char *p, size_t n, const char *key, const char **tok, size_t *tok_len)
{
    size_t key_len = strlen(key);
    size_t i = skip_ws(p, n, 0);
    if (i >= n || p[i] != '{')
        return false;
    i++;
    for (;;) {
        i = skip_ws(p, n, i);
        if (i >= n || p[i] != '"')
            return false;
        size_t name = i;
        if (!skip_string(p, n, &i))
            return false;
        bool match = i - name == key_len + 2 && memcmp(p + name + 1, key, key_len) == 0;
        i = skip_ws(p, n, i);
        if (i >= n || p[i] != ':')
            return false;
        i = skip_ws(p, n, i + 1);
        if (i >= n)
            return false;
        size_t start = i;
        if (!skip_value(p, n, &i))
            return false;
        if (match) {
            *tok = p + start;
            *tok_len = i - start;
            return true;
        }
        i = skip_ws(p, n, i);
        if (i >= n || p[i] != ',')
            return false;
        i++;
    }
}

/* The escape of an ASCII byte that JSON does not allow raw in a string; returns its length. */
static size_t escape_ascii(unsigned char c, char out[6])
{
    static const char hex[] = "0123456789abcdef";
    out[0] = '\\';
    switch (c) {
    case '"':
        out[1] = '"';
        return 2;
    case '\\':
        out[1] = '\\';
        return 2;
    case '\b':
        out[1] = 'b';
        return 2;
    case '\f':
        out[1] = 'f';
        return 2;
    case '\n':
        out[1] = 'n';
        return 2;
    case '\r':
        out[1] = 'r';
        return 2;
    case '\t':
        out[1] = 't';
        return 2;
    default:
        memcpy(out + 1, "u00", 3);
        out[4] = hex[c >> 4];
        out[5] = hex[c & 0xF];
        return 6;
    }
}

int job_json_append_string(buf_t *b, const char *s, size_t n, unsigned flags)
{
    const unsigned char *p = (const unsigned char *)s;
    if (buf_reserve(b, n + 2) < 0 || job_buf_put(b, "\"", 1) < 0)
        return -1;
    size_t start = 0, i = 0;
    while (i < n) {
        i += base_json_plain_run(p + i, n - i);
        if (i >= n)
            break;
        unsigned char c = p[i];
        char esc[6];
        size_t esc_len, adv = 1;
        if (c == 0 && (flags & JOB_JSON_NUL_AS_FFFD)) {
            memcpy(esc, "\xEF\xBF\xBD", 3);
            esc_len = 3;
        } else if (c < 0x80) {
            esc_len = escape_ascii(c, esc);
        } else {
            size_t l = base_utf8_seq_len(p + i, n - i);
            if (l == 0) {
                memcpy(esc, "\xEF\xBF\xBD", 3); /* U+FFFD */
                esc_len = 3;
            } else if ((flags & JOB_JSON_ESCAPE_LINESEP) && l == 3 && c == 0xE2 && p[i + 1] == 0x80 &&
                       (p[i + 2] == 0xA8 || p[i + 2] == 0xA9)) {
                memcpy(esc, p[i + 2] == 0xA8 ? "\\u2028" : "\\u2029", 6);
                esc_len = 6;
                adv = 3;
            } else {
                i += l;
                continue;
            }
        }
        if (job_buf_put(b, s + start, i - start) < 0 || job_buf_put(b, esc, esc_len) < 0)
            return -1;
        i += adv;
        start = i;
    }
    if (job_buf_put(b, s + start, n - start) < 0 || job_buf_put(b, "\"", 1) < 0)
        return -1;
    return 0;
}

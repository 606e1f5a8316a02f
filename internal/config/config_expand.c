/* config_expand.c — ${VAR}, ${VAR:-default} and $$ inside scalar values. One pass over the written
 * text: what a variable expands to is copied as it is, never expanded again, so the output is bounded
 * by the text plus the environment. */
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"

#define CFG_VAR_NAME_MAX 128

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t extra;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            extra = 1, min = 0x80, c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2, min = 0x800, c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            extra = 3, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        if (len - i <= extra)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            c = (c << 6) | (p[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
        i += extra + 1;
    }
    return true;
}

/* Appends n bytes, refusing to grow past CFG_SCALAR_MAX. */
static int emit(buf_t *out, const char *s, size_t n, char *why, size_t whylen)
{
    if (out->len + n > CFG_SCALAR_MAX) {
        snprintf(why, whylen, "value longer than %u bytes after ${VAR} expansion", CFG_SCALAR_MAX);
        return -1;
    }
    if (buf_append(out, s, n) < 0) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    return 0;
}

static bool is_name_char(char ch, bool first)
{
    return ch == '_' || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
           (!first && ch >= '0' && ch <= '9');
}

/* Expands the body of one ${...} (between the braces). */
static int expand_var(const char *body, size_t blen, buf_t *out, char *why, size_t whylen)
{
    size_t nlen = 0;
    while (nlen < blen && is_name_char(body[nlen], nlen == 0))
        nlen++;
    bool has_default = blen - nlen >= 2 && body[nlen] == ':' && body[nlen + 1] == '-';
    if (nlen == 0 || (nlen < blen && !has_default)) {
        snprintf(why, whylen,
                 "bad ${...}: expected ${NAME} or ${NAME:-default}, NAME of letters, digits and _");
        return -1;
    }
    if (nlen >= CFG_VAR_NAME_MAX) {
        snprintf(why, whylen, "variable name longer than %d characters", CFG_VAR_NAME_MAX - 1);
        return -1;
    }
    char name[CFG_VAR_NAME_MAX];
    memcpy(name, body, nlen);
    name[nlen] = '\0';
    const char *val = getenv(name);
    if (val && *val) {
        if (!utf8_valid(val, strlen(val))) {
            snprintf(why, whylen, "environment variable %s is not valid UTF-8", name);
            return -1;
        }
        return emit(out, val, strlen(val), why, whylen);
    }
    if (has_default)
        return emit(out, body + nlen + 2, blen - nlen - 2, why, whylen);
    if (val)
        return 0;
    snprintf(why, whylen, "environment variable %s is not set (use ${%s:-} to allow empty)", name, name);
    return -1;
}

int cfg_expand(const char *s, size_t len, buf_t *out, char *why, size_t whylen)
{
    size_t i = 0;
    while (i < len) {
        const char *d = memchr(s + i, '$', len - i);
        size_t lit = d ? (size_t)(d - (s + i)) : len - i;
        if (emit(out, s + i, lit, why, whylen) < 0)
            return -1;
        i += lit;
        if (!d)
            break;
        if (i + 1 < len && s[i + 1] == '$') {
            if (emit(out, "$", 1, why, whylen) < 0)
                return -1;
            i += 2;
            continue;
        }
        if (i + 1 >= len || s[i + 1] != '{') {
            if (emit(out, "$", 1, why, whylen) < 0)
                return -1;
            i++;
            continue;
        }
        const char *close = memchr(s + i + 2, '}', len - i - 2);
        if (!close) {
            snprintf(why, whylen, "unterminated ${ (no closing }; write $$ for a literal $)");
            return -1;
        }
        if (expand_var(s + i + 2, (size_t)(close - (s + i + 2)), out, why, whylen) < 0)
            return -1;
        i = (size_t)(close - s) + 1;
    }
    return 0;
}

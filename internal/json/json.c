/* json.c — the validating pass (json_parse), which also notes where containers and long strings end
 * (json_doc_t) and picks up wanted root members (json_parse_get); then navigation and decoding in
 * place: a value's end is looked up in the json_doc_t or found by skipping (SSE2 runs over strings,
 * bracket counting over containers with strings masked out), without checking again. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "base/base.h"
#include "json/json.h"

typedef const unsigned char *cur_t;

/* Significant digits kept when converting a long number: enough for a correctly rounded double. */
#define JSON_SIG_MAX 800
/* Numbers shorter than this are converted from a stack copy. */
#define JSON_SHORT_NUM 64

/* ' ', '\t', '\n', '\r' */
#define JSON_WS_MASK (1ull << ' ' | 1ull << '\t' | 1ull << '\n' | 1ull << '\r')

static bool is_ws(unsigned char c) { return c <= ' ' && (JSON_WS_MASK >> c & 1); }

static cur_t skip_ws(cur_t p, cur_t end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

static bool is_digit(unsigned char c) { return (unsigned)(c - '0') < 10u; }

static int hex_val(unsigned char c)
{
    if (is_digit(c))
        return c - '0';
    c |= 0x20;
    return (unsigned)(c - 'a') < 6u ? c - 'a' + 10 : -1;
}

long json_hex4(const unsigned char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_val(p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

static json_type_t type_of(unsigned char c)
{
    switch (c) {
    case '{':
        return JSON_OBJECT;
    case '[':
        return JSON_ARRAY;
    case '"':
        return JSON_STRING;
    case 't':
        return JSON_TRUE;
    case 'f':
        return JSON_FALSE;
    case 'n':
        return JSON_NULL;
    default:
        return JSON_NUMBER;
    }
}

/* ---- Validation ------------------------------------------------------------------------------- */

#define NO_SLOT UINT32_MAX

typedef struct {
    cur_t p;    /* the next byte to read; on failure the offending byte */
    cur_t end;  /* one past the document */
    cur_t base; /* the document */
    const char *msg;
    uint64_t objects; /* bit i set when open container i (counted from the innermost) is an object */
    int depth;
    json_doc_t *doc;               /* NULL: keep no spans */
    uint32_t slot[JSON_MAX_DEPTH]; /* the doc slot of each open container, or NO_SLOT */
    const char *const *keys;       /* root members wanted, n_keys of them, into out */
    size_t n_keys;
    json_value_t *out;
    size_t pending; /* the key the root member being read matched, or n_keys */
    cur_t member;   /* where that member's value starts */
} scan_t;

static bool key_eq(cur_t raw, cur_t end, const char *key);

/* A first test before key_eq, inlined where keys are tried in turn: the first bytes differ. */
static inline bool key_may_be(cur_t raw, cur_t end, const char *key)
{
    return raw == end ? !*key : *raw == (unsigned char)*key || *raw == '\\';
}

/* A root member's key raw[0..end): remembers which wanted key it is, when one not found yet. */
static void root_key(scan_t *s, cur_t raw, cur_t end)
{
    s->pending = s->n_keys;
    for (size_t i = 0; i < s->n_keys; i++) {
        if (s->out[i].type == JSON_NONE && key_may_be(raw, end, s->keys[i]) && key_eq(raw, end, s->keys[i])) {
            s->pending = i;
            s->member = s->p;
            return;
        }
    }
}

/* A value at depth 1 ended at s->p: the root member wanted, if it is one. */
static void root_value(scan_t *s)
{
    if (s->depth != 1 || s->pending == s->n_keys)
        return;
    s->out[s->pending] = (json_value_t){.p = (const char *)s->member,
                                        .len = (size_t)(s->p - s->member),
                                        .type = type_of(*s->member),
                                        .doc = s->doc};
    s->pending = s->n_keys;
}

/* Takes the next doc slot for a span starting at p: NO_SLOT when there is no doc or it is full. */
static uint32_t span_open(scan_t *s, cur_t p)
{
    json_doc_t *d = s->doc;
    if (!d || d->n == JSON_SPANS)
        return NO_SLOT;
    d->start[d->n] = (uint32_t)(p - s->base);
    return (uint32_t)d->n++;
}

static void span_close(scan_t *s, uint32_t slot, cur_t end)
{
    if (slot != NO_SLOT)
        s->doc->end[slot] = (uint32_t)(end - s->base);
}

static bool fail(scan_t *s, const char *msg)
{
    s->msg = msg;
    return false;
}

/* Length of the leading run of p[0..n) that a string takes as it is: no '"', '\\' or byte < 0x20. */
static size_t plain_run(cur_t p, size_t n)
{
    size_t i = 0;
#ifdef __SSE2__
    const __m128i ctl = _mm_set1_epi8(0x1f), quote = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\');
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        __m128i low = _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl); /* v <= 0x1f, unsigned */
        __m128i hit = _mm_or_si128(low, _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bs)));
        int mask = _mm_movemask_epi8(hit);
        if (mask)
            return i + (size_t)__builtin_ctz((unsigned)mask);
    }
#endif
    while (i < n && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\')
        i++;
    return i;
}

/* A string's body: s->p just after the opening quote on entry, just after the closing one on success. */
static bool check_string(scan_t *s)
{
    for (;;) {
        s->p += plain_run(s->p, (size_t)(s->end - s->p));
        if (s->p == s->end)
            return fail(s, "unterminated string");
        if (*s->p == '"') {
            s->p++;
            return true;
        }
        if (*s->p != '\\')
            return fail(s, "control character in string");
        if (s->end - s->p < 2)
            return fail(s, "unterminated string");
        switch (s->p[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            s->p += 2;
            break;
        case 'u':
            if (s->end - s->p < 6 || json_hex4(s->p + 2) < 0)
                return fail(s, "bad \\u escape");
            s->p += 6;
            break;
        default:
            return fail(s, "bad escape");
        }
    }
}

static void skip_digits(scan_t *s)
{
    while (s->p < s->end && is_digit(*s->p))
        s->p++;
}

/* -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static bool check_number(scan_t *s)
{
    if (*s->p == '-')
        s->p++;
    if (s->p == s->end || !is_digit(*s->p))
        return fail(s, "bad number");
    if (*s->p++ != '0')
        skip_digits(s);
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (s->p == s->end || !is_digit(*s->p))
            return fail(s, "bad number: no digit after '.'");
        skip_digits(s);
    }
    if (s->p < s->end && (*s->p | 0x20) == 'e') {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (s->p == s->end || !is_digit(*s->p))
            return fail(s, "bad number: no digit in exponent");
        skip_digits(s);
    }
    return true;
}

static bool check_literal(scan_t *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return fail(s, "bad literal");
    s->p += n;
    return true;
}

static bool check_scalar(scan_t *s)
{
    switch (*s->p) {
    case '"': {
        cur_t start = s->p++;
        if (!check_string(s))
            return false;
        if (s->p - start >= JSON_LONG_STRING)
            span_close(s, span_open(s, start), s->p);
        return true;
    }
    case 't':
        return check_literal(s, "true", 4);
    case 'f':
        return check_literal(s, "false", 5);
    case 'n':
        return check_literal(s, "null", 4);
    default:
        if (*s->p == '-' || is_digit(*s->p))
            return check_number(s);
        return fail(s, "unexpected byte");
    }
}

/* A member's key and its colon; s->p at the key's quote on entry, at the value on success. */
static bool check_key(scan_t *s)
{
    if (s->p == s->end || *s->p != '"')
        return fail(s, "expected a string key");
    cur_t key = ++s->p;
    if (!check_string(s))
        return false;
    cur_t key_end = s->p - 1;
    s->p = skip_ws(s->p, s->end);
    if (s->p == s->end || *s->p != ':')
        return fail(s, "expected ':'");
    s->p = skip_ws(s->p + 1, s->end);
    if (s->depth == 1 && s->n_keys)
        root_key(s, key, key_end);
    return true;
}

/* After a value: closes finished containers and steps over a ',' to the next element (true), or
 * finds the document's end (*done). */
static bool after_value(scan_t *s, bool *done)
{
    for (;;) {
        s->p = skip_ws(s->p, s->end);
        if (s->depth == 0) {
            *done = true;
            return s->p == s->end || fail(s, "trailing bytes after the value");
        }
        if (s->p == s->end)
            return fail(s, "unexpected end");
        bool object = s->objects & 1;
        if (*s->p == ',') {
            s->p = skip_ws(s->p + 1, s->end);
            return !object || check_key(s);
        }
        if (*s->p != (object ? '}' : ']'))
            return fail(s, object ? "expected ',' or '}'" : "expected ',' or ']'");
        s->p++;
        s->objects >>= 1;
        s->depth--;
        span_close(s, s->slot[s->depth], s->p);
        root_value(s);
    }
}

int json_parse_get(const char *text, size_t len, json_doc_t *doc, json_value_t *root, const char *const *keys,
                   size_t n, json_value_t *out, json_err_t *err)
{
    if (!text) {
        text = "";
        len = 0;
    }
    n = n < JSON_GET_MANY_MAX ? n : JSON_GET_MANY_MAX;
    scan_t s = {.p = (cur_t)text,
                .end = (cur_t)text + len,
                .base = (cur_t)text,
                .keys = keys,
                .n_keys = n,
                .out = out,
                .pending = n};
    bool done = false, ok = true;
    *root = (json_value_t){0};
    for (size_t i = 0; i < n; i++)
        out[i] = (json_value_t){0};
    if (doc) {
        doc->base = text;
        doc->n = 0;
        s.doc = len <= UINT32_MAX ? doc : NULL;
    }
    s.p = skip_ws(s.p, s.end);
    cur_t start = s.p;
    while (ok && !done) {
        if (s.p == s.end) {
            ok = fail(&s, "unexpected end");
            break;
        }
        unsigned char c = *s.p;
        if (c != '{' && c != '[') {
            ok = check_scalar(&s);
            if (ok) {
                root_value(&s);
                ok = after_value(&s, &done);
            }
            continue;
        }
        if (s.depth == JSON_MAX_DEPTH) {
            ok = fail(&s, "nested too deep");
            break;
        }
        s.slot[s.depth] = span_open(&s, s.p);
        s.objects = s.objects << 1 | (c == '{');
        s.depth++;
        s.p = skip_ws(s.p + 1, s.end);
        if (s.p < s.end && *s.p == (c == '{' ? '}' : ']')) {
            s.p++;
            s.objects >>= 1;
            s.depth--;
            span_close(&s, s.slot[s.depth], s.p);
            root_value(&s);
            ok = after_value(&s, &done);
        } else if (c == '{')
            ok = check_key(&s);
    }
    if (!ok) {
        if (doc)
            doc->n = 0;
        for (size_t i = 0; i < n; i++)
            out[i] = (json_value_t){0};
        if (err)
            *err = (json_err_t){.offset = (size_t)(s.p - (cur_t)text), .msg = s.msg};
        return -1;
    }
    cur_t last = s.end;
    while (last > start && is_ws(last[-1]))
        last--;
    *root = (json_value_t){
        .p = (const char *)start, .len = (size_t)(last - start), .type = type_of(*start), .doc = doc};
    return 0;
}

int json_parse(const char *text, size_t len, json_doc_t *doc, json_value_t *root, json_err_t *err)
{
    return json_parse_get(text, len, doc, root, NULL, 0, NULL, err);
}

/* ---- Navigation (on validated documents) ------------------------------------------------------ */

/* In a validated document every byte <= ' ' outside strings is whitespace. */
static cur_t nav_ws(cur_t p, cur_t end)
{
    while (p < end && *p <= ' ')
        p++;
    return p;
}

/* Length of the leading run of p[0..n) without '"' or '\\'. */
static size_t quote_run(cur_t p, size_t n)
{
    size_t i = 0;
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\');
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        int mask = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bs)));
        if (mask)
            return i + (size_t)__builtin_ctz((unsigned)mask);
    }
#endif
    while (i < n && p[i] != '"' && p[i] != '\\')
        i++;
    return i;
}

/* p just after a string's opening quote; returns just after its closing quote. */
static cur_t skip_string(cur_t p, cur_t end)
{
    for (;;) {
        p += quote_run(p, (size_t)(end - p));
        if (p >= end)
            return end;
        if (*p == '"')
            return p + 1;
        p += 2; /* an escape: the byte after the backslash never ends the string */
    }
}

#ifdef __SSE2__
/* 16 bytes of a container skip that starts outside a string and holds no backslash: the quote bits,
 * prefix-XORed, mask the bytes inside strings, and the brackets outside them move *depth. Returns
 * where the skip goes on: past the closing bracket (*closed set), past the block, or into the string
 * the block ends in. */
static cur_t skip_block(cur_t p, __m128i v, unsigned q, size_t *depth, bool *closed, cur_t end)
{
    __m128i t = _mm_or_si128(v, _mm_set1_epi8(0x20)); /* '[' → '{', ']' → '}' */
    unsigned open = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(t, _mm_set1_epi8('{')));
    unsigned close = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(t, _mm_set1_epi8('}')));
    unsigned in = q ^ q << 1;
    in ^= in << 2;
    in ^= in << 4;
    in ^= in << 8;
    open &= ~in;
    close &= ~in;
    for (unsigned m = open | close; m; m &= m - 1) {
        unsigned bit = m & -m;
        if (open & bit)
            (*depth)++;
        else if (--*depth == 0) {
            *closed = true;
            return p + __builtin_ctz(bit) + 1;
        }
    }
    if (in & 0x8000) /* inside a string at the end: go on after it */
        return skip_string(p + (31 - __builtin_clz(q)) + 1, end);
    return p + 16;
}
#endif

/* p at '{' or '['; returns just after its closing bracket. Between strings, 16 bytes at a time. */
static cur_t skip_container(cur_t p, cur_t end)
{
    size_t depth = 0;
    while (p < end) {
#ifdef __SSE2__
        if (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
            unsigned q = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')));
            if (!_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')))) {
                bool closed = false;
                p = skip_block(p, v, q, &depth, &closed, end);
                if (closed)
                    return p;
                continue;
            }
        }
#endif
        unsigned char c = *p++; /* near the end, or a block with an escape: a byte at a time */
        if (c == '"')
            p = skip_string(p, end);
        else if ((c | 0x20) == '{')
            depth++;
        else if ((c | 0x20) == '}' && --depth == 0)
            return p;
    }
    return end;
}

static bool is_scalar_byte(unsigned char c)
{
    return is_digit(c) || c == '-' || c == '+' || c == '.' || (unsigned)((c | 0x20) - 'a') < 26u;
}

/* The end of the span starting at p when doc kept it, else NULL. */
static cur_t span_end(const json_doc_t *d, cur_t p)
{
    if (!d)
        return NULL;
    uint32_t off = (uint32_t)(p - (cur_t)d->base);
    size_t lo = 0, hi = d->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (d->start[mid] < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < d->n && d->start[lo] == off ? (cur_t)d->base + d->end[lo] : NULL;
}

/* The value starting at p (not whitespace). A short string is scanned; a long one or a container is
 * looked up in doc, and scanned when doc did not keep it. */
static json_value_t value_at(cur_t p, cur_t end, const json_doc_t *doc)
{
    cur_t e = NULL;
    if (*p == '"') {
        size_t room = (size_t)(end - p - 1), n = room < JSON_LONG_STRING ? room : JSON_LONG_STRING;
        size_t r = quote_run(p + 1, n);
        if (r < n && p[1 + r] == '"')
            e = p + 2 + r;
        else if (!(e = span_end(doc, p)))
            e = skip_string(p + 1, end);
    } else if (*p == '{' || *p == '[') {
        if (!(e = span_end(doc, p)))
            e = skip_container(p, end);
    } else
        for (e = p; e < end && is_scalar_byte(*e);)
            e++;
    return (json_value_t){.p = (const char *)p, .len = (size_t)(e - p), .type = type_of(*p), .doc = doc};
}

json_iter_t json_iter(json_value_t v)
{
    json_iter_t it = {0};
    if (v.type == JSON_ARRAY || v.type == JSON_OBJECT) {
        it.p = v.p + 1;
        it.end = v.p + v.len - 1; /* the closing bracket */
        it.object = v.type == JSON_OBJECT;
        it.doc = v.doc;
    }
    return it;
}

bool json_next(json_iter_t *it, json_value_t *key, json_value_t *val)
{
    cur_t p = nav_ws((cur_t)it->p, (cur_t)it->end), end = (cur_t)it->end;
    if (p >= end)
        return false;
    json_value_t k = {0};
    if (it->object) {
        cur_t ke = skip_string(p + 1, end);
        k = (json_value_t){
            .p = (const char *)p, .len = (size_t)(ke - p), .type = JSON_STRING, .doc = it->doc};
        p = nav_ws(nav_ws(ke, end) + 1, end); /* over the ':' */
    }
    *val = value_at(p, end, it->doc);
    p = nav_ws(p + val->len, end);
    it->p = (const char *)(p < end && *p == ',' ? p + 1 : p);
    if (key)
        *key = k;
    return true;
}

size_t json_count(json_value_t v)
{
    size_t n = 0;
    json_value_t e;
    for (json_iter_t it = json_iter(v); json_next(&it, NULL, &e);)
        n++;
    return n;
}

json_value_t json_at(json_value_t arr, size_t i)
{
    json_value_t e;
    if (arr.type != JSON_ARRAY)
        return (json_value_t){0};
    for (json_iter_t it = json_iter(arr); json_next(&it, NULL, &e); i--)
        if (i == 0)
            return e;
    return (json_value_t){0};
}

/* ---- Strings ---------------------------------------------------------------------------------- */

static size_t put_utf8(unsigned char out[4], unsigned long cp)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The escape at p (a backslash, validated) decoded into out; returns the raw bytes it takes and sets
 * *n to the bytes written. A lone surrogate decodes to U+FFFD. */
static size_t unescape(cur_t p, cur_t end, unsigned char out[4], size_t *n)
{
    static const char simple_from[] = "\"\\/bfnrt", simple_to[] = "\"\\/\b\f\n\r\t";
    const char *hit = memchr(simple_from, p[1], sizeof simple_from - 1);
    if (hit) {
        out[0] = (unsigned char)simple_to[hit - simple_from];
        *n = 1;
        return 2;
    }
    unsigned long cp = (unsigned long)json_hex4(p + 2);
    size_t used = 6;
    if (cp >= 0xD800 && cp <= 0xDFFF) {
        long lo = cp <= 0xDBFF && end - p >= 12 && p[6] == '\\' && p[7] == 'u' ? json_hex4(p + 8) : -1;
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
            used = 12;
        } else
            cp = 0xFFFD;
    }
    *n = put_utf8(out, cp);
    return used;
}

/* Decodes raw[0..end) (a string's body) into dst, at most cap bytes; returns the bytes written. */
static size_t decode(cur_t raw, cur_t end, unsigned char *dst, size_t cap)
{
    size_t n = 0;
    while (raw < end && n < cap) {
        cur_t bs = memchr(raw, '\\', (size_t)(end - raw));
        size_t run = (size_t)((bs ? bs : end) - raw);
        if (run > cap - n)
            run = cap - n;
        memcpy(dst + n, raw, run);
        n += run;
        raw += run;
        if (raw != bs || n == cap)
            break;
        unsigned char u[4];
        size_t un;
        raw += unescape(raw, end, u, &un);
        if (un > cap - n)
            un = cap - n;
        memcpy(dst + n, u, un);
        n += un;
    }
    return n;
}

/* Whether the string body raw[0..end) decodes to key[0..klen): byte for byte up to the first escape,
 * decoding from there. */
static bool body_eq(cur_t raw, cur_t end, const char *key, size_t klen)
{
    cur_t k = (cur_t)key, kend = k + klen;
    for (; raw < end && *raw != '\\'; raw++, k++)
        if (k == kend || *raw != *k)
            return false;
    while (raw < end) {
        unsigned char u[4];
        size_t un = 1;
        if (*raw == '\\')
            raw += unescape(raw, end, u, &un);
        else
            u[0] = *raw++;
        if ((size_t)(kend - k) < un || memcmp(k, u, un) != 0)
            return false;
        k += un;
    }
    return k == kend;
}

/* body_eq for a NUL-terminated key, without its strlen: most keys differ in their first bytes. */
static bool key_eq(cur_t raw, cur_t end, const char *key)
{
    cur_t k = (cur_t)key;
    for (; raw < end && *raw != '\\'; raw++, k++)
        if (*k != *raw) /* also at the key's NUL: a validated string holds none */
            return false;
    return raw == end ? *k == '\0' : body_eq(raw, end, (const char *)k, strlen((const char *)k));
}

size_t json_str_prefix(json_value_t s, char *dst, size_t cap)
{
    if (s.type != JSON_STRING)
        return 0;
    return decode((cur_t)s.p + 1, (cur_t)s.p + s.len - 1, (unsigned char *)dst, cap);
}

size_t json_str_decode(json_value_t s, char *dst) { return json_str_prefix(s, dst, s.len); }

size_t json_str_len(json_value_t s)
{
    if (s.type != JSON_STRING)
        return 0;
    cur_t raw = (cur_t)s.p + 1, end = (cur_t)s.p + s.len - 1;
    size_t n = 0;
    for (;;) {
        cur_t bs = memchr(raw, '\\', (size_t)(end - raw));
        if (!bs)
            return n + (size_t)(end - raw);
        unsigned char u[4];
        size_t un;
        n += (size_t)(bs - raw);
        raw = bs + unescape(bs, end, u, &un);
        n += un;
    }
}

char *json_str_dup(json_value_t s, size_t *len)
{
    if (s.type != JSON_STRING)
        return NULL;
    char *d = base_malloc(s.len - 1); /* the body (len - 2) and the NUL */
    if (!d)
        return NULL;
    size_t n = json_str_decode(s, d);
    d[n] = '\0';
    if (len)
        *len = n;
    return d;
}

bool json_str_eq(json_value_t s, const char *lit)
{
    return s.type == JSON_STRING && body_eq((cur_t)s.p + 1, (cur_t)s.p + s.len - 1, lit, strlen(lit));
}

/* The first member of obj whose key decodes to key (klen bytes, or NUL-terminated when klen is SIZE_MAX). */
static json_value_t member(json_value_t obj, const char *key, size_t klen)
{
    json_value_t k, v;
    if (obj.type != JSON_OBJECT)
        return (json_value_t){0};
    for (json_iter_t it = json_iter(obj); json_next(&it, &k, &v);) {
        cur_t raw = (cur_t)k.p + 1, end = (cur_t)k.p + k.len - 1;
        if (klen == SIZE_MAX ? key_eq(raw, end, key) : body_eq(raw, end, key, klen))
            return v;
    }
    return (json_value_t){0};
}

json_value_t json_getn(json_value_t obj, const char *key, size_t klen) { return member(obj, key, klen); }

json_value_t json_get(json_value_t obj, const char *key) { return member(obj, key, SIZE_MAX); }

void json_get_many(json_value_t obj, const char *const *keys, size_t n, json_value_t *out)
{
    size_t left = n = n < JSON_GET_MANY_MAX ? n : JSON_GET_MANY_MAX;
    json_value_t k, v;
    for (size_t i = 0; i < n; i++)
        out[i] = (json_value_t){0};
    if (obj.type != JSON_OBJECT)
        return;
    for (json_iter_t it = json_iter(obj); left > 0 && json_next(&it, &k, &v);) {
        for (size_t i = 0; i < n; i++) {
            cur_t raw = (cur_t)k.p + 1, end = (cur_t)k.p + k.len - 1;
            if (out[i].type == JSON_NONE && key_may_be(raw, end, keys[i]) && key_eq(raw, end, keys[i])) {
                out[i] = v;
                left--;
                break;
            }
        }
    }
}

/* ---- Numbers ---------------------------------------------------------------------------------- */

/* strtod of a long number (validated): its significant digits cut to JSON_SIG_MAX, plus a sticky 1
 * when a nonzero digit was cut, written as 0.<digits>e<exponent> so that it rounds the same. */
static double long_double(cur_t p, cur_t end)
{
    char buf[JSON_SIG_MAX + 48];
    size_t n = 0, sig = 0;
    int64_t point = 0, exp10 = 0; /* point: digits before the decimal point, counted from the first
                                     significant one */
    bool seen = false, sticky = false, in_frac = false, neg = *p == '-';
    if (neg)
        p++;
    buf[n++] = '0';
    buf[n++] = '.';
    for (; p < end && (is_digit(*p) || *p == '.'); p++) {
        if (*p == '.') {
            in_frac = true;
            continue;
        }
        if (!seen && *p == '0') {
            point -= in_frac; /* a leading zero after the point shifts the first digit right */
            continue;
        }
        seen = true;
        point += !in_frac;
        if (sig < JSON_SIG_MAX) {
            buf[n++] = (char)*p;
            sig++;
        } else if (*p != '0')
            sticky = true;
    }
    if (!seen)
        return neg ? -0.0 : 0.0;
    if (sticky)
        buf[n++] = '1';
    if (p < end) { /* the exponent, saturated: anything past ±10^6 is 0 or infinity anyway */
        bool eneg = *++p == '-';
        if (*p == '-' || *p == '+')
            p++;
        for (; p < end; p++)
            if (exp10 < 10000000)
                exp10 = exp10 * 10 + (*p - '0');
        if (eneg)
            exp10 = -exp10;
    }
    int64_t e = point + exp10;
    if (e > 10000000)
        e = 10000000;
    if (e < -10000000)
        e = -10000000;
    snprintf(buf + n, sizeof buf - n, "e%lld", (long long)e);
    double d = strtod(buf, NULL);
    return neg ? -d : d;
}

/* Integer syntax of at most 15 digits (exact in a double: no strtod needed). */
static bool small_int(cur_t p, size_t n, double *out)
{
    bool neg = *p == '-';
    if (n - neg > 15)
        return false;
    int64_t x = 0;
    for (size_t i = neg; i < n; i++) {
        if (!is_digit(p[i]))
            return false;
        x = x * 10 + (p[i] - '0');
    }
    *out = neg ? -(double)x : (double)x;
    return true;
}

int json_double(json_value_t v, double *out)
{
    if (v.type != JSON_NUMBER)
        return -1;
    if (small_int((cur_t)v.p, v.len, out))
        return 0;
    if (v.len >= JSON_SHORT_NUM) {
        *out = long_double((cur_t)v.p, (cur_t)v.p + v.len);
        return 0;
    }
    char buf[JSON_SHORT_NUM];
    memcpy(buf, v.p, v.len);
    buf[v.len] = '\0';
    *out = strtod(buf, NULL);
    return 0;
}

int json_int(json_value_t v, int64_t min, int64_t max, int64_t *out)
{
    if (v.type != JSON_NUMBER)
        return -1;
    cur_t p = (cur_t)v.p, end = p + v.len;
    bool neg = *p == '-';
    uint64_t mag = 0;
    bool over = false;
    for (p += neg; p < end && is_digit(*p); p++) {
        unsigned d = *p - '0';
        over |= mag > (UINT64_MAX - d) / 10;
        mag = mag * 10 + d;
    }
    int64_t x;
    if (p == end) { /* integer syntax: exact */
        if (over || mag > (uint64_t)INT64_MAX + neg)
            return -1;
        x = neg && mag ? -(int64_t)(mag - 1) - 1 : (int64_t)mag;
    } else {
        double d;
        json_double(v, &d);
        if (!(fabs(d) <= 9007199254740992.0) || d != floor(d))
            return -1;
        x = (int64_t)d;
    }
    if (x < min || x > max)
        return -1;
    *out = x;
    return 0;
}

/* fuzz_json.c — libFuzzer target: arbitrary bytes through json_parse, differential against cJSON 1.7.
 * Input: the document. Oracle: no crash, leak or UB; json_parse and cJSON agree on accept/reject but
 * for the documented differences, each detected on the raw bytes: cJSON also takes a leading BOM,
 * control bytes between tokens and in strings, \u with non-hex digits, numbers that strtod takes and
 * RFC 8259 does not (01, 1., -.5); it rejects lone surrogates (U+FFFD here); NUL bytes and nesting
 * deeper than JSON_MAX_DEPTH must be rejected here.
 * For documents both accept, both are walked: types, member order, keys, first-match lookup, string
 * values (cJSON's end at their first NUL), numbers bit for bit, array sizes and elements by index;
 * every value's raw span must parse alone to the same type, and long numbers round as strtod does.
 * Build: clang -fsanitize=fuzzer,address,undefined -Iinternal tests/fuzz/fuzz_json.c plus the .c files
 *        of internal/json and internal/base, -lcjson */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json/json.h"

#define CHECK(c)                                                                                             \
    do {                                                                                                     \
        if (!(c))                                                                                            \
            __builtin_trap();                                                                                \
    } while (0)

static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static bool is_num_char(uint8_t c)
{
    return is_digit(c) || c == '+' || c == '-' || c == '.' || (c | 0x20) == 'e';
}
static int hex(uint8_t c)
{
    if (is_digit(c))
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The 4 hex digits at d[i..i+4) as a code unit, or -1. */
static long hex4(const uint8_t *d, size_t n, size_t i)
{
    long v = 0;
    for (size_t k = i; k < i + 4; k++) {
        if (k >= n || hex(d[k]) < 0)
            return -1;
        v = v << 4 | hex(d[k]);
    }
    return v;
}

/* Length of the longest prefix of d[0..n) that is an RFC 8259 number (0 when none). */
static size_t rfc_number(const uint8_t *d, size_t n)
{
    size_t i = 0, ok = 0;
    if (i < n && d[i] == '-')
        i++;
    if (i == n || !is_digit(d[i]))
        return 0;
    if (d[i++] != '0')
        while (i < n && is_digit(d[i]))
            i++;
    ok = i;
    if (i + 1 < n && d[i] == '.' && is_digit(d[i + 1])) {
        for (i += 1; i < n && is_digit(d[i]);)
            i++;
        ok = i;
    }
    if (i < n && (d[i] | 0x20) == 'e') {
        size_t j = i + 1;
        if (j < n && (d[j] == '+' || d[j] == '-'))
            j++;
        if (j < n && is_digit(d[j])) {
            while (j < n && is_digit(d[j]))
                j++;
            ok = j;
        }
    }
    return ok;
}

typedef struct {
    bool nul, lax, lone;
    int depth;
} traits_t;

/* The differences that matter, read off the raw bytes with cJSON's own string scan (a backslash takes
 * the next byte). */
static traits_t traits_of(const uint8_t *d, size_t n)
{
    traits_t t = {.nul = memchr(d, 0, n) != NULL, .lax = n >= 3 && !memcmp(d, "\xEF\xBB\xBF", 3)};
    bool in_str = false;
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = d[i];
        if (in_str) {
            if (c == '"')
                in_str = false;
            else if (c < 0x20)
                t.lax = true;
            else if (c == '\\' && i + 1 < n && d[i + 1] == 'u') {
                long u = hex4(d, n, i + 2);
                if (u < 0)
                    t.lax = true; /* cJSON reads it as U+0000 */
                else if (u >= 0xD800 && u <= 0xDBFF && i + 7 < n && d[i + 6] == '\\' && d[i + 7] == 'u' &&
                         hex4(d, n, i + 8) >= 0xDC00 && hex4(d, n, i + 8) <= 0xDFFF)
                    i += 6; /* a pair */
                else if (u >= 0xD800 && u <= 0xDFFF)
                    t.lone = true;
                i++;
            } else if (c == '\\')
                i++;
            continue;
        }
        if (c == '"')
            in_str = true;
        else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            t.lax = true; /* cJSON skips every byte <= 0x20 as whitespace */
        else if (c == '[' || c == '{') {
            if (++depth > t.depth)
                t.depth = depth;
        } else if (c == ']' || c == '}')
            depth--;
        else if ((c == '-' || is_digit(c)) && (i == 0 || !is_num_char(d[i - 1]))) {
            size_t run = 0;
            while (i + run < n && is_num_char(d[i + run]))
                run++;
            char *buf = malloc(run + 1), *end;
            CHECK(buf);
            memcpy(buf, d + i, run);
            buf[run] = '\0';
            strtod(buf, &end);
            if ((size_t)(end - buf) != rfc_number(d + i, run))
                t.lax = true;
            free(buf);
            i += run - 1;
        }
    }
    return t;
}

/* s decoded, cut at its first NUL as cJSON's strings are; NULL when out of memory. */
static char *decoded(json_value_t s, size_t *len)
{
    char *d = json_str_dup(s, len);
    if (d)
        *len = strlen(d);
    return d;
}

static void same_string(json_value_t s, const char *c)
{
    size_t n;
    char *d = decoded(s, &n);
    CHECK(d);
    CHECK(n == strlen(c) && !memcmp(d, c, n));
    /* the other decoders agree with json_str_dup */
    size_t full;
    char *whole = json_str_dup(s, &full), *buf = malloc(s.len);
    CHECK(whole && buf);
    CHECK(json_str_decode(s, buf) == full && !memcmp(buf, whole, full));
    size_t cap = full / 2;
    CHECK(json_str_prefix(s, buf, cap) == cap && !memcmp(buf, whole, cap));
    if (!memchr(whole, '\0', full))
        CHECK(json_str_eq(s, whole));
    free(whole);
    free(buf);
    free(d);
}

/* Every value's raw span (looked up in the json_doc_t) is a document of its own, of the same type and
 * length (found by scanning, without a json_doc_t). */
static void span_parses(json_value_t v)
{
    json_value_t again;
    CHECK(json_parse(v.p, v.len, NULL, &again, NULL) == 0);
    CHECK(again.type == v.type && again.len == v.len);
}

static void same_number(json_value_t v, double want)
{
    double d;
    CHECK(json_double(v, &d) == 0);
    CHECK(!memcmp(&d, &want, sizeof d));
}

static void walk(json_value_t v, const cJSON *c)
{
    span_parses(v);
    switch (v.type) {
    case JSON_NULL:
        CHECK(cJSON_IsNull(c));
        return;
    case JSON_FALSE:
        CHECK(cJSON_IsFalse(c));
        return;
    case JSON_TRUE:
        CHECK(cJSON_IsTrue(c));
        return;
    case JSON_NUMBER:
        CHECK(cJSON_IsNumber(c));
        same_number(v, c->valuedouble);
        return;
    case JSON_STRING:
        CHECK(cJSON_IsString(c));
        same_string(v, c->valuestring);
        return;
    case JSON_ARRAY: {
        CHECK(cJSON_IsArray(c));
        CHECK(json_count(v) == (size_t)cJSON_GetArraySize(c));
        json_value_t e;
        const cJSON *ce = c->child;
        size_t i = 0;
        for (json_iter_t it = json_iter(v); json_next(&it, NULL, &e); i++, ce = ce->next) {
            CHECK(ce);
            walk(e, ce);
            json_value_t at = json_at(v, i);
            CHECK(at.p == e.p && at.len == e.len);
        }
        CHECK(!ce);
        return;
    }
    case JSON_OBJECT: {
        CHECK(cJSON_IsObject(c));
        json_value_t k, e;
        const cJSON *ce = c->child;
        bool nul_key = false;
        for (json_iter_t it = json_iter(v); json_next(&it, &k, &e); ce = ce->next) {
            CHECK(ce && ce->string);
            same_string(k, ce->string);
            size_t n, full;
            char *kd = decoded(k, &n), *kw = json_str_dup(k, &full);
            CHECK(kd && kw);
            nul_key |= n != full;
            free(kd);
            free(kw);
            walk(e, ce);
        }
        CHECK(!ce);
        if (nul_key)
            return;                              /* cJSON matches "a\u0000b" for "a": lookups differ there */
        for (ce = c->child; ce; ce = ce->next) { /* the same member, by its position */
            json_value_t got = json_get(v, ce->string);
            const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, ce->string);
            size_t gi = 0, wi = 0;
            for (json_iter_t it = json_iter(v); json_next(&it, NULL, &e) && e.p != got.p;)
                gi++;
            for (const cJSON *w = c->child; w && w != want; w = w->next)
                wi++;
            CHECK(got.type != JSON_NONE && want && gi == wi);
        }
        return;
    }
    case JSON_NONE:
        break;
    }
    CHECK(0);
}

/* Checks of ours alone: numbers against strtod on the whole text, json_int against json_double. */
static void self_walk(json_value_t v)
{
    json_value_t e;
    if (v.type == JSON_NUMBER) {
        char *copy = malloc(v.len + 1);
        CHECK(copy);
        memcpy(copy, v.p, v.len);
        copy[v.len] = '\0';
        same_number(v, strtod(copy, NULL));
        free(copy);
        double d;
        int64_t x;
        json_double(v, &d);
        if (json_int(v, INT64_MIN, INT64_MAX, &x) == 0 && d > -9e15 && d < 9e15)
            CHECK((double)x == d);
    }
    for (json_iter_t it = json_iter(v); json_next(&it, NULL, &e);)
        self_walk(e);
}

/* json_parse_get finds what json_get_many finds, for the root's own first keys and one absent key. */
static void same_lookup(const uint8_t *in, size_t size, json_value_t root)
{
    const char *keys[4] = {"\x01"
                           "absent"};
    char *owned[4] = {0};
    size_t n = 1;
    json_value_t k, v, got[4], want[4];
    for (json_iter_t it = json_iter(root); root.type == JSON_OBJECT && n < 4 && json_next(&it, &k, &v); n++) {
        size_t len;
        owned[n] = json_str_dup(k, &len);
        CHECK(owned[n]);
        keys[n] = owned[n];
    }
    json_doc_t doc;
    json_value_t again;
    CHECK(json_parse_get((const char *)in, size, &doc, &again, keys, n, got, NULL) == 0);
    json_get_many(root, keys, n, want);
    for (size_t i = 0; i < n; i++)
        CHECK(got[i].type == want[i].type && got[i].p == want[i].p && got[i].len == want[i].len);
    for (size_t i = 0; i < n; i++)
        free(owned[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    json_doc_t doc;
    json_value_t root;
    json_err_t err;
    int rc = json_parse((const char *)in, size, &doc, &root, &err);
    traits_t t = traits_of(in, size);
    if (rc != 0)
        CHECK(err.msg && err.offset <= size && root.type == JSON_NONE);
    if (t.nul || t.depth > JSON_MAX_DEPTH) {
        CHECK(rc != 0);
        return 0;
    }
    if (rc == 0) {
        self_walk(root);
        same_lookup(in, size, root);
    }
    const char *end = NULL;
    cJSON *c = cJSON_ParseWithLengthOpts((const char *)in, size, &end, 0);
    bool c_ok = c != NULL;
    for (const char *p = end; c_ok && p < (const char *)in + size; p++) /* one value, then whitespace */
        c_ok = *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r';
    if (rc == 0 && !c_ok)
        CHECK(t.lone);
    else if (rc != 0 && c_ok)
        CHECK(t.lax);
    else if (rc == 0)
        walk(root, c);
    cJSON_Delete(c);
    return 0;
}

/* test_json.c — the in-place JSON reader: what validation accepts and rejects (RFC 8259, depth,
 * escapes, control bytes, numbers, trailing bytes, NUL), lookup and iteration, string decoding with
 * escapes and surrogates (a lone one → U+FFFD), and number edges. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"
#include "json/json.h"

static json_value_t parse_ok(const char *doc)
{
    json_value_t root;
    json_err_t err = {0};
    int rc = json_parse(doc, strlen(doc), NULL, &root, &err);
    if (rc != 0)
        fail_msg("rejected %s: %s at %zu", doc, err.msg, err.offset);
    return root;
}

static void accepts_valid_documents(void **state)
{
    static const char *const ok[] = {
        "{}",
        "[]",
        " \t\r\n{} \t\r\n",
        "0",
        "-0",
        "1.5e+10",
        "-12.25E-3",
        "1e5",
        "\"\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"",
        "\"\\ud800\"", /* a lone surrogate: accepted, decoded to U+FFFD */
        "true",
        "false",
        "null",
        "[1,\"a\",{\"b\":[null,true,false]},[]]",
        "{\"a\":{\"b\":{\"c\":[1,2,{}]}},\"a\":2}",
        "\"caf\xC3\xA9 \xFF\xFE\"", /* bytes >= 0x80 pass unchecked */
        "{ \"k\" : [ 1 , 2 ] , \"l\" : { } }",
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(ok); i++)
        parse_ok(ok[i]);
}

static void rejects_invalid_documents(void **state)
{
    static const struct {
        const char *doc;
        size_t at; /* offset of the offending byte */
    } bad[] = {
        {"", 0},
        {"   ", 3},
        {"{", 1},
        {"[1,]", 3},
        {"{\"a\":1,}", 7},
        {"{\"a\" 1}", 5},
        {"{a:1}", 1},
        {"[1 2]", 3},
        {"{} {}", 3},
        {"1 x", 2},
        {"\"abc", 4},
        {"\"a\\x\"", 2},
        {"\"a\\u12G4\"", 2},
        {"\"a\\u12\"", 2},
        {"\"tab\there\"", 4},
        {"\"nl\nhere\"", 3},
        {"01", 1},
        {"-", 1},
        {"1.", 2},
        {".5", 0},
        {"-.5", 1},
        {"1e", 2},
        {"1e+", 3},
        {"+1", 0},
        {"0x10", 1},
        {"1.5.3", 3},
        {"tru", 0},
        {"nul", 0},
        {"True", 0},
        {"NaN", 0},
        {"Infinity", 0},
        {"\xEF\xBB\xBF{}", 0},
        {"[\"a\"]]", 5},
        {"{\"a\":1]", 6},
        {"[1}", 2},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        json_value_t root = {.type = JSON_TRUE};
        json_err_t err = {0};
        if (json_parse(bad[i].doc, strlen(bad[i].doc), NULL, &root, &err) != -1)
            fail_msg("accepted %s", bad[i].doc);
        assert_int_equal(root.type, JSON_NONE);
        assert_non_null(err.msg);
        if (err.offset != bad[i].at)
            fail_msg("%s: error at %zu (%s), expected %zu", bad[i].doc, err.offset, err.msg, bad[i].at);
    }
    json_value_t root;
    assert_int_equal(json_parse(NULL, 0, NULL, &root, NULL), -1);
    assert_int_equal(json_parse("{}\0", 3, NULL, &root, NULL), -1);        /* a NUL after the value */
    assert_int_equal(json_parse("[\"a\0b\"]", 7, NULL, &root, NULL), -1);  /* a NUL in a string */
    assert_int_equal(json_parse("{\"a\":1}", 6, NULL, &root, NULL), -1);   /* cut: the length rules */
    assert_int_equal(json_parse("{\"a\":1}xyz", 7, NULL, &root, NULL), 0); /* bytes past len are not read */
}

/* "[[...[1]...]]" nested depth deep. */
static char *nested(int depth)
{
    char *d = malloc((size_t)depth * 2 + 2);
    assert_non_null(d);
    memset(d, '[', (size_t)depth);
    d[depth] = '1';
    memset(d + depth + 1, ']', (size_t)depth);
    d[depth * 2 + 1] = '\0';
    return d;
}

static void depth_is_bounded(void **state)
{
    char *ok = nested(JSON_MAX_DEPTH), *deep = nested(JSON_MAX_DEPTH + 1);
    json_value_t root;
    json_err_t err;
    assert_int_equal(json_parse(ok, strlen(ok), NULL, &root, NULL), 0);
    assert_int_equal(root.type, JSON_ARRAY);
    assert_int_equal(json_parse(deep, strlen(deep), NULL, &root, &err), -1);
    assert_int_equal(err.offset, JSON_MAX_DEPTH);
    free(ok);
    free(deep);
    /* objects count as well, and closing a container frees its level */
    buf_t b;
    buf_init(&b, 0);
    for (int i = 0; i < JSON_MAX_DEPTH; i++)
        assert_int_equal(buf_append_str(&b, "{\"k\":"), 0);
    assert_int_equal(buf_append_str(&b, "[]"), 0);
    for (int i = 0; i < JSON_MAX_DEPTH; i++)
        assert_int_equal(buf_append_str(&b, "}"), 0);
    assert_int_equal(json_parse(b.data, b.len, NULL, &root, NULL), -1);
    buf_reset(&b);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_append_str(&b, i ? ",[[]]" : "[[[]]"), 0);
    assert_int_equal(buf_append_str(&b, "]"), 0);
    assert_int_equal(json_parse(b.data, b.len, NULL, &root, NULL), 0);
    assert_int_equal(json_count(root), 1000);
    buf_free(&b);
}

static void lookup_and_iteration(void **state)
{
    const char *doc = "{ \"id\" : \"x\", \"n\": 3, \"list\": [10, \"s\", {\"k\": null}, [1, [2]]], "
                      "\"obj\": {\"a\": true, \"b\": false}, \"id\": \"second\", \"t\\u0061b\": 1, "
                      "\"ID\": 0, \"\": \"empty\" }";
    json_value_t root = parse_ok(doc);
    assert_int_equal(root.type, JSON_OBJECT);
    assert_int_equal(root.len, strlen(doc));
    assert_int_equal(json_count(root), 8);

    json_value_t id = json_get(root, "id");
    assert_int_equal(id.type, JSON_STRING);
    assert_true(json_str_eq(id, "x")); /* the first of duplicate keys */
    assert_int_equal(id.len, 3);
    assert_memory_equal(id.p, "\"x\"", 3);
    assert_true(json_str_eq(json_get(root, "ID"), "x") == false);  /* case-sensitive */
    assert_int_equal(json_get(root, "tab").type, JSON_NUMBER);     /* compared unescaped */
    assert_int_equal(json_get(root, "t\\u0061b").type, JSON_NONE); /* not raw */
    assert_true(json_str_eq(json_get(root, ""), "empty"));
    assert_int_equal(json_get(root, "missing").type, JSON_NONE);
    assert_int_equal(json_getn(root, "idx", 2).type, JSON_STRING);

    json_value_t list = json_get(root, "list");
    assert_int_equal(list.type, JSON_ARRAY);
    assert_int_equal(list.len, strlen("[10, \"s\", {\"k\": null}, [1, [2]]]"));
    assert_int_equal(json_count(list), 4);
    assert_int_equal(json_at(list, 0).type, JSON_NUMBER);
    assert_true(json_str_eq(json_at(list, 1), "s"));
    assert_int_equal(json_get(json_at(list, 2), "k").type, JSON_NULL);
    assert_int_equal(json_at(json_at(json_at(list, 3), 1), 0).len, 1);
    assert_int_equal(json_at(list, 4).type, JSON_NONE);
    assert_int_equal(json_at(root, 0).type, JSON_NONE);    /* not an array */
    assert_int_equal(json_get(list, "k").type, JSON_NONE); /* not an object */
    assert_int_equal(json_get(json_get(root, "nope"), "k").type, JSON_NONE);
    assert_int_equal(json_count(json_get(root, "n")), 0);

    static const char *const keys[] = {"obj", "zzz", "n", "id"};
    json_value_t many[4];
    json_get_many(root, keys, 4, many);
    assert_int_equal(many[0].type, JSON_OBJECT);
    assert_int_equal(many[1].type, JSON_NONE);
    assert_int_equal(many[2].type, JSON_NUMBER);
    assert_true(json_str_eq(many[3], "x"));

    /* members in order, keys as strings */
    static const char *const names[] = {"id", "n", "list", "obj", "id", "tab", "ID", ""};
    json_value_t k, v;
    size_t i = 0;
    for (json_iter_t it = json_iter(root); json_next(&it, &k, &v); i++) {
        assert_true(i < BASE_ARRAY_LEN(names));
        assert_int_equal(k.type, JSON_STRING);
        assert_true(json_str_eq(k, names[i]));
    }
    assert_int_equal(i, BASE_ARRAY_LEN(names));
    static const json_type_t types[] = {JSON_TRUE, JSON_FALSE};
    i = 0;
    for (json_iter_t it = json_iter(json_get(root, "obj")); json_next(&it, NULL, &v); i++)
        assert_int_equal(v.type, types[i]);
    assert_int_equal(i, 2);
    json_iter_t it = json_iter(json_get(root, "n")); /* not a container: empty */
    assert_false(json_next(&it, &k, &v));
    it = json_iter(parse_ok("[ ]"));
    assert_false(json_next(&it, &k, &v));
    it = json_iter(parse_ok("[7]"));
    assert_true(json_next(&it, &k, &v));
    assert_int_equal(k.type, JSON_NONE);
    assert_int_equal(v.len, 1);
}

/* s decoded by json_str_decode, json_str_dup and json_str_prefix (every cap) must agree with want. */
static void check_decode(const char *doc, const char *want, size_t want_len)
{
    json_value_t s = parse_ok(doc);
    assert_int_equal(s.type, JSON_STRING);
    char *dst = malloc(s.len);
    assert_non_null(dst);
    assert_int_equal(json_str_decode(s, dst), want_len);
    assert_int_equal(json_str_len(s), want_len);
    assert_memory_equal(dst, want, want_len);
    size_t n;
    char *dup = json_str_dup(s, &n);
    assert_non_null(dup);
    assert_int_equal(n, want_len);
    assert_memory_equal(dup, want, want_len);
    assert_int_equal(dup[n], '\0');
    for (size_t cap = 0; cap <= want_len + 1; cap++) {
        memset(dst, 'X', s.len);
        size_t got = json_str_prefix(s, dst, cap);
        assert_int_equal(got, cap < want_len ? cap : want_len);
        assert_memory_equal(dst, want, got);
        if (got < s.len)
            assert_int_equal(dst[got], 'X'); /* nothing written past cap */
    }
    if (!memchr(want, '\0', want_len))
        assert_true(json_str_eq(s, want));
    free(dup);
    free(dst);
}

static void escapes_and_surrogates(void **state)
{
    check_decode("\"plain text\"", "plain text", 10);
    check_decode("\"\"", "", 0);
    check_decode("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8);
    check_decode("\"\\u0041\\u00e9\\u20AC\"", "A\xC3\xA9\xE2\x82\xAC", 6);
    check_decode("\"\\uD83D\\uDE00!\"", "\xF0\x9F\x98\x80!", 5); /* a pair joined */
    check_decode("\"\\uDBFF\\uDFFF\"", "\xF4\x8F\xBF\xBF", 4);   /* U+10FFFF */
    check_decode("\"a\\uD800b\"",
                 "a\xEF\xBF\xBD"
                 "b",
                 5); /* lone high */
    check_decode("\"a\\uDC00b\"",
                 "a\xEF\xBF\xBD"
                 "b",
                 5);                                                              /* lone low */
    check_decode("\"\\uD800\\uD800\\uDC00\"", "\xEF\xBF\xBD\xF0\x90\x80\x80", 7); /* high, then a pair */
    check_decode("\"\\uD800\\n\"", "\xEF\xBF\xBD\n", 4);               /* high, then another escape */
    check_decode("\"\\uDE00\\uD83D\"", "\xEF\xBF\xBD\xEF\xBF\xBD", 6); /* a pair in the wrong order */
    check_decode("\"x\\u0000y\"", "x\0y", 3);                          /* NUL kept, length rules */
    check_decode("\"\xE6\x97\xA5\xFF\"", "\xE6\x97\xA5\xFF", 4);       /* raw bytes untouched */

    json_value_t s = parse_ok("\"caf\\u00e9\"");
    assert_true(json_str_eq(s, "caf\xC3\xA9"));
    assert_false(json_str_eq(s, "caf"));
    assert_false(json_str_eq(s, "caf\\u00e9"));
    assert_false(json_str_eq(parse_ok("1"), "1"));
    assert_null(json_str_dup(parse_ok("[]"), NULL));
    char d[4];
    assert_int_equal(json_str_decode(parse_ok("true"), d), 0);
    assert_int_equal(json_str_len(parse_ok("[\"a\"]")), 0);
    base_alloc_fail_after(1);
    assert_null(json_str_dup(s, NULL));
    base_alloc_fail_after(0);
}

static void number_edges(void **state)
{
    static const struct {
        const char *doc;
        double want;
    } nums[] = {
        {"0", 0},
        {"-0", -0.0},
        {"123456789012345", 123456789012345.0},
        {"9007199254740993", 9007199254740992.0}, /* rounds to nearest even */
        {"1.5", 1.5},
        {"-2.5e-3", -2.5e-3},
        {"1E2", 100},
        {"1e+2", 100},
        {"0.1", 0.1},
        {"1e400", HUGE_VAL},
        {"-1e400", -HUGE_VAL},
        {"1e-400", 0},
        {"2.2250738585072014e-308", 2.2250738585072014e-308},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(nums); i++) {
        double d = -1;
        assert_int_equal(json_double(parse_ok(nums[i].doc), &d), 0);
        if (memcmp(&d, &nums[i].want, sizeof d))
            fail_msg("%s gave %.17g, expected %.17g", nums[i].doc, d, nums[i].want);
    }
    double d;
    assert_int_equal(json_double(parse_ok("\"1\""), &d), -1);
    assert_int_equal(json_double(parse_ok("null"), &d), -1);

    /* long numbers (past the stack copy) round as strtod does on the whole text */
    static const char *const longs[] = {
        "3."
        "1415926535897932384626433832795028841971693993751058209749445923078164062862089986280348253421170679"
        "8",
        "0.000000000000000000000000000000000000000000000000000000000000000000000000000000001234567890123",
        "-123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890e-50",
        "100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "0.0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000e5",
        "1.00000000000000011102230246251565404236316680908203125000000000000000000000000000000000000000001",
        "1.00000000000000011102230246251565404236316680908203125000000000000000000000000000000000000000000",
        "123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890e999999999"
        "99",
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(longs); i++) {
        double want = strtod(longs[i], NULL);
        assert_int_equal(json_double(parse_ok(longs[i]), &d), 0);
        if (memcmp(&d, &want, sizeof d))
            fail_msg("%s gave %.17g, strtod %.17g", longs[i], d, want);
    }
    /* 1200 digits: the cut keeps the rounding (a sticky digit stands for the rest) */
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_append_str(&b, "1.00000000000000011102230246251565404236316680908203125"), 0);
    for (int i = 0; i < 1200; i++)
        assert_int_equal(buf_append_str(&b, i == 1199 ? "1" : "0"), 0);
    double want = strtod(b.data, NULL);
    assert_int_equal(json_double(parse_ok(b.data), &d), 0);
    assert_true(d == want);
    assert_true(d > 1.0); /* past the halfway point, so not rounded down to 1 */
    buf_free(&b);

    int64_t x;
    assert_int_equal(json_int(parse_ok("42"), 0, 100, &x), 0);
    assert_int_equal(x, 42);
    assert_int_equal(json_int(parse_ok("-0"), 0, 0, &x), 0);
    assert_int_equal(x, 0);
    assert_int_equal(json_int(parse_ok("9223372036854775807"), INT64_MIN, INT64_MAX, &x), 0);
    assert_true(x == INT64_MAX);
    assert_int_equal(json_int(parse_ok("-9223372036854775808"), INT64_MIN, INT64_MAX, &x), 0);
    assert_true(x == INT64_MIN);
    assert_int_equal(json_int(parse_ok("9223372036854775808"), INT64_MIN, INT64_MAX, &x), -1);
    assert_int_equal(json_int(parse_ok("-9223372036854775809"), INT64_MIN, INT64_MAX, &x), -1);
    assert_int_equal(json_int(parse_ok("99999999999999999999999"), INT64_MIN, INT64_MAX, &x), -1);
    assert_int_equal(json_int(parse_ok("101"), 0, 100, &x), -1);
    assert_int_equal(json_int(parse_ok("-1"), 0, 100, &x), -1);
    assert_int_equal(json_int(parse_ok("1e3"), 0, 1000, &x), 0);
    assert_int_equal(x, 1000);
    assert_int_equal(json_int(parse_ok("25.0"), 0, 100, &x), 0);
    assert_int_equal(x, 25);
    assert_int_equal(json_int(parse_ok("2.5"), 0, 100, &x), -1);
    assert_int_equal(json_int(parse_ok("1e300"), INT64_MIN, INT64_MAX, &x), -1);
    assert_int_equal(json_int(parse_ok("\"7\""), 0, 100, &x), -1);
}

/* Scanning uses 16-byte blocks: strings, escapes and brackets at every offset around the block edges
 * must skip the same. */
static void skipping_at_every_offset(void **state)
{
    static const char dots[] = "........................................";
    char doc[256], arr[64];
    for (int pad = 0; pad < 40; pad++) {
        for (int esc = 0; esc < 3; esc++) {
            static const char *const strs[] = {"ab", "\\\"]\\\\", "\\\\"};
            int an = snprintf(arr, sizeof arr, "[\"%s]}\",{\"x\":\"[{\"},[[]]]", strs[esc]);
            int n = snprintf(doc, sizeof doc, "{\"%.*s\":%s,\"after\":%d}", pad, dots, arr, pad);
            json_value_t root = parse_ok(doc);
            assert_int_equal(root.len, (size_t)n);
            json_value_t a = json_getn(root, dots, (size_t)pad);
            assert_int_equal(a.type, JSON_ARRAY);
            assert_int_equal(a.len, (size_t)an);
            assert_int_equal(json_count(a), 3);
            assert_true(json_str_eq(json_get(json_at(a, 1), "x"), "[{"));
            int64_t x;
            assert_int_equal(json_int(json_get(root, "after"), 0, 100, &x), 0);
            assert_int_equal(x, pad);
        }
    }
}

/* The same navigation with a json_doc_t (spans looked up) as without (spans scanned), also when the
 * document has more containers than it keeps; json_parse_get finds root members on the way. */
static void doc_spans_match_scanning(void **state)
{
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(
        buf_append_str(&b, "{\"long\":\"0123456789012345678901234567890123456789012345678901\","), 0);
    for (int i = 0; i < JSON_SPANS + 10; i++)
        assert_int_equal(buf_printf(&b, "\"k%d\":[{\"s\":\"%060d\"},[%d]],", i, i, i), 0);
    assert_int_equal(buf_append_str(&b, "\"last\":{\"x\":[]}}"), 0);
    static json_doc_t doc;
    json_value_t with, without;
    assert_int_equal(json_parse(b.data, b.len, &doc, &with, NULL), 0);
    assert_int_equal(doc.n, JSON_SPANS);
    assert_int_equal(json_parse(b.data, b.len, NULL, &without, NULL), 0);
    assert_ptr_equal(with.doc, &doc);
    assert_null(without.doc);
    assert_int_equal(json_count(with), json_count(without));
    json_value_t k1, v1, k2, v2;
    json_iter_t i1 = json_iter(with), i2 = json_iter(without);
    while (json_next(&i1, &k1, &v1)) {
        assert_true(json_next(&i2, &k2, &v2));
        assert_ptr_equal(v1.p, v2.p);
        assert_int_equal(v1.len, v2.len);
        json_value_t e1, e2;
        for (json_iter_t j1 = json_iter(v1), j2 = json_iter(v2); json_next(&j1, NULL, &e1);) {
            assert_true(json_next(&j2, NULL, &e2));
            assert_int_equal(e1.len, e2.len);
        }
    }
    assert_false(json_next(&i2, &k2, &v2));

    static const char *const keys[] = {"last", "k3", "nope", "long", "k70"};
    json_value_t got[5], want[5];
    assert_int_equal(json_parse_get(b.data, b.len, &doc, &with, keys, 5, got, NULL), 0);
    json_get_many(without, keys, 5, want);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(got[i].type, want[i].type);
        assert_ptr_equal(got[i].p, want[i].p);
        assert_int_equal(got[i].len, want[i].len);
    }
    assert_int_equal(got[2].type, JSON_NONE);
    assert_int_equal(json_parse_get("[{\"last\":1}]", 12, &doc, &with, keys, 1, got, NULL), 0);
    assert_int_equal(got[0].type, JSON_NONE); /* only the root's own members */
    assert_int_equal(json_parse_get("{\"last\":1", 9, &doc, &with, keys, 1, got, NULL), -1);
    assert_int_equal(got[0].type, JSON_NONE);
    assert_int_equal(doc.n, 0);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_valid_documents),  cmocka_unit_test(rejects_invalid_documents),
        cmocka_unit_test(depth_is_bounded),         cmocka_unit_test(lookup_and_iteration),
        cmocka_unit_test(escapes_and_surrogates),   cmocka_unit_test(number_edges),
        cmocka_unit_test(skipping_at_every_offset), cmocka_unit_test(doc_spans_match_scanning),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

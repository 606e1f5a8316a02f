/* test_base.c — bounded buffers, the allocation-failure hook, secrets, and log masking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"
#include "log/log.h"

static void buf_respects_its_limit(void **state)
{
    buf_t b;
    buf_init(&b, 8);
    assert_int_equal(buf_append_str(&b, "12345"), 0);
    assert_int_equal(buf_append_str(&b, "678"), 0);
    assert_int_equal(buf_append_str(&b, "9"), -1);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    buf_free(&b);
}

static void buf_printf_grows(void **state)
{
    buf_t b;
    buf_init(&b, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_printf(&b, "%04d", i), 0);
    assert_int_equal(b.len, 4000);
    assert_memory_equal(b.data + 3996, "0999", 4);
    size_t n;
    char *d = buf_steal(&b, &n);
    assert_int_equal(n, 4000);
    assert_null(b.data);
    free(d);
}

static void alloc_fails_when_told(void **state)
{
    base_alloc_fail_after(2);
    void *a = base_malloc(10);
    void *b = base_malloc(10);
    void *c = base_malloc(10);
    assert_non_null(a);
    assert_null(b);
    assert_non_null(c);
    free(a);
    free(c);
    base_alloc_fail_after(0);
}

static void secret_prints_masked(void **state)
{
    secret_t s = {.value = "sk-very-secret"};
    assert_string_equal(secret_masked(&s), "***");
    assert_string_equal(secret_reveal(&s), "sk-very-secret");
    secret_t none = {0};
    assert_false(secret_is_set(&none));
}

static void log_masks_registered_secrets(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    log_setup(LOG_DEBUG, LOG_FORMAT_JSON, out);
    log_register_secret("sk-abcdef123");
    log_info("calling provider", LOG_S("url", "http://x/?key=sk-abcdef123"), LOG_I("n", 3),
             LOG_S("q", "a\"b"));
    log_info("near misses", LOG_S("v", "ssk-abcdef12 ssk-abcdef123s\t"), LOG_I("neg", -1234567890123LL),
             LOG_I("min", LLONG_MIN), LOG_I("zero", 0));
    log_debug("no fields");
    fclose(out);
    assert_null(strstr(text, "sk-abcdef123"));
    assert_non_null(strstr(text, "\"url\":\"http://x/?key=***\""));
    assert_non_null(strstr(text, "\"n\":3"));
    assert_non_null(strstr(text, "\"neg\":-1234567890123,\"min\":-9223372036854775808,\"zero\":0}"));
    /* {"ts":"YYYY-MM-DDTHH:MM:SS.mmmZ", */
    assert_true(strlen(text) > 33 && strncmp(text, "{\"ts\":\"20", 9) == 0 && text[11] == '-' &&
                text[14] == '-' && text[17] == 'T' && text[20] == ':' && text[23] == ':' && text[26] == '.' &&
                text[30] == 'Z');
    assert_non_null(strstr(text, "\"q\":\"a\\\"b\""));
    assert_non_null(strstr(text, "\"v\":\"ssk-abcdef12 s***s\\u0009\""));
    assert_non_null(strstr(text, "\"msg\":\"no fields\"}"));
    free(text);
    log_forget_secrets();
    log_setup(LOG_INFO, LOG_FORMAT_JSON, stderr);
}

static void log_text_format_and_levels(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    log_setup(LOG_WARN, LOG_FORMAT_TEXT, out);
    log_info("hidden");
    log_warn("shown", LOG_S("job_id", "j 1"), LOG_B("ok", 1));
    fclose(out);
    assert_null(strstr(text, "hidden"));
    assert_non_null(strstr(text, " warn shown job_id=\"j 1\" ok=true\n"));
    free(text);
    assert_int_equal(log_level_parse("error"), LOG_ERROR);
    assert_int_equal(log_level_parse("loud"), -1);
    assert_int_equal(log_format_parse("text"), LOG_FORMAT_TEXT);
    log_setup(LOG_INFO, LOG_FORMAT_JSON, stderr);
}

/* The vector and word paths of base_json_plain_run agree with a byte-at-a-time reading: every special byte
 * (control, quote, backslash, >= 0x80) at every position of a 48-byte run. */
static void join_cuts_and_skips_null(void **state)
{
    char out[8];
    const char *parts[] = {"ab", NULL, "", "cd"};
    assert_int_equal(base_join(out, sizeof out, parts, 4), 4);
    assert_string_equal(out, "abcd");
    const char *longer[] = {"abcde", "fghij"};
    assert_int_equal(base_join(out, sizeof out, longer, 2), 7);
    assert_string_equal(out, "abcdefg");
    assert_int_equal(base_join(out, 1, longer, 2), 0);
    assert_string_equal(out, "");
    char digits[21];
    digits[base_u64_dec(digits, 18446744073709551615ull)] = '\0';
    assert_string_equal(digits, "18446744073709551615");
    digits[base_u64_dec(digits, 0)] = '\0';
    assert_string_equal(digits, "0");
    char signed_digits[22];
    signed_digits[base_i64_dec(signed_digits, INT64_MIN)] = '\0';
    assert_string_equal(signed_digits, "-9223372036854775808");
    signed_digits[base_i64_dec(signed_digits, -7)] = '\0';
    assert_string_equal(signed_digits, "-7");
    assert_int_equal(base_utf8_seq_len((const unsigned char *)"\xE2\x82\xAC", 3), 3);
    assert_int_equal(base_utf8_seq_len((const unsigned char *)"\xED\xA0\x80", 3), 0); /* a surrogate */
}

static void json_plain_run_finds_every_special_byte(void **state)
{
    static const unsigned char specials[] = {0x00, 0x1f, '"', '\\', 0x80, 0xc3, 0xff};
    unsigned char text[48];
    for (size_t k = 0; k < sizeof specials; k++) {
        for (size_t at = 0; at < sizeof text; at++) {
            memset(text, 'a', sizeof text);
            text[at] = specials[k];
            for (size_t n = 0; n <= sizeof text; n++) {
                size_t want = at < n ? at : n;
                if (base_json_plain_run(text, n) != want)
                    fail_msg("byte 0x%02x at %zu, n %zu: %zu, want %zu", specials[k], at, n,
                             base_json_plain_run(text, n), want);
            }
        }
    }
    memset(text, 0x7f, sizeof text); /* DEL and space are plain */
    text[0] = ' ';
    assert_int_equal(base_json_plain_run(text, sizeof text), sizeof text);
}

static void log_batch_holds_info_until_flush(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    log_setup(LOG_INFO, LOG_FORMAT_TEXT, out);
    log_batch(true);
    log_info("first");
    log_info("second");
    fflush(out);
    assert_int_equal(len, 0); /* held */
    log_flush();
    assert_non_null(strstr(text, "first"));
    assert_true(strstr(text, "first") < strstr(text, "second"));
    log_info("third");
    log_warn("fourth"); /* a warning writes what is held, then itself, at once */
    assert_non_null(strstr(text, "third"));
    assert_true(strstr(text, "third") < strstr(text, "fourth"));
    log_info("fifth");
    log_batch(false); /* off writes what is held */
    assert_non_null(strstr(text, "fifth"));
    fclose(out);
    free(text);
    log_setup(LOG_INFO, LOG_FORMAT_JSON, stderr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buf_respects_its_limit),
        cmocka_unit_test(buf_printf_grows),
        cmocka_unit_test(alloc_fails_when_told),
        cmocka_unit_test(secret_prints_masked),
        cmocka_unit_test(log_masks_registered_secrets),
        cmocka_unit_test(log_text_format_and_levels),
        cmocka_unit_test(log_batch_holds_info_until_flush),
        cmocka_unit_test(json_plain_run_finds_every_special_byte),
        cmocka_unit_test(join_cuts_and_skips_null),
    };
    return cmocka_run_group_tests_name("base", tests, NULL, NULL);
}

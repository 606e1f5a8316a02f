/* test_metrics.c — the registry: counters, gauges, histograms, float counters, dropping a series, label
 * escaping, and the two exposition formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"
#include "metrics/metrics.h"

static char *render(bool openmetrics)
{
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(metrics_render(&b, openmetrics), 0);
    size_t n;
    char *s = buf_steal(&b, &n);
    assert_non_null(s);
    return s;
}

static int reset(void **state)
{
    (void)state;
    metrics_reset();
    return 0;
}

static void same_name_and_labels_is_one_series(void **state)
{
    (void)state;
    metric_t *a = metrics_counter("parley_x_total", "X", "k=\"1\"");
    metric_t *b = metrics_counter("parley_x_total", "X", "k=\"1\"");
    metric_t *c = metrics_counter("parley_x_total", "X", "k=\"2\"");
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    metric_add(a, 3);
    metric_inc(b);
    assert_int_equal(metric_counter_value(a), 4);
    assert_int_equal(metric_counter_value(c), 0);
    metric_counter_set(c, 42);
    assert_int_equal(metric_counter_value(c), 42);
}

static void text_format_groups_families(void **state)
{
    (void)state;
    metric_t *a = metrics_counter("parley_a_total", "A things", "k=\"1\"");
    metric_t *g = metrics_gauge("parley_g", "G", NULL);
    metric_t *a2 = metrics_counter("parley_a_total", "A things", "k=\"2\"");
    metric_add(a, 5);
    metric_add(a2, 7);
    metric_set(g, -3);
    metric_gauge_add(g, 1);
    char *s = render(false);
    const char *want = "# HELP parley_a_total A things\n"
                       "# TYPE parley_a_total counter\n"
                       "parley_a_total{k=\"1\"} 5\n"
                       "parley_a_total{k=\"2\"} 7\n"
                       "# HELP parley_g G\n"
                       "# TYPE parley_g gauge\n"
                       "parley_g -2\n";
    assert_string_equal(s, want);
    assert_null(strstr(s, "# EOF"));
    free(s);
}

static void openmetrics_counters_and_eof(void **state)
{
    (void)state;
    metrics_counter("parley_a_total", "A", NULL);
    char *s = render(true);
    assert_non_null(strstr(s, "# TYPE parley_a counter\n"));
    assert_non_null(strstr(s, "# HELP parley_a A\n"));
    assert_non_null(strstr(s, "\nparley_a_total 0\n"));
    size_t n = strlen(s);
    assert_true(n > 6);
    assert_string_equal(s + n - 6, "# EOF\n");
    free(s);
}

static void histogram_buckets_are_cumulative(void **state)
{
    (void)state;
    static const double bounds[] = {0.1, 1};
    metric_t *h = metrics_histogram("parley_h_seconds", "H", "stage=\"x\"", bounds, 2);
    metric_observe(h, 0.05);
    metric_observe(h, 0.5);
    metric_observe(h, 0.5);
    metric_observe(h, 7);
    char *s = render(false);
    assert_non_null(strstr(s, "parley_h_seconds_bucket{stage=\"x\",le=\"0.1\"} 1\n"));
    assert_non_null(strstr(s, "parley_h_seconds_bucket{stage=\"x\",le=\"1\"} 3\n"));
    assert_non_null(strstr(s, "parley_h_seconds_bucket{stage=\"x\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(s, "parley_h_seconds_sum{stage=\"x\"} 8.050000\n"));
    assert_non_null(strstr(s, "parley_h_seconds_count{stage=\"x\"} 4\n"));
    free(s);
}

static void float_counter_renders_a_decimal(void **state)
{
    (void)state;
    metric_t *c = metrics_counter_float("parley_cost_usd_total", "Cost", "provider=\"p\"");
    metric_add_float(c, 0.0015);
    metric_add_float(c, 0.25);
    metric_add_float(c, -1); /* ignored */
    char *s = render(false);
    assert_non_null(strstr(s, "parley_cost_usd_total{provider=\"p\"} 0.251500\n"));
    free(s);
}

static void unregister_drops_the_series(void **state)
{
    (void)state;
    metric_t *a = metrics_gauge("parley_lag", "Lag", "partition=\"0\"");
    metric_t *b = metrics_gauge("parley_lag", "Lag", "partition=\"1\"");
    metric_t *c = metrics_gauge("parley_other", "O", NULL);
    metric_set(a, 10);
    metric_set(b, 11);
    metrics_unregister(b);
    char *s = render(false);
    assert_non_null(strstr(s, "parley_lag{partition=\"0\"} 10\n"));
    assert_null(strstr(s, "partition=\"1\""));
    free(s);
    metrics_unregister(c); /* the tail: a later registration must still be rendered */
    metrics_unregister(a);
    metric_t *d = metrics_gauge("parley_new", "N", NULL);
    metric_set(d, 1);
    s = render(false);
    assert_null(strstr(s, "parley_lag"));
    assert_null(strstr(s, "parley_other"));
    assert_non_null(strstr(s, "parley_new 1\n"));
    free(s);
    metric_t *e = metrics_gauge("parley_lag", "Lag", "partition=\"1\"");
    assert_int_equal(metric_gauge_value(e), 0); /* a fresh series, not the old value */
}

static void label_values_are_escaped_and_bounded(void **state)
{
    (void)state;
    char out[16];
    metrics_label_value(out, sizeof out, "a\"b\\c\nd");
    assert_string_equal(out, "a\\\"b\\\\c\\nd");
    metrics_label_value(out, 8, "abcdefghij");
    assert_string_equal(out, "abcdefg");
    metrics_label_value(out, 4, "ab\"");
    assert_string_equal(out, "ab"); /* an escape that does not fit is left out whole */
    metrics_label_value(out, sizeof out, NULL);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(same_name_and_labels_is_one_series, reset),
        cmocka_unit_test_teardown(text_format_groups_families, reset),
        cmocka_unit_test_teardown(openmetrics_counters_and_eof, reset),
        cmocka_unit_test_teardown(histogram_buckets_are_cumulative, reset),
        cmocka_unit_test_teardown(float_counter_renders_a_decimal, reset),
        cmocka_unit_test_teardown(unregister_drops_the_series, reset),
        cmocka_unit_test_teardown(label_values_are_escaped_and_bounded, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

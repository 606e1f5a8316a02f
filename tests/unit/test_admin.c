/* test_admin.c — the admin endpoint over real HTTP on a run-time loopback port: /healthz follows the
 * heartbeat, /readyz the checks (naming the failing one), /status what was published, /metrics both
 * formats by Accept, 404 / 405 / a refused body, and a bad listen address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "admin/admin.h"
#include "base/base.h"
#include "metrics/metrics.h"

/* Sends one raw request and reads the whole answer (the server closes: Connection: close). */
static int http_raw(int port, const char *request, char *out, size_t outlen)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    size_t got = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || write(fd, request, strlen(request)) < 0) {
        close(fd);
        return -1;
    }
    for (;;) {
        ssize_t n = read(fd, out + got, outlen - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == outlen - 1)
            break;
    }
    out[got] = '\0';
    close(fd);
    int status = 0;
    return sscanf(out, "HTTP/1.%*d %d", &status) == 1 ? status : -1;
}

static int get(int port, const char *path, const char *extra_headers, char *out, size_t outlen)
{
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n", path,
             extra_headers ? extra_headers : "");
    return http_raw(port, req, out, outlen);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static admin_t *start(int64_t heartbeat_max_ms)
{
    char err[256] = "";
    admin_options_t o = {.listen = "127.0.0.1:0", .heartbeat_max_ms = heartbeat_max_ms};
    admin_t *a = admin_start(&o, err, sizeof err);
    assert_non_null(a);
    assert_true(admin_port(a) > 0);
    return a;
}

static void healthz_follows_the_heartbeat(void **state)
{
    (void)state;
    static char out[4096];
    admin_t *a = start(150);
    admin_heartbeat(a);
    assert_int_equal(get(admin_port(a), "/healthz", NULL, out, sizeof out), 200);
    assert_non_null(strstr(out, "\"status\":\"ok\""));
    sleep_ms(300); /* the loop is silent longer than heartbeat_max_ms */
    assert_int_equal(get(admin_port(a), "/healthz", NULL, out, sizeof out), 503);
    assert_non_null(strstr(out, "\"status\":\"stuck\""));
    admin_heartbeat(a);
    assert_int_equal(get(admin_port(a), "/healthz", NULL, out, sizeof out), 200);
    admin_stop(a);
}

static void readyz_names_the_failing_checks(void **state)
{
    (void)state;
    static char out[4096];
    admin_t *a = start(0);
    int port = admin_port(a);
    assert_int_equal(get(port, "/readyz", NULL, out, sizeof out), 503);
    assert_non_null(
        strstr(out, "{\"checks\":{\"assigned\":false,\"redis\":false,\"providers\":false},\"ready\":false}"));
    admin_set_check(a, ADMIN_CHECK_ASSIGNED, true);
    admin_set_check(a, ADMIN_CHECK_REDIS, true);
    assert_int_equal(get(port, "/readyz", NULL, out, sizeof out), 503);
    assert_non_null(strstr(out, "\"providers\":false"));
    admin_set_check(a, ADMIN_CHECK_PROVIDERS, true);
    assert_int_equal(get(port, "/readyz", NULL, out, sizeof out), 200);
    assert_non_null(strstr(out, "\"ready\":true"));
    admin_set_check(a, ADMIN_CHECK_REDIS, false);
    assert_int_equal(get(port, "/readyz", NULL, out, sizeof out), 503);
    assert_non_null(strstr(out, "\"redis\":false"));
    admin_stop(a);
}

static void status_serves_the_published_document(void **state)
{
    (void)state;
    static char out[4096];
    admin_t *a = start(0);
    assert_int_equal(get(admin_port(a), "/status", NULL, out, sizeof out), 200);
    assert_non_null(strstr(out, "\r\n\r\n{}"));
    admin_publish_status(a, "{\"version\":\"x\",\"assignment\":[]}\n");
    assert_int_equal(get(admin_port(a), "/status", NULL, out, sizeof out), 200);
    assert_non_null(strstr(out, "application/json"));
    assert_non_null(strstr(out, "{\"version\":\"x\",\"assignment\":[]}"));
    admin_stop(a);
}

static void metrics_formats_by_accept(void **state)
{
    (void)state;
    static char out[16384];
    metric_t *c = metrics_counter("parley_t_total", "T", NULL);
    metric_add(c, 9);
    admin_t *a = start(0);
    assert_int_equal(get(admin_port(a), "/metrics", NULL, out, sizeof out), 200);
    assert_non_null(strstr(out, "text/plain; version=0.0.4"));
    assert_non_null(strstr(out, "\nparley_t_total 9\n"));
    assert_null(strstr(out, "# EOF"));
    assert_int_equal(get(admin_port(a), "/metrics", "Accept: application/openmetrics-text; version=1.0.0\r\n",
                         out, sizeof out),
                     200);
    assert_non_null(strstr(out, "application/openmetrics-text; version=1.0.0"));
    assert_non_null(strstr(out, "# TYPE parley_t counter\n"));
    assert_non_null(strstr(out, "# EOF\n"));
    admin_stop(a);
    metrics_reset();
}

static void other_requests_are_refused(void **state)
{
    (void)state;
    static char out[4096];
    admin_t *a = start(0);
    int port = admin_port(a);
    assert_int_equal(get(port, "/", NULL, out, sizeof out), 404);
    assert_int_equal(get(port, "/metrics/extra", NULL, out, sizeof out), 404);
    assert_int_equal(
        http_raw(port,
                 "POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
                 out, sizeof out),
        405);
    /* A header block beyond the connection's memory limit is refused, not buffered. */
    size_t big = 40 * 1024;
    char *req = base_malloc(big + 128);
    assert_non_null(req);
    int n = snprintf(req, 128, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\nConnection: close\r\n\r\n", 24);
    int st = http_raw(port, req, out, sizeof out);
    assert_true(st == 431 || st == 413 || st == 400 || st == -1);
    free(req);
    admin_heartbeat(a); /* still serving */
    assert_int_equal(get(port, "/healthz", NULL, out, sizeof out), 200);
    admin_stop(a);
}

static void bad_listen_addresses_fail_with_a_message(void **state)
{
    (void)state;
    char err[256] = "";
    admin_options_t o = {.listen = "nohostport"};
    assert_null(admin_start(&o, err, sizeof err));
    assert_non_null(strstr(err, "host:port"));
    o.listen = "127.0.0.1:99999";
    assert_null(admin_start(&o, err, sizeof err));
    assert_non_null(strstr(err, "bad port"));
    o.listen = "example.com:80";
    assert_null(admin_start(&o, err, sizeof err));
    assert_non_null(strstr(err, "IPv4"));
    admin_t *a = start(0); /* the port it took is in use now */
    char taken[32];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", admin_port(a));
    o.listen = taken;
    assert_null(admin_start(&o, err, sizeof err));
    assert_non_null(strstr(err, "cannot listen"));
    admin_stop(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(healthz_follows_the_heartbeat),
        cmocka_unit_test(readyz_names_the_failing_checks),
        cmocka_unit_test(status_serves_the_published_document),
        cmocka_unit_test(metrics_formats_by_accept),
        cmocka_unit_test(other_requests_are_refused),
        cmocka_unit_test(bad_listen_addresses_fail_with_a_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

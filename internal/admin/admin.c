/* admin.c — libmicrohttpd handlers for /metrics /healthz /readyz /status. */
#include "admin/admin.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "metrics/metrics.h"

#define ADMIN_MAX_CONNECTIONS      64
#define ADMIN_CONNECTION_TIMEOUT_S 10

struct admin {
    struct MHD_Daemon *daemon;
    int port;
    int64_t heartbeat_max_ms;
    _Atomic int64_t heartbeat_ms;
    _Atomic bool checks[ADMIN_N_CHECKS];
    pthread_mutex_t status_lock;
    char *status_json;
};

static const char *const check_names[ADMIN_N_CHECKS] = {"assigned", "redis", "providers"};

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *type, char *body,
                               size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *conn, unsigned status, const char *type,
                                    const char *text)
{
    char *body = base_strdup(text);
    return body ? respond(conn, status, type, body, strlen(body)) : MHD_NO;
}

static enum MHD_Result serve_metrics(struct MHD_Connection *conn)
{
    const char *accept = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    bool openmetrics = accept && strstr(accept, "application/openmetrics-text");
    buf_t b;
    buf_init(&b, 0);
    if (metrics_render(&b, openmetrics) != 0) {
        buf_free(&b);
        return respond_text(conn, 500, "text/plain", "metrics render failed\n");
    }
    size_t len;
    char *body = buf_steal(&b, &len);
    return respond(conn, 200,
                   openmetrics ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                               : "text/plain; version=0.0.4; charset=utf-8",
                   body, len);
}

static enum MHD_Result serve_healthz(admin_t *a, struct MHD_Connection *conn)
{
    int64_t age = base_mono_ms() - atomic_load(&a->heartbeat_ms);
    char body[128];
    bool ok = age <= a->heartbeat_max_ms;
    snprintf(body, sizeof body, "{\"status\":\"%s\",\"loop_heartbeat_age_ms\":%lld}\n", ok ? "ok" : "stuck",
             (long long)age);
    return respond_text(conn, ok ? 200 : 503, "application/json", body);
}

static enum MHD_Result serve_readyz(admin_t *a, struct MHD_Connection *conn)
{
    buf_t b;
    buf_init(&b, 0);
    bool ready = true;
    buf_append_str(&b, "{\"checks\":{");
    for (int i = 0; i < ADMIN_N_CHECKS; i++) {
        bool ok = atomic_load(&a->checks[i]);
        ready = ready && ok;
        buf_printf(&b, "%s\"%s\":%s", i ? "," : "", check_names[i], ok ? "true" : "false");
    }
    buf_printf(&b, "},\"ready\":%s}\n", ready ? "true" : "false");
    size_t len;
    char *body = buf_steal(&b, &len);
    return body ? respond(conn, ready ? 200 : 503, "application/json", body, len) : MHD_NO;
}

static enum MHD_Result serve_status(admin_t *a, struct MHD_Connection *conn)
{
    pthread_mutex_lock(&a->status_lock);
    char *body = base_strdup(a->status_json ? a->status_json : "{}");
    pthread_mutex_unlock(&a->status_lock);
    return body ? respond(conn, 200, "application/json", body, strlen(body)) : MHD_NO;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_size,
                              void **req_cls)
{
    admin_t *a = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return respond_text(conn, 405, "text/plain", "method not allowed\n");
    if (*upload_size) /* no GET takes a body: refuse it rather than buffer it */
        return respond_text(conn, 413, "text/plain", "no body expected\n");
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(conn);
    if (strcmp(url, "/healthz") == 0)
        return serve_healthz(a, conn);
    if (strcmp(url, "/readyz") == 0)
        return serve_readyz(a, conn);
    if (strcmp(url, "/status") == 0)
        return serve_status(a, conn);
    return respond_text(conn, 404, "text/plain", "not found\n");
}

static int parse_listen(const char *listen, struct sockaddr_in *sa, char *err, size_t errlen)
{
    const char *colon = strrchr(listen, ':');
    if (!colon) {
        snprintf(err, errlen, "admin.listen '%s': expected host:port", listen);
        return -1;
    }
    char host[64];
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof host) {
        snprintf(err, errlen, "admin.listen: host too long");
        return -1;
    }
    memcpy(host, listen, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) {
        snprintf(err, errlen, "admin.listen '%s': bad port", listen);
        return -1;
    }
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (hl == 0 || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        snprintf(err, errlen, "admin.listen '%s': host must be an IPv4 address", listen);
        return -1;
    }
    return 0;
}

admin_t *admin_start(const admin_options_t *opts, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    if (parse_listen(opts->listen, &sa, err, errlen) < 0)
        return NULL;
    admin_t *a = base_calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->heartbeat_max_ms = opts->heartbeat_max_ms > 0 ? opts->heartbeat_max_ms : 5000;
    atomic_store(&a->heartbeat_ms, base_mono_ms());
    pthread_mutex_init(&a->status_lock, NULL);
    a->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, handle, a,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)ADMIN_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
                                 (unsigned)ADMIN_CONNECTION_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                 (size_t)32 * 1024, MHD_OPTION_END);
    if (!a->daemon) {
        snprintf(err, errlen, "admin: cannot listen on %s", opts->listen);
        pthread_mutex_destroy(&a->status_lock);
        free(a);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->daemon, MHD_DAEMON_INFO_BIND_PORT);
    a->port = info ? info->port : ntohs(sa.sin_port);
    return a;
}

void admin_stop(admin_t *a)
{
    if (!a)
        return;
    MHD_stop_daemon(a->daemon);
    pthread_mutex_destroy(&a->status_lock);
    free(a->status_json);
    free(a);
}

void admin_heartbeat(admin_t *a)
{
    atomic_store_explicit(&a->heartbeat_ms, base_mono_ms(), memory_order_relaxed);
}

void admin_set_check(admin_t *a, admin_check_t check, bool ok) { atomic_store(&a->checks[check], ok); }

void admin_publish_status(admin_t *a, const char *json)
{
    char *copy = base_strdup(json);
    if (!copy)
        return;
    pthread_mutex_lock(&a->status_lock);
    free(a->status_json);
    a->status_json = copy;
    pthread_mutex_unlock(&a->status_lock);
}

int admin_port(const admin_t *a) { return a->port; }

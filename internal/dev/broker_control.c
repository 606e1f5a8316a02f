/* broker_control.c — the dev stack's broker fault control: a small HTTP endpoint on 127.0.0.1
 * (libmicrohttpd, its own thread) that drives librdkafka's mock cluster so fault tests can take
 * brokers down, move partition leaders and inject request errors while workers run. The mock
 * cluster's setters are thread-safe (they post to the cluster's thread), so nothing here touches
 * the dev loop. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "dev/dev.h"

#define CONTROL_MAX_ERRORS 1000

struct dev_broker_control {
    struct MHD_Daemon *daemon;
    rd_kafka_mock_cluster_t *cluster;
    int port;
};

static const struct {
    const char *name;
    int16_t key;
} api_names[] = {
    {"Produce", 0},          {"Fetch", 1},
    {"ListOffsets", 2},      {"Metadata", 3},
    {"OffsetCommit", 8},     {"OffsetFetch", 9},
    {"FindCoordinator", 10}, {"JoinGroup", 11},
    {"Heartbeat", 12},       {"LeaveGroup", 13},
    {"SyncGroup", 14},       {"ApiVersions", 18},
    {"InitProducerId", 22},  {"OffsetForLeaderEpoch", 23},
};

/* A decimal integer in [lo, hi] from s; -1 (and *ok false) when absent or bad. */
static long arg_long(const char *s, long lo, long hi, bool *ok)
{
    char *e;
    long v = s && *s ? strtol(s, &e, 10) : 0;
    if (!s || !*s || *e || v < lo || v > hi) {
        *ok = false;
        return -1;
    }
    return v;
}

/* An ApiKey by name ("Produce") or number; -1 when unknown. */
static int api_key(const char *s)
{
    for (size_t i = 0; s && i < sizeof api_names / sizeof api_names[0]; i++)
        if (strcmp(s, api_names[i].name) == 0)
            return api_names[i].key;
    bool ok = true;
    long v = arg_long(s, 0, 100, &ok);
    return ok ? (int)v : -1;
}

/* An error code by librdkafka name ("NOT_ENOUGH_REPLICAS", "_TRANSPORT") or number; *ok false when
 * unknown. */
static rd_kafka_resp_err_t err_code(const char *s, bool *ok)
{
    const struct rd_kafka_err_desc *descs;
    size_t n;
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; s && i < n; i++)
        if (descs[i].name && strcmp(descs[i].name, s) == 0)
            return descs[i].code;
    return (rd_kafka_resp_err_t)arg_long(s, -200, 200, ok);
}

static const char *q(struct MHD_Connection *c, const char *k)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, k);
}

/* Runs one control request; 0 and a message in out, or an HTTP status and a message. */
static int control(dev_broker_control_t *bc, struct MHD_Connection *c, const char *url, char *out,
                   size_t outlen)
{
    bool ok = true;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (strcmp(url, "/broker/down") == 0 || strcmp(url, "/broker/up") == 0) {
        long id = arg_long(q(c, "id"), 1, 16, &ok);
        if (!ok)
            goto bad;
        bool down = url[8] == 'd';
        e = down ? rd_kafka_mock_broker_set_down(bc->cluster, (int32_t)id)
                 : rd_kafka_mock_broker_set_up(bc->cluster, (int32_t)id);
        snprintf(out, outlen, "broker %ld %s", id, down ? "down" : "up");
    } else if (strcmp(url, "/partition/leader") == 0) {
        const char *topic = q(c, "topic");
        long part = arg_long(q(c, "partition"), 0, 100000, &ok);
        long broker = arg_long(q(c, "broker"), -1, 16, &ok);
        if (!ok || !topic || !*topic)
            goto bad;
        e = rd_kafka_mock_partition_set_leader(bc->cluster, topic, (int32_t)part, (int32_t)broker);
        snprintf(out, outlen, "%.200s[%ld] leader %ld", topic, part, broker);
    } else if (strcmp(url, "/errors") == 0 || strcmp(url, "/errors/clear") == 0) {
        int api = api_key(q(c, "api"));
        if (api < 0)
            goto bad;
        if (url[7] == '/') {
            rd_kafka_mock_clear_request_errors(bc->cluster, (int16_t)api);
            snprintf(out, outlen, "errors cleared for api %d", api);
            return 0;
        }
        rd_kafka_resp_err_t code = err_code(q(c, "code"), &ok);
        long count = arg_long(q(c, "count") ? q(c, "count") : "1", 1, CONTROL_MAX_ERRORS, &ok);
        if (!ok)
            goto bad;
        rd_kafka_resp_err_t errs[CONTROL_MAX_ERRORS];
        for (long i = 0; i < count; i++)
            errs[i] = code;
        rd_kafka_mock_push_request_errors_array(bc->cluster, (int16_t)api, (size_t)count, errs);
        snprintf(out, outlen, "%ld x %s pushed for api %d", count, rd_kafka_err2name(code), api);
    } else {
        snprintf(out, outlen, "unknown control path");
        return MHD_HTTP_NOT_FOUND;
    }
    if (e) {
        snprintf(out, outlen, "%s", rd_kafka_err2str(e));
        return MHD_HTTP_CONFLICT;
    }
    return 0;
bad:
    snprintf(out, outlen, "bad or missing arguments");
    return MHD_HTTP_BAD_REQUEST;
}

/* The MHD handler: POST only, answers text/plain. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **ctx)
{
    (void)version;
    (void)upload;
    if (*ctx == NULL) { /* first call: headers only */
        *ctx = cls;
        return MHD_YES;
    }
    if (*upload_size) { /* a body is ignored */
        *upload_size = 0;
        return MHD_YES;
    }
    char msg[512];
    int status =
        strcmp(method, "POST") == 0 ? control(cls, c, url, msg, sizeof msg) : MHD_HTTP_METHOD_NOT_ALLOWED;
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        snprintf(msg, sizeof msg, "POST only");
    size_t n = strlen(msg);
    if (n < sizeof msg - 1)
        msg[n++] = '\n';
    struct MHD_Response *r = MHD_create_response_from_buffer(n, msg, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/plain");
    enum MHD_Result res = MHD_queue_response(c, status ? (unsigned)status : MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return res;
}

dev_broker_control_t *dev_broker_control_new(dev_broker_t *b, char *err, size_t errlen)
{
    dev_broker_control_t *bc = base_calloc(1, sizeof *bc);
    if (!bc) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    bc->cluster = dev_broker_cluster(b);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bc->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request, bc,
                                  MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_END);
    const union MHD_DaemonInfo *info =
        bc->daemon ? MHD_get_daemon_info(bc->daemon, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    if (!info) {
        snprintf(err, errlen, "broker control: cannot listen on 127.0.0.1");
        dev_broker_control_free(bc);
        return NULL;
    }
    bc->port = info->port;
    return bc;
}

int dev_broker_control_port(const dev_broker_control_t *bc) { return bc->port; }

void dev_broker_control_free(dev_broker_control_t *bc)
{
    if (!bc)
        return;
    if (bc->daemon)
        MHD_stop_daemon(bc->daemon);
    free(bc);
}

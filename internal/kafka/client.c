/* client.c — configuration passthrough, librdkafka log lines into log/, queue wake-up pipes and the
 * off-loop destroy that the consumer and the producer share. */
#include "kafka/client.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "log/log.h"

/* Keys librdkafka knows for one side only (a trailing '.' makes a prefix); setting them on the other
 * side only earns a warning, so they are skipped there. */
static const char *const consumer_only[] = {
    "group.",
    "enable.auto.",
    "auto.commit.",
    "auto.offset.reset",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "fetch.",
    "queued.",
    "isolation.level",
    "check.crcs",
    "coordinator.query.interval.ms",
    "consume.callback.max.messages",
    "enable.partition.eof",
    "allow.auto.create.topics",
    "offset.store.",
    "consume.",
};
static const char *const producer_only[] = {
    "acks",
    "request.required.acks",
    "linger.ms",
    "queue.buffering.",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "transactional.id",
    "transaction.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "message.send.max.retries",
    "retries",
    "retry.backoff.ms",
    "batch.",
    "compression.",
    "sticky.partitioning.linger.ms",
    "partitioner",
    "request.timeout.ms",
    "message.copy.max.bytes",
    "delivery.report.only.error",
    "dr_msg_cb",
    "dr_cb",
};
static const char *const scope_prefix[] = {"consumer.", "producer."};

static bool key_in(const char *key, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(list[i]);
        if (list[i][len - 1] == '.' ? strncmp(key, list[i], len) == 0 : strcmp(key, list[i]) == 0)
            return true;
    }
    return false;
}

/* The librdkafka key that props entry key means in scope, or NULL when it is for the other side. */
static const char *scoped_key(kafka_scope_t scope, const char *key)
{
    size_t own = strlen(scope_prefix[scope]);
    if (strncmp(key, scope_prefix[scope], own) == 0)
        return key + own;
    const char *other =
        scope_prefix[scope == KAFKA_SCOPE_CONSUMER ? KAFKA_SCOPE_PRODUCER : KAFKA_SCOPE_CONSUMER];
    if (strncmp(key, other, strlen(other)) == 0)
        return NULL;
    if (scope == KAFKA_SCOPE_CONSUMER && key_in(key, producer_only, BASE_ARRAY_LEN(producer_only)))
        return NULL;
    if (scope == KAFKA_SCOPE_PRODUCER && key_in(key, consumer_only, BASE_ARRAY_LEN(consumer_only)))
        return NULL;
    return key;
}

const char *kafka_prop_find(kafka_scope_t scope, const config_kv_t *props, size_t n_props, const char *key)
{
    const char *found = NULL;
    for (size_t i = 0; i < n_props; i++) {
        const char *k = scoped_key(scope, props[i].key);
        if (k && strcmp(k, key) == 0)
            found = props[i].value;
    }
    return found;
}

/* Sets one property; on failure err names the key, and librdkafka's text only if it does not quote
 * the value. */
static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *err, size_t errlen)
{
    char why[512];
    rd_kafka_conf_res_t res = rd_kafka_conf_set(conf, key, value, why, sizeof(why));
    if (res == RD_KAFKA_CONF_OK)
        return 0;
    bool quotes_value = value && *value && strstr(why, value) != NULL;
    snprintf(err, errlen, "kafka.properties: %s: %s%s%s", key,
             res == RD_KAFKA_CONF_UNKNOWN ? "unknown librdkafka property" : "invalid value",
             quotes_value ? "" : ": ", quotes_value ? "" : why);
    return -1;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    log_level_t lvl = level <= 3 ? LOG_ERROR : level == 4 ? LOG_WARN : level <= 6 ? LOG_INFO : LOG_DEBUG;
    LOG_AT_(lvl, "librdkafka", LOG_S("client", rk ? rd_kafka_name(rk) : ""), LOG_S("facility", fac),
            LOG_S("text", buf));
}

rd_kafka_conf_t *kafka_conf_new(kafka_scope_t scope, const config_kv_t *defaults, size_t n_defaults,
                                const config_kv_t *props, size_t n_props, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    for (size_t i = 0; i < n_defaults; i++)
        if (defaults[i].value && conf_set(conf, defaults[i].key, defaults[i].value, err, errlen) < 0)
            goto fail;
    for (size_t i = 0; i < n_props; i++) {
        const char *key = scoped_key(scope, props[i].key);
        if (key && conf_set(conf, key, props[i].value ? props[i].value : "", err, errlen) < 0)
            goto fail;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

int kafka_wake_init(kafka_wake_t *w, uv_loop_t *loop, rd_kafka_queue_t *q, uv_poll_cb cb, void *owner)
{
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    w->rfd = fds[0];
    w->wfd = fds[1];
    if (uv_poll_init(loop, &w->poll, w->rfd) < 0) {
        kafka_wake_close_fds(w);
        return -1;
    }
    w->poll.data = owner;
    rd_kafka_queue_io_event_enable(q, w->wfd, "1", 1);
    uv_poll_start(&w->poll, UV_READABLE, cb);
    return 0;
}

void kafka_wake_drain(kafka_wake_t *w)
{
    char buf[256];
    while (read(w->rfd, buf, sizeof(buf)) > 0)
        ;
}

void kafka_wake_close_fds(kafka_wake_t *w)
{
    if (w->rfd >= 0)
        close(w->rfd);
    if (w->wfd >= 0)
        close(w->wfd);
    w->rfd = w->wfd = -1;
}

typedef struct {
    uv_work_t work;
    rd_kafka_t *rk;
    int flags;
    void (*done)(void *arg);
    void *arg;
} destroy_job_t;

static void destroy_work(uv_work_t *req)
{
    destroy_job_t *j = req->data;
    rd_kafka_destroy_flags(j->rk, j->flags);
}

static void destroy_after(uv_work_t *req, int status)
{
    destroy_job_t *j = req->data;
    j->done(j->arg);
    free(j);
}

void kafka_destroy_async(uv_loop_t *loop, rd_kafka_t *rk, int flags, void (*done)(void *arg), void *arg)
{
    destroy_job_t *j = base_calloc(1, sizeof(*j));
    if (j) {
        *j = (destroy_job_t){.rk = rk, .flags = flags, .done = done, .arg = arg};
        j->work.data = j;
        if (uv_queue_work(loop, &j->work, destroy_work, destroy_after) == 0)
            return;
        free(j);
    }
    log_warn("kafka: destroying the client on the loop", LOG_S("client", rd_kafka_name(rk)));
    rd_kafka_destroy_flags(rk, flags);
    done(arg);
}

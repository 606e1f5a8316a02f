/* producer.c — replies and dead letters. Every accepted message gets exactly one delivery callback on
 * the loop: from librdkafka's delivery report (served when the main queue's pipe wakes the loop), from
 * the waiting list (a message that met a full local queue waits there, in order, copied, and is retried
 * from a timer; one that librdkafka refused outright is reported from there too), or, at close, for
 * whatever librdkafka never reported. */
#include "kafka/client.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "log/log.h"

#define RETRY_MS       10
#define CLOSE_TICK_MS  10
#define PURGE_GRACE_MS 1000

typedef struct pmsg {
    struct pmsg *prev, *next;
    kafka_delivery_cb cb;
    void *ctx;
    int err; /* refused by librdkafka before it took the message */
    /* copies, only while waiting */
    char *topic;
    void *key;
    size_t key_len;
    void *value;
    size_t value_len;
    kafka_header_t *headers;
    size_t n_headers;
} pmsg_t;

struct kafka_producer {
    uv_loop_t *loop;
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    kafka_wake_t wake;
    uv_timer_t timer;
    int open_handles;
    pmsg_t *inflight; /* taken by librdkafka, doubly linked */
    pmsg_t *wait_head, *wait_tail;
    size_t pending;
    bool closing;
    bool purged;
    bool finishing;
    int64_t deadline_ms;
    kafka_closed_cb close_cb;
    void *close_ctx;
};

static void on_timer(uv_timer_t *t);

static void pmsg_free(pmsg_t *m)
{
    free(m->topic);
    free(m->key);
    free(m->value);
    for (size_t i = 0; i < m->n_headers; i++) {
        free((char *)m->headers[i].name);
        free((void *)m->headers[i].value);
    }
    free(m->headers);
    free(m);
}

static bool retriable(int err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__DESTROY:
        return false;
    default:
        return true;
    }
}

/* Calls m's callback once and frees m. */
static void report(kafka_producer_t *p, pmsg_t *m, int err, const char *topic, int32_t partition,
                   int64_t offset)
{
    kafka_delivery_t d = {.err = err,
                          .error = err ? rd_kafka_err2str((rd_kafka_resp_err_t)err) : "",
                          .retriable = err && retriable(err),
                          .topic = topic ? topic : "",
                          .partition = partition,
                          .offset = err ? -1 : offset};
    p->pending--;
    m->cb(m->ctx, &d);
    pmsg_free(m);
}

static void inflight_unlink(kafka_producer_t *p, pmsg_t *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        p->inflight = m->next;
    if (m->next)
        m->next->prev = m->prev;
    m->prev = m->next = NULL;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    kafka_producer_t *p = opaque;
    pmsg_t *m = rkm->_private;
    if (p->finishing || !m) /* destroy purged it: reported by after_destroy on the loop */
        return;
    inflight_unlink(p, m);
    report(p, m, rkm->err, rd_kafka_topic_name(rkm->rkt), rkm->partition, rkm->offset);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    char text[512];
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_fatal_error(rk, text, sizeof(text));
        log_error("kafka producer fatal error", LOG_S("error", text));
        return;
    }
    log_warn("kafka producer error", LOG_S("error", reason), LOG_I("code", err));
}

/* Hands one message to librdkafka (which copies it); 0 or the error. */
static rd_kafka_resp_err_t try_produce(kafka_producer_t *p, pmsg_t *m, const char *topic, const void *key,
                                       size_t key_len, const void *value, size_t value_len,
                                       const kafka_header_t *headers, size_t n_headers)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(n_headers);
    for (size_t i = 0; i < n_headers; i++)
        rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value, (ssize_t)headers[i].value_len);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, key_len),
        RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(m), RD_KAFKA_V_END);
    if (err) {
        rd_kafka_headers_destroy(hdrs);
        return err;
    }
    m->next = p->inflight;
    if (p->inflight)
        p->inflight->prev = m;
    p->inflight = m;
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static void *dup_bytes(const void *src, size_t n)
{
    void *d = base_malloc(n ? n : 1);
    if (d && n)
        memcpy(d, src, n);
    return d;
}

/* Copies what m needs to be produced later. */
static int pmsg_copy(pmsg_t *m, const char *topic, const void *key, size_t key_len, const void *value,
                     size_t value_len, const kafka_header_t *headers, size_t n_headers)
{
    m->topic = base_strdup(topic);
    m->key = key ? dup_bytes(key, key_len) : NULL;
    m->key_len = key_len;
    m->value = dup_bytes(value, value_len);
    m->value_len = value_len;
    m->headers = n_headers ? base_calloc(n_headers, sizeof(*m->headers)) : NULL;
    if (!m->topic || (key && !m->key) || !m->value || (n_headers && !m->headers))
        return -1;
    for (size_t i = 0; i < n_headers; i++) {
        m->headers[i].name = base_strdup(headers[i].name);
        m->headers[i].value = dup_bytes(headers[i].value, headers[i].value_len);
        m->headers[i].value_len = headers[i].value_len;
        m->n_headers++;
        if (!m->headers[i].name || !m->headers[i].value)
            return -1;
    }
    return 0;
}

/* Retries the waiting messages in order, until librdkafka's queue is full again. */
static void flush_waiting(kafka_producer_t *p)
{
    while (p->wait_head) {
        pmsg_t *m = p->wait_head;
        rd_kafka_resp_err_t err = m->err;
        if (!err) {
            pmsg_t *next = m->next; /* try_produce links m into the in-flight list */
            m->next = NULL;
            err = try_produce(p, m, m->topic, m->key, m->key_len, m->value, m->value_len, m->headers,
                              m->n_headers);
            if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                m->next = next;
                uv_timer_start(&p->timer, on_timer, RETRY_MS, 0);
                return;
            }
            p->wait_head = next;
        } else {
            p->wait_head = m->next;
        }
        if (!p->wait_head)
            p->wait_tail = NULL;
        if (err) {
            m->next = NULL;
            report(p, m, err, m->topic, -1, -1);
        }
    }
}

int kafka_produce(kafka_producer_t *p, const char *topic, const void *key, size_t key_len, const void *value,
                  size_t value_len, const kafka_header_t *headers, size_t n_headers, kafka_delivery_cb cb,
                  void *ctx)
{
    if (p->closing || !topic || !cb || (!value && value_len))
        return -1;
    pmsg_t *m = base_calloc(1, sizeof(*m));
    if (!m)
        return -1;
    m->cb = cb;
    m->ctx = ctx;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__QUEUE_FULL;
    if (!p->wait_head) {
        err = try_produce(p, m, topic, key, key_len, value ? value : "", value_len, headers, n_headers);
        if (!err) {
            p->pending++;
            return 0;
        }
    }
    if (pmsg_copy(m, topic, key, key_len, value ? value : "", value_len, headers, n_headers) < 0) {
        pmsg_free(m);
        return -1;
    }
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
        m->err = err;
    if (p->wait_tail)
        p->wait_tail->next = m;
    else
        p->wait_head = m;
    p->wait_tail = m;
    p->pending++;
    uv_timer_start(&p->timer, on_timer, err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? RETRY_MS : 0, 0);
    return 0;
}

size_t kafka_producer_pending(const kafka_producer_t *p) { return p->pending; }

static void on_wake(uv_poll_t *h, int status, int events)
{
    kafka_producer_t *p = h->data;
    kafka_wake_drain(&p->wake);
    rd_kafka_poll(p->rk, 0);
    if (p->wait_head && !p->purged)
        flush_waiting(p);
}

/* ---- close ---- */

static void on_handle_closed(uv_handle_t *h)
{
    kafka_producer_t *p = h->data;
    if (--p->open_handles > 0)
        return;
    kafka_wake_close_fds(&p->wake);
    kafka_closed_cb cb = p->close_cb;
    void *ctx = p->close_ctx;
    free(p);
    if (cb)
        cb(ctx);
}

static void after_destroy(void *arg)
{
    kafka_producer_t *p = arg;
    if (p->inflight)
        log_error("kafka: producer destroyed before these deliveries were reported",
                  LOG_I("count", p->pending));
    while (p->inflight) {
        pmsg_t *m = p->inflight;
        inflight_unlink(p, m);
        report(p, m, RD_KAFKA_RESP_ERR__DESTROY, "", -1, -1);
    }
    p->open_handles = 2;
    uv_close((uv_handle_t *)&p->wake.poll, on_handle_closed);
    uv_close((uv_handle_t *)&p->timer, on_handle_closed);
}

static void finish(kafka_producer_t *p)
{
    uv_timer_stop(&p->timer);
    uv_poll_stop(&p->wake.poll);
    rd_kafka_queue_io_event_enable(p->queue, -1, NULL, 0);
    rd_kafka_queue_destroy(p->queue);
    p->finishing = true;
    kafka_destroy_async(p->loop, p->rk, 0, after_destroy, p);
}

/* Purges what librdkafka still holds (its reports follow on the queue) and fails the waiting list. */
static void purge(kafka_producer_t *p)
{
    log_warn("kafka: producer close timed out, purging undelivered messages", LOG_I("pending", p->pending));
    p->purged = true;
    while (p->wait_head) {
        pmsg_t *m = p->wait_head;
        p->wait_head = m->next;
        report(p, m, RD_KAFKA_RESP_ERR__PURGE_QUEUE, m->topic, -1, -1);
    }
    p->wait_tail = NULL;
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    p->deadline_ms = base_mono_ms() + PURGE_GRACE_MS;
}

static void close_tick(kafka_producer_t *p)
{
    rd_kafka_poll(p->rk, 0);
    if (!p->purged)
        flush_waiting(p);
    if (p->pending == 0 || (p->purged && base_mono_ms() >= p->deadline_ms)) {
        finish(p);
        return;
    }
    if (!p->purged && base_mono_ms() >= p->deadline_ms)
        purge(p);
    uv_timer_start(&p->timer, on_timer, CLOSE_TICK_MS, 0);
}

static void on_timer(uv_timer_t *t)
{
    kafka_producer_t *p = t->data;
    if (p->closing)
        close_tick(p);
    else
        flush_waiting(p);
}

void kafka_producer_close(kafka_producer_t *p, int64_t timeout_ms, kafka_closed_cb cb, void *ctx)
{
    if (p->closing)
        return;
    p->closing = true;
    p->close_cb = cb;
    p->close_ctx = ctx;
    p->deadline_ms = base_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    uv_timer_start(&p->timer, on_timer, 0, 0);
}

kafka_producer_t *kafka_producer_new(uv_loop_t *loop, const kafka_producer_options_t *opts, char *err,
                                     size_t errlen)
{
    if (!opts->brokers) {
        snprintf(err, errlen, "kafka: producer needs brokers");
        return NULL;
    }
    kafka_producer_t *p = base_calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "kafka: out of memory");
        return NULL;
    }
    const config_kv_t defaults[] = {
        {"bootstrap.servers", (char *)opts->brokers},
        {"client.id", (char *)(opts->client_id ? opts->client_id : "parley")},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "5"},
    };
    rd_kafka_conf_t *conf = kafka_conf_new(KAFKA_SCOPE_PRODUCER, defaults, BASE_ARRAY_LEN(defaults),
                                           opts->properties, opts->n_properties, err, errlen);
    if (!conf)
        goto fail;
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    char why[512];
    if (!(p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why)))) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka: producer: %s", why);
        goto fail;
    }
    p->loop = loop;
    p->wake.rfd = p->wake.wfd = -1;
    p->queue = rd_kafka_queue_get_main(p->rk);
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    if (kafka_wake_init(&p->wake, loop, p->queue, on_wake, p) < 0) {
        snprintf(err, errlen, "kafka: cannot create the wake-up pipe");
        rd_kafka_queue_destroy(p->queue);
        rd_kafka_destroy(p->rk);
        p->open_handles = 1;
        uv_close((uv_handle_t *)&p->timer, on_handle_closed);
        return NULL;
    }
    return p;
fail:
    free(p);
    return NULL;
}

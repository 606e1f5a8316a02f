/* test_kafka.c — the offset tracker alone, configuration errors, then the producer and the consumer on a
 * libuv loop against librdkafka's mock cluster (started here on a run-time loopback port): delivery
 * reports on the loop, every message delivered once across pause/resume, out-of-order finishes commit
 * only the finished prefix (a restarted member of the group starts at the first unfinished offset), and a
 * cooperative revoke that waits for the held messages before letting partitions go. Then the gate:
 * nothing handed over while closed, messages at once when opened, exactly once and in offset order across
 * many cycles while messages flow; the prefetch behind a closed gate stays bounded; a member behind a
 * closed gate still takes part in a rebalance and is not evicted by max.poll.interval.ms.
 * The kafka tests run in order on one cluster: later ones read what earlier ones produced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <malloc.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <unistd.h>
#include <uv.h>

#include "base/base.h"
#include "kafka/kafka.h"
#include "log/log.h"

#define TOPIC      "jobs"
#define PARTITIONS 3
#define N_MSGS     300
#define GROUP      "g-test"
/* The mock broker keeps at most 5 MiB per partition: 20,000 messages of 1 KiB need 5 partitions. */
#define BIG_PARTITIONS 5

/* ---- offset tracker ---- */

static void offsets_commit_only_the_finished_prefix(void **state)
{
    kafka_offsets_t *t = kafka_offsets_new();
    assert_int_equal(kafka_offsets_committable(t), -1);
    for (int64_t o = 0; o < 5; o++)
        assert_int_equal(kafka_offsets_track(t, o), 0);
    assert_int_equal(kafka_offsets_committable(t), 0);
    assert_int_equal(kafka_offsets_finish(t, 2), 0);
    assert_int_equal(kafka_offsets_finish(t, 3), 0);
    assert_int_equal(kafka_offsets_committable(t), 0);
    assert_int_equal(kafka_offsets_finish(t, 0), 1);
    assert_int_equal(kafka_offsets_committable(t), 1);
    assert_int_equal(kafka_offsets_finish(t, 1), 1);
    assert_int_equal(kafka_offsets_committable(t), 4);
    assert_int_equal(kafka_offsets_held(t), 1);
    assert_int_equal(kafka_offsets_finish(t, 3), -1); /* already finished */
    assert_int_equal(kafka_offsets_finish(t, 9), -1); /* never tracked */
    assert_int_equal(kafka_offsets_track(t, 4), -1);  /* redelivery */
    assert_int_equal(kafka_offsets_finish(t, 4), 1);
    assert_int_equal(kafka_offsets_committable(t), 5);
    assert_int_equal(kafka_offsets_held(t), 0);
    /* gaps (compaction, transaction markers) */
    assert_int_equal(kafka_offsets_track(t, 10), 0);
    assert_int_equal(kafka_offsets_committable(t), 10);
    assert_int_equal(kafka_offsets_track(t, 17), 0);
    assert_int_equal(kafka_offsets_finish(t, 10), 1);
    assert_int_equal(kafka_offsets_committable(t), 17);
    assert_int_equal(kafka_offsets_finish(t, 17), 1);
    assert_int_equal(kafka_offsets_committable(t), 18);
    kafka_offsets_free(t);
}

static void offsets_large_shuffled(void **state)
{
    enum { N = 200000 };
    kafka_offsets_t *t = kafka_offsets_new();
    int64_t *order = malloc(N * sizeof(*order));
    bool *done = calloc(N, 1);
    assert_non_null(order);
    assert_non_null(done);
    for (int64_t i = 0; i < N; i++) {
        assert_int_equal(kafka_offsets_track(t, 1000 + 2 * i), 0);
        order[i] = i;
    }
    uint64_t x = 88172645463325252ull;
    for (int64_t i = N - 1; i > 0; i--) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t j = (int64_t)(x % (uint64_t)(i + 1)), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    int64_t lowest = 0; /* the reference: lowest unfinished index */
    for (int64_t k = 0; k < N; k++) {
        int64_t i = order[k];
        done[i] = true;
        int r = kafka_offsets_finish(t, 1000 + 2 * i);
        int64_t before = lowest;
        while (lowest < N && done[lowest])
            lowest++;
        assert_int_equal(r, lowest != before ? 1 : 0);
        int64_t want = lowest < N ? 1000 + 2 * lowest : 1000 + 2 * (N - 1) + 1;
        assert_int_equal(kafka_offsets_committable(t), want);
    }
    assert_int_equal(kafka_offsets_held(t), 0);
    free(order);
    free(done);
    kafka_offsets_free(t);
}

/* ---- configuration errors never show a value ---- */

static void never_called(void *ctx, kafka_message_t *m) { fail(); }

static void bad_properties_name_the_key_not_the_value(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512];
    const char *topics[] = {TOPIC};
    config_kv_t unknown[] = {{"no.such.property", "hunter2-secret"}};
    kafka_consumer_options_t o = {.brokers = "127.0.0.1:1",
                                  .group_id = "g",
                                  .topics = topics,
                                  .n_topics = 1,
                                  .properties = unknown,
                                  .n_properties = 1};
    kafka_consumer_callbacks_t cbs = {.on_message = never_called};
    assert_null(kafka_consumer_new(&loop, &o, &cbs, err, sizeof(err)));
    assert_non_null(strstr(err, "no.such.property"));
    assert_null(strstr(err, "hunter2"));

    config_kv_t invalid[] = {{"session.timeout.ms", "hunter2-secret"}};
    o.properties = invalid;
    assert_null(kafka_consumer_new(&loop, &o, &cbs, err, sizeof(err)));
    assert_non_null(strstr(err, "session.timeout.ms"));
    assert_null(strstr(err, "hunter2"));

    config_kv_t store[] = {{"enable.auto.offset.store", "true"}};
    o.properties = store;
    assert_null(kafka_consumer_new(&loop, &o, &cbs, err, sizeof(err)));
    assert_non_null(strstr(err, "enable.auto.offset.store"));

    config_kv_t acks[] = {{"acks", "hunter2-secret"}, {"group.id", "ignored-by-the-producer"}};
    kafka_producer_options_t po = {.brokers = "127.0.0.1:1", .properties = acks, .n_properties = 2};
    assert_null(kafka_producer_new(&loop, &po, err, sizeof(err)));
    assert_non_null(strstr(err, "acks"));
    assert_null(strstr(err, "hunter2"));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the mock cluster fixture ---- */

typedef struct {
    rd_kafka_t *host; /* owns the mock cluster */
    rd_kafka_mock_cluster_t *mc;
    char brokers[256];
    /* what the first consumer left unfinished per partition (-1 = none) */
    int64_t unfinished[PARTITIONS];
    int64_t end[PARTITIONS]; /* high watermark per partition */
} cluster_t;

static cluster_t cluster;

static int cluster_setup(void **state)
{
    char why[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", why, sizeof(why));
    cluster.host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!cluster.host)
        return -1;
    cluster.mc = rd_kafka_mock_cluster_new(cluster.host, 1);
    if (!cluster.mc)
        return -1;
    snprintf(cluster.brokers, sizeof(cluster.brokers), "%s", rd_kafka_mock_cluster_bootstraps(cluster.mc));
    if (rd_kafka_mock_topic_create(cluster.mc, TOPIC, PARTITIONS, 1))
        return -1;
    rd_kafka_mock_topic_create(cluster.mc, "replies", 1, 1);
    if (rd_kafka_mock_topic_create(cluster.mc, "gate", PARTITIONS, 1) ||
        rd_kafka_mock_topic_create(cluster.mc, "big", BIG_PARTITIONS, 1))
        return -1;
    for (int i = 0; i < PARTITIONS; i++)
        cluster.unfinished[i] = cluster.end[i] = -1;
    return 0;
}

static int cluster_teardown(void **state)
{
    if (cluster.mc)
        rd_kafka_mock_cluster_destroy(cluster.mc);
    if (cluster.host)
        rd_kafka_destroy(cluster.host);
    return rd_kafka_wait_destroyed(10000) == 0 ? 0 : -1;
}

/* ---- loop helpers ---- */

typedef bool (*pred_fn)(void *arg);

static void tick(uv_timer_t *t) {}

/* Runs loop until pred(arg) or timeout_ms; true when pred held. */
static bool run_until(uv_loop_t *loop, pred_fn pred, void *arg, int64_t timeout_ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick, 10, 10);
    int64_t deadline = base_mono_ms() + timeout_ms;
    while (!pred(arg) && base_mono_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return pred(arg);
}

static bool flag_set(void *arg) { return *(bool *)arg; }

static void set_flag(void *ctx) { *(bool *)ctx = true; }

/* ---- producer ---- */

typedef struct {
    int reports;
    int ok;
    int seen[N_MSGS];
    pthread_t loop_thread;
    bool off_loop;
} produce_state_t;

typedef struct {
    produce_state_t *st;
    int i;
} produce_ctx_t;

static void on_delivery(void *ctx, const kafka_delivery_t *d)
{
    produce_ctx_t *pc = ctx;
    produce_state_t *st = pc->st;
    st->reports++;
    st->seen[pc->i]++;
    if (d->err == 0 && d->offset >= 0 && strcmp(d->topic, TOPIC) == 0)
        st->ok++;
    if (!pthread_equal(pthread_self(), st->loop_thread))
        st->off_loop = true;
}

static bool all_reported(void *arg) { return ((produce_state_t *)arg)->reports == N_MSGS; }

static void produce_delivers_reports_on_the_loop(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512];
    config_kv_t props[] = {{"session.timeout.ms", "6000"}, {"producer.linger.ms", "1"}};
    kafka_producer_options_t po = {.brokers = cluster.brokers, .properties = props, .n_properties = 2};
    kafka_producer_t *p = kafka_producer_new(&loop, &po, err, sizeof(err));
    assert_non_null(p);
    static produce_state_t st;
    static produce_ctx_t ctx[N_MSGS];
    memset(&st, 0, sizeof(st));
    st.loop_thread = pthread_self();
    for (int i = 0; i < N_MSGS; i++) {
        char key[32], value[64], tp[80];
        snprintf(key, sizeof(key), "conv-%d", i % 30);
        snprintf(value, sizeof(value), "{\"job\":%d}", i);
        snprintf(tp, sizeof(tp), "00-%032d-%016d-01", i, i);
        kafka_header_t h[] = {{"traceparent", tp, strlen(tp)}, {"job_id", value, strlen(value)}};
        ctx[i] = (produce_ctx_t){.st = &st, .i = i};
        assert_int_equal(
            kafka_produce(p, TOPIC, key, strlen(key), value, strlen(value), h, 2, on_delivery, &ctx[i]), 0);
    }
    assert_int_equal(st.reports, 0); /* never from inside kafka_produce */
    assert_true(run_until(&loop, all_reported, &st, 15000));
    assert_int_equal(st.ok, N_MSGS);
    for (int i = 0; i < N_MSGS; i++)
        assert_int_equal(st.seen[i], 1);
    assert_false(st.off_loop);
    assert_int_equal(kafka_producer_pending(p), 0);
    bool closed = false;
    kafka_producer_close(p, 2000, set_flag, &closed);
    assert_int_equal(kafka_produce(p, TOPIC, NULL, 0, "x", 1, NULL, 0, on_delivery, &ctx[0]), -1);
    assert_true(run_until(&loop, flag_set, &closed, 5000));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

typedef struct {
    int reports;
    int errors;
    int64_t last_offset[30]; /* per key: offsets must grow in produce order */
    bool out_of_order;
} order_state_t;

typedef struct {
    order_state_t *st;
    int key;
} order_ctx_t;

static void on_ordered_delivery(void *ctx, const kafka_delivery_t *d)
{
    order_ctx_t *oc = ctx;
    oc->st->reports++;
    if (d->err) {
        oc->st->errors++;
        return;
    }
    if (d->offset <= oc->st->last_offset[oc->key])
        oc->st->out_of_order = true;
    oc->st->last_offset[oc->key] = d->offset;
}

static bool n_reported(void *arg) { return ((order_state_t *)arg)->reports == N_MSGS; }

/* A local queue of 5 messages: kafka_produce still accepts all, in order, and reports each once. */
static void produce_waits_when_the_local_queue_is_full(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512];
    config_kv_t props[] = {{"queue.buffering.max.messages", "5"}};
    kafka_producer_options_t po = {.brokers = cluster.brokers, .properties = props, .n_properties = 1};
    kafka_producer_t *p = kafka_producer_new(&loop, &po, err, sizeof(err));
    assert_non_null(p);
    static order_state_t st;
    static order_ctx_t ctx[N_MSGS];
    memset(&st, 0, sizeof(st));
    for (int k = 0; k < 30; k++)
        st.last_offset[k] = -1;
    for (int i = 0; i < N_MSGS; i++) {
        char key[32];
        snprintf(key, sizeof(key), "reply-%d", i % 30);
        ctx[i] = (order_ctx_t){.st = &st, .key = i % 30};
        assert_int_equal(
            kafka_produce(p, "replies", key, strlen(key), "r", 1, NULL, 0, on_ordered_delivery, &ctx[i]), 0);
    }
    assert_true(kafka_producer_pending(p) == N_MSGS);
    assert_true(run_until(&loop, n_reported, &st, 15000));
    assert_int_equal(st.errors, 0);
    assert_false(st.out_of_order);
    bool closed = false;
    kafka_producer_close(p, 2000, set_flag, &closed);
    assert_true(run_until(&loop, flag_set, &closed, 5000));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* No broker at all: close waits its timeout, then every message is reported once, with an error. */
static void producer_close_reports_what_it_could_not_deliver(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512];
    kafka_producer_options_t po = {.brokers = "127.0.0.1:1"};
    kafka_producer_t *p = kafka_producer_new(&loop, &po, err, sizeof(err));
    assert_non_null(p);
    static order_state_t st;
    static order_ctx_t ctx[20];
    memset(&st, 0, sizeof(st));
    for (int i = 0; i < 20; i++) {
        ctx[i] = (order_ctx_t){.st = &st, .key = 0};
        assert_int_equal(kafka_produce(p, "nowhere", NULL, 0, "r", 1, NULL, 0, on_ordered_delivery, &ctx[i]),
                         0);
    }
    bool closed = false;
    int64_t t0 = base_mono_ms();
    kafka_producer_close(p, 300, set_flag, &closed);
    assert_true(run_until(&loop, flag_set, &closed, 5000));
    assert_true(base_mono_ms() - t0 >= 300);
    assert_int_equal(st.reports, 20);
    assert_int_equal(st.errors, 20);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- consumer ---- */

typedef struct {
    uv_loop_t *loop;
    kafka_consumer_t *c;
    int received;
    int seen[N_MSGS];
    int bad_headers;
    kafka_message_t *held[N_MSGS];
    int n_held;
    int first_offset[PARTITIONS];
    /* pause/resume */
    uv_timer_t resume_timer;
    bool paused;
    int late_while_paused; /* delivered after a pause_all */
    int pauses;
    /* rebalance */
    int assigned;
    int revoked;
    bool lost;
} consume_state_t;

static int index_of(const kafka_message_t *m)
{
    char buf[64];
    size_t n = m->value_len < sizeof(buf) - 1 ? m->value_len : sizeof(buf) - 1;
    memcpy(buf, m->value, n);
    buf[n] = '\0';
    int i = -1;
    if (sscanf(buf, "{\"job\":%d}", &i) != 1 || i < 0 || i >= N_MSGS)
        return -1;
    return i;
}

/* True when m carries what produce_delivers_reports_on_the_loop attached to message i. */
static bool message_matches(const kafka_message_t *m, int i)
{
    char key[32], tp[80];
    snprintf(key, sizeof(key), "conv-%d", i % 30);
    snprintf(tp, sizeof(tp), "00-%032d-%016d-01", i, i);
    const void *v;
    size_t len;
    if (m->key_len != strlen(key) || memcmp(m->key, key, m->key_len) != 0)
        return false;
    if (kafka_message_header(m, "traceparent", &v, &len) != 0 || len != strlen(tp) || memcmp(v, tp, len) != 0)
        return false;
    kafka_header_t h;
    if (kafka_message_header_count(m) != 2 || kafka_message_header_at(m, 1, &h) != 0 ||
        strcmp(h.name, "job_id"))
        return false;
    if (kafka_message_header(m, "tracestate", &v, &len) != -1)
        return false;
    return m->timestamp_ms > 0 && m->partition >= 0 && m->partition < PARTITIONS;
}

static void on_resume_timer(uv_timer_t *t)
{
    consume_state_t *st = t->data;
    st->paused = false;
    kafka_consumer_resume_all(st->c);
}

static void on_message(void *ctx, kafka_message_t *m)
{
    consume_state_t *st = ctx;
    int i = index_of(m);
    assert_true(i >= 0);
    st->seen[i]++;
    st->received++;
    if (!message_matches(m, i))
        st->bad_headers++;
    if (st->paused)
        st->late_while_paused++;
    if (st->first_offset[m->partition] < 0)
        st->first_offset[m->partition] = (int)m->offset;
    st->held[st->n_held++] = m;
    if (st->pauses >= 0 && (st->received == 60 || st->received == 180)) {
        kafka_consumer_pause_all(st->c);
        st->paused = true;
        st->pauses++;
        uv_timer_start(&st->resume_timer, on_resume_timer, 400, 0);
    }
}

static void on_assign(void *ctx, const kafka_tp_t *parts, size_t n)
{
    ((consume_state_t *)ctx)->assigned += (int)n;
}

static void on_revoke(void *ctx, const kafka_tp_t *parts, size_t n, bool lost)
{
    consume_state_t *st = ctx;
    st->revoked += (int)n;
    st->lost = st->lost || lost;
}

static void consume_state_init(consume_state_t *st, uv_loop_t *loop, bool pausing)
{
    memset(st, 0, sizeof(*st));
    st->loop = loop;
    st->pauses = pausing ? 0 : -1;
    for (int i = 0; i < PARTITIONS; i++)
        st->first_offset[i] = -1;
    uv_timer_init(loop, &st->resume_timer);
    st->resume_timer.data = st;
}

static kafka_consumer_t *consumer_start(uv_loop_t *loop, consume_state_t *st, const char *group,
                                        const char *strategy)
{
    char err[512];
    const char *topics[] = {TOPIC};
    config_kv_t props[] = {{"session.timeout.ms", "6000"},
                           {"heartbeat.interval.ms", "500"},
                           {"acks", "all"}, /* producer-only: skipped for the consumer */
                           {"consumer.topic.metadata.refresh.interval.ms", "1000"},
                           {"partition.assignment.strategy", (char *)strategy}};
    kafka_consumer_options_t o = {.brokers = cluster.brokers,
                                  .group_id = group,
                                  .topics = topics,
                                  .n_topics = 1,
                                  .properties = props,
                                  .n_properties = BASE_ARRAY_LEN(props),
                                  .drain_timeout_ms = 5000,
                                  .close_timeout_ms = 5000};
    kafka_consumer_callbacks_t cbs = {
        .ctx = st, .on_message = on_message, .on_assign = on_assign, .on_revoke = on_revoke};
    kafka_consumer_t *c = kafka_consumer_new(loop, &o, &cbs, err, sizeof(err));
    if (!c)
        fprintf(stderr, "consumer: %s\n", err);
    st->c = c;
    return c;
}

static bool received_all(void *arg) { return ((consume_state_t *)arg)->received >= N_MSGS; }

typedef struct {
    consume_state_t *st;
    int want;
} count_wait_t;

static bool received_n(void *arg)
{
    count_wait_t *w = arg;
    return w->st->received >= w->want;
}

static int cmp_msg_offset(const void *a, const void *b)
{
    const kafka_message_t *x = *(kafka_message_t *const *)a, *y = *(kafka_message_t *const *)b;
    if (x->partition != y->partition)
        return x->partition - y->partition;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Committed offsets of group, read with a plain (unsubscribed) client. */
static void committed_offsets(const char *group, int64_t out[PARTITIONS])
{
    char why[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", cluster.brokers, why, sizeof(why));
    rd_kafka_conf_set(conf, "group.id", group, why, sizeof(why));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    assert_non_null(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int i = 0; i < PARTITIONS; i++)
        rd_kafka_topic_partition_list_add(l, TOPIC, i);
    assert_int_equal(rd_kafka_committed(rk, l, 5000), 0);
    for (int i = 0; i < PARTITIONS; i++)
        out[l->elems[i].partition] = l->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

static void close_consumer(uv_loop_t *loop, consume_state_t *st)
{
    bool closed = false;
    kafka_consumer_close(st->c, set_flag, &closed);
    assert_true(run_until(loop, flag_set, &closed, 10000));
    uv_close((uv_handle_t *)&st->resume_timer, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void consume_all_once_across_pause_and_finish_out_of_order(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    static consume_state_t st;
    consume_state_init(&st, &loop, true);
    assert_non_null(consumer_start(&loop, &st, GROUP, "cooperative-sticky"));
    assert_true(run_until(&loop, received_all, &st, 20000));
    assert_int_equal(st.pauses, 2);
    assert_int_equal(st.assigned, PARTITIONS);
    for (int i = 0; i < N_MSGS; i++)
        assert_int_equal(st.seen[i], 1);
    assert_int_equal(st.bad_headers, 0);
    assert_int_equal(st.late_while_paused, 0);
    /* nothing more arrives */
    count_wait_t more = {.st = &st, .want = N_MSGS + 1};
    assert_false(run_until(&loop, received_n, &more, 300));
    kafka_consumer_stats_t stats;
    kafka_consumer_get_stats(st.c, &stats);
    assert_int_equal(stats.messages, N_MSGS);
    assert_int_equal(stats.outstanding, N_MSGS);
    assert_int_equal(stats.paused, 0);

    /* per partition, leave the middle message unfinished and finish the rest newest first */
    qsort(st.held, (size_t)st.n_held, sizeof(st.held[0]), cmp_msg_offset);
    kafka_message_t *keep[PARTITIONS] = {0};
    int start = 0;
    for (int p = 0; p < PARTITIONS; p++) {
        int end = start;
        while (end < st.n_held && st.held[end]->partition == p)
            end++;
        if (end > start) {
            keep[p] = st.held[start + (end - start) / 2];
            cluster.unfinished[p] = keep[p]->offset;
            cluster.end[p] = st.held[end - 1]->offset + 1;
            assert_int_equal(st.held[start]->offset, 0);
        }
        start = end;
    }
    for (int k = st.n_held - 1; k >= 0; k--) {
        kafka_message_t *m = st.held[k];
        if (m != keep[m->partition])
            kafka_message_done(m, true);
    }
    kafka_partition_info_t info[PARTITIONS];
    assert_int_equal(kafka_consumer_partitions(st.c, info, PARTITIONS), PARTITIONS);
    for (int k = 0; k < PARTITIONS; k++) {
        int p = info[k].partition;
        assert_int_equal(info[k].committable, keep[p] ? keep[p]->offset : cluster.end[p]);
        assert_int_equal(info[k].held, keep[p] ? 1 : 0);
    }
    /* shutdown: stop, abandon the unfinished ones, close (commits the stored offsets) */
    kafka_consumer_stop_consuming(st.c);
    for (int p = 0; p < PARTITIONS; p++)
        if (keep[p])
            kafka_message_done(keep[p], false);
    close_consumer(&loop, &st);

    int64_t committed[PARTITIONS];
    committed_offsets(GROUP, committed);
    for (int p = 0; p < PARTITIONS; p++)
        if (cluster.unfinished[p] >= 0)
            assert_int_equal(committed[p], cluster.unfinished[p]);
}

typedef struct {
    consume_state_t *a, *b;
} pair_t;

static bool both_assigned_after_revoke(void *arg)
{
    pair_t *pr = arg;
    return pr->a->revoked > 0 && pr->b->assigned > 0;
}

static bool revoke_seen(void *arg) { return ((pair_t *)arg)->a->revoked > 0; }

typedef struct {
    kafka_consumer_t *c;
    kafka_consumer_stats_t before;
} commit_wait_t;

static bool committed_since(void *arg)
{
    commit_wait_t *w = arg;
    kafka_consumer_stats_t now;
    kafka_consumer_get_stats(w->c, &now);
    return now.commits > w->before.commits;
}

static void restart_resumes_at_first_unfinished_and_revoke_waits(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    static consume_state_t a, b;
    consume_state_init(&a, &loop, false);
    consume_state_init(&b, &loop, false);
    int want = 0;
    for (int p = 0; p < PARTITIONS; p++)
        if (cluster.unfinished[p] >= 0)
            want += (int)(cluster.end[p] - cluster.unfinished[p]);
    assert_true(want > 0);
    assert_non_null(consumer_start(&loop, &a, GROUP, "cooperative-sticky"));
    count_wait_t w = {.st = &a, .want = want};
    assert_true(run_until(&loop, received_n, &w, 20000));
    for (int p = 0; p < PARTITIONS; p++)
        if (cluster.unfinished[p] >= 0)
            assert_int_equal(a.first_offset[p], cluster.unfinished[p]);
    assert_int_equal(a.received, want);

    /* a second member joins while a holds every message: a's revoke waits for them */
    assert_non_null(consumer_start(&loop, &b, GROUP, "cooperative-sticky"));
    pair_t pr = {&a, &b};
    assert_true(run_until(&loop, revoke_seen, &pr, 20000));
    assert_false(a.lost);
    kafka_partition_info_t info[PARTITIONS];
    size_t n = kafka_consumer_partitions(a.c, info, PARTITIONS);
    int revoking = 0;
    for (size_t k = 0; k < n && k < PARTITIONS; k++)
        revoking += info[k].revoking;
    assert_true(revoking > 0);
    assert_int_equal(b.assigned, 0); /* not until a lets go */
    for (int k = 0; k < a.n_held; k++)
        kafka_message_done(a.held[k], true);
    a.n_held = 0;
    assert_true(run_until(&loop, both_assigned_after_revoke, &pr, 20000));
    n = kafka_consumer_partitions(a.c, info, PARTITIONS);
    assert_int_equal(n + (size_t)b.assigned, PARTITIONS);
    assert_int_equal(b.received, 0); /* everything was committed */
    /* the mock broker refuses commits while the group rebalances (REBALANCE_IN_PROGRESS): give a's
     * auto-commit a chance to commit its kept partitions now that the group is stable again */
    commit_wait_t cw = {.c = a.c};
    kafka_consumer_get_stats(a.c, &cw.before);
    run_until(&loop, committed_since, &cw, 3000);

    kafka_consumer_stop_consuming(a.c);
    kafka_consumer_stop_consuming(b.c);
    /* one after the other: a member leaving starts a rebalance, and the mock broker refuses commits
     * during one (REBALANCE_IN_PROGRESS), which would leave a's last offsets uncommitted */
    bool closed_a = false, closed_b = false;
    kafka_consumer_close(a.c, set_flag, &closed_a);
    assert_true(run_until(&loop, flag_set, &closed_a, 10000));
    kafka_consumer_close(b.c, set_flag, &closed_b);
    assert_true(run_until(&loop, flag_set, &closed_b, 10000));
    uv_close((uv_handle_t *)&a.resume_timer, NULL);
    uv_close((uv_handle_t *)&b.resume_timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);

    int64_t committed[PARTITIONS];
    committed_offsets(GROUP, committed);
    for (int p = 0; p < PARTITIONS; p++)
        if (cluster.end[p] >= 0)
            assert_int_equal(committed[p], cluster.end[p]);
}

/* An eager strategy (range): assign and revoke replace the whole assignment. */
static void eager_strategy_consumes_and_commits_everything(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    static consume_state_t st;
    consume_state_init(&st, &loop, false);
    assert_non_null(consumer_start(&loop, &st, "g-eager", "range"));
    assert_true(run_until(&loop, received_all, &st, 20000));
    assert_int_equal(st.assigned, PARTITIONS);
    for (int i = 0; i < N_MSGS; i++)
        assert_int_equal(st.seen[i], 1);
    for (int k = 0; k < st.n_held; k++)
        kafka_message_done(st.held[k], true);
    close_consumer(&loop, &st);
    assert_int_equal(st.revoked, PARTITIONS);
    int64_t committed[PARTITIONS];
    committed_offsets("g-eager", committed);
    for (int p = 0; p < PARTITIONS; p++)
        if (cluster.end[p] >= 0)
            assert_int_equal(committed[p], cluster.end[p]);
}

/* ---- the gate ---- */

#define GATE_MSGS           2000
#define GATE_PRODUCED_FIRST 200
#define BIG_MSGS            20000
#define BIG_SIZE            1024
#define BIG_MAX_MESSAGE     (256 * 1024) /* prefetch bound: about 2 x (256 + 64) KiB per partition */

typedef struct {
    uv_loop_t *loop;
    kafka_consumer_t *c;
    int *seen; /* per message index, shared by the members of a group */
    int n_msgs;
    int64_t last[BIG_PARTITIONS]; /* last offset handed over per partition, -1 none */
    int received;
    int disorder; /* an offset not above the last one of its partition */
    int while_closed;
    bool closed;     /* the test closed the gate */
    int close_at;    /* pause_all from inside on_message at this count (0 = never) */
    int close_every; /* likewise at every multiple of it (0 = never) */
    bool finish;     /* hand each message back at once */
    kafka_message_t *held[64];
    int n_held;
    int64_t resumed_at; /* ms; the first message after it sets first_latency */
    int64_t first_latency;
    int assigned, revoked, errors;
    bool lost;
} gate_state_t;

static void gate_close(gate_state_t *st)
{
    kafka_consumer_pause_all(st->c);
    st->closed = true;
}

static void gate_open(gate_state_t *st)
{
    st->closed = false;
    st->resumed_at = base_mono_ms();
    st->first_latency = -1;
    kafka_consumer_resume_all(st->c);
}

/* The index a gate test message carries. */
static long gate_index(const kafka_message_t *m)
{
    char buf[16] = {0};
    memcpy(buf, m->value, m->value_len < sizeof(buf) - 1 ? m->value_len : sizeof(buf) - 1);
    return strtol(buf, NULL, 10);
}

static void gate_on_message(void *ctx, kafka_message_t *m)
{
    gate_state_t *st = ctx;
    long i = gate_index(m);
    assert_true(i >= 0 && i < st->n_msgs);
    assert_true(m->partition >= 0 && m->partition < BIG_PARTITIONS);
    st->seen[i]++;
    st->received++;
    if (st->closed)
        st->while_closed++;
    if (m->offset <= st->last[m->partition])
        st->disorder++;
    st->last[m->partition] = m->offset;
    if (st->resumed_at > 0 && st->first_latency < 0)
        st->first_latency = base_mono_ms() - st->resumed_at;
    if (st->finish)
        kafka_message_done(m, true);
    else if (st->n_held < (int)BASE_ARRAY_LEN(st->held))
        st->held[st->n_held++] = m;
    else
        fail_msg("more messages held than the test expects");
    if (st->received == st->close_at || (st->close_every && st->received % st->close_every == 0))
        gate_close(st);
}

static void gate_on_assign(void *ctx, const kafka_tp_t *parts, size_t n)
{
    ((gate_state_t *)ctx)->assigned += (int)n;
}

static void gate_on_revoke(void *ctx, const kafka_tp_t *parts, size_t n, bool lost)
{
    gate_state_t *st = ctx;
    st->revoked += (int)n;
    st->lost = st->lost || lost;
}

static void gate_on_error(void *ctx, bool fatal, int code, const char *text)
{
    ((gate_state_t *)ctx)->errors++;
}

static void gate_state_init(gate_state_t *st, uv_loop_t *loop, int *seen, int n_msgs)
{
    memset(st, 0, sizeof(*st));
    st->loop = loop;
    st->seen = seen;
    st->n_msgs = n_msgs;
    st->first_latency = -1;
    for (int p = 0; p < BIG_PARTITIONS; p++)
        st->last[p] = -1;
}

/* A consumer of topic whose gate is closed before it joins (as the worker starts). */
static kafka_consumer_t *gate_consumer_start(gate_state_t *st, const char *topic, const char *group,
                                             int64_t max_message_bytes, const config_kv_t *props,
                                             size_t n_props)
{
    char err[512];
    const char *topics[] = {topic};
    kafka_consumer_options_t o = {.brokers = cluster.brokers,
                                  .group_id = group,
                                  .topics = topics,
                                  .n_topics = 1,
                                  .properties = props,
                                  .n_properties = n_props,
                                  .max_message_bytes = max_message_bytes,
                                  .drain_timeout_ms = 5000,
                                  .close_timeout_ms = 5000};
    kafka_consumer_callbacks_t cbs = {.ctx = st,
                                      .on_message = gate_on_message,
                                      .on_assign = gate_on_assign,
                                      .on_revoke = gate_on_revoke,
                                      .on_error = gate_on_error};
    st->c = kafka_consumer_new(st->loop, &o, &cbs, err, sizeof(err));
    if (!st->c)
        fprintf(stderr, "consumer: %s\n", err);
    else
        gate_close(st);
    return st->c;
}

static const config_kv_t gate_props[] = {{"session.timeout.ms", "6000"}, {"heartbeat.interval.ms", "500"}};

static bool gate_assigned(void *arg) { return ((gate_state_t *)arg)->assigned > 0; }

static bool gate_first_after_resume(void *arg) { return ((gate_state_t *)arg)->first_latency >= 0; }

typedef struct {
    gate_state_t *st;
    int want;
} gate_wait_t;

static bool gate_received_n(void *arg)
{
    gate_wait_t *w = arg;
    return w->st->received >= w->want;
}

/* Runs the loop for ms whatever happens. */
static bool never(void *arg) { return false; }
static void run_for(uv_loop_t *loop, int64_t ms) { run_until(loop, never, NULL, ms); }

static void gate_consumer_close(gate_state_t *st)
{
    bool closed = false;
    kafka_consumer_stop_consuming(st->c);
    for (int k = 0; k < st->n_held; k++)
        kafka_message_done(st->held[k], true);
    st->n_held = 0;
    kafka_consumer_close(st->c, set_flag, &closed);
    assert_true(run_until(st->loop, flag_set, &closed, 10000));
}

/* Each of the n messages was handed over exactly once. */
static void assert_each_once(const int *seen, int n)
{
    int missing = 0, extra = 0;
    for (int i = 0; i < n; i++) {
        missing += seen[i] == 0;
        extra += seen[i] > 1;
    }
    assert_int_equal(missing, 0);
    assert_int_equal(extra, 0);
}

typedef struct {
    kafka_producer_t *p;
    const char *topic;
    int from, n, produced, size, per_tick; /* messages from..n-1; produced counts from 0 */
    bool keyed;                            /* key "k<index>", spreading the messages over the partitions */
    int reports, errors;
    uv_timer_t timer;
} feed_t;

static void on_feed_delivery(void *ctx, const kafka_delivery_t *d)
{
    feed_t *f = ctx;
    f->reports++;
    f->errors += d->err != 0;
}

/* Produces per_tick messages (value: the index, padded to size bytes with spaces). */
static void feed_tick(uv_timer_t *t)
{
    feed_t *f = t->data;
    static char value[BIG_SIZE];
    for (int k = 0; k < f->per_tick && f->from + f->produced < f->n; k++, f->produced++) {
        int len = snprintf(value, sizeof(value), "%d", f->from + f->produced);
        if (f->size > len)
            memset(value + len, ' ', (size_t)(f->size - len));
        size_t vlen = (size_t)(f->size > len ? f->size : len);
        char key[16];
        int klen = snprintf(key, sizeof(key), "k%d", f->from + f->produced);
        assert_int_equal(kafka_produce(f->p, f->topic, f->keyed ? key : NULL, f->keyed ? (size_t)klen : 0,
                                       value, vlen, NULL, 0, on_feed_delivery, f),
                         0);
    }
    if (f->from + f->produced == f->n)
        uv_timer_stop(t);
}

static void feed_start(feed_t *f, uv_loop_t *loop, const char *topic, int from, int n, int size, bool keyed,
                       int per_tick, uint64_t every_ms)
{
    char err[512];
    memset(f, 0, sizeof(*f));
    kafka_producer_options_t po = {.brokers = cluster.brokers};
    f->p = kafka_producer_new(loop, &po, err, sizeof(err));
    assert_non_null(f->p);
    f->topic = topic;
    f->from = from;
    f->n = n;
    f->size = size;
    f->keyed = keyed;
    f->per_tick = per_tick;
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    uv_timer_start(&f->timer, feed_tick, 0, every_ms);
}

static bool feed_reported(void *arg)
{
    feed_t *f = arg;
    return f->reports == f->n - f->from;
}

static void feed_close(feed_t *f, uv_loop_t *loop)
{
    bool closed = false;
    assert_true(run_until(loop, feed_reported, f, 30000));
    assert_int_equal(f->errors, 0);
    kafka_producer_close(f->p, 2000, set_flag, &closed);
    assert_true(run_until(loop, flag_set, &closed, 5000));
    uv_close((uv_handle_t *)&f->timer, NULL);
}

typedef struct {
    gate_state_t *st;
    int closes;
} toggle_t;

/* Closes or opens the gate in turn; after 20 closes it only opens (after a close from on_message). */
static void on_toggle(uv_timer_t *t)
{
    toggle_t *tg = t->data;
    if (tg->st->closed) {
        gate_open(tg->st);
    } else if (tg->closes < 20) {
        gate_close(tg->st);
        tg->closes++;
    }
}

/* 200 messages wait, then the gate stays closed for 1 s while more are produced: nothing comes; opened:
 * the first message within 100 ms;
 * then 20 close/open cycles of 40 ms each way (plus closes from inside on_message) while the rest flows:
 * every message exactly once, in offset order, none while the gate is closed. */
static void gate_cycles_deliver_each_message_once_in_order(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    static feed_t first, feed;
    feed_start(&first, &loop, "gate", 0, GATE_PRODUCED_FIRST, 0, false, GATE_PRODUCED_FIRST, 1);
    feed_close(&first, &loop); /* so that messages certainly wait behind the gate when it opens */
    static gate_state_t st;
    static int seen[GATE_MSGS];
    memset(seen, 0, sizeof(seen));
    gate_state_init(&st, &loop, seen, GATE_MSGS);
    st.finish = true;
    assert_non_null(gate_consumer_start(&st, "gate", "g-gate", 0, gate_props, BASE_ARRAY_LEN(gate_props)));
    assert_true(kafka_consumer_paused(st.c));
    assert_true(run_until(&loop, gate_assigned, &st, 20000));
    kafka_consumer_stats_t stats;
    kafka_consumer_get_stats(st.c, &stats);
    assert_int_equal(stats.assigned, PARTITIONS);
    assert_int_equal(stats.paused, PARTITIONS);

    feed_start(&feed, &loop, "gate", GATE_PRODUCED_FIRST, GATE_MSGS, 0, false, 5, 10); /* 500 a second */
    run_for(&loop, 1000);
    assert_true(feed.reports > 0);
    assert_int_equal(st.received, 0);

    gate_open(&st);
    assert_false(kafka_consumer_paused(st.c));
    assert_true(run_until(&loop, gate_first_after_resume, &st, 2000));
    assert_in_range(st.first_latency, 0, 100);

    st.close_every = 97;
    static toggle_t tg;
    tg = (toggle_t){.st = &st};
    uv_timer_t toggler;
    uv_timer_init(&loop, &toggler);
    toggler.data = &tg;
    uv_timer_start(&toggler, on_toggle, 40, 40);
    gate_wait_t all = {.st = &st, .want = GATE_MSGS};
    assert_true(run_until(&loop, gate_received_n, &all, 30000));
    assert_int_equal(tg.closes, 20);
    assert_true(feed.from + feed.produced == GATE_MSGS);
    feed_close(&feed, &loop);
    uv_close((uv_handle_t *)&toggler, NULL);
    if (st.closed)
        gate_open(&st);
    run_for(&loop, 300); /* nothing more comes */

    assert_int_equal(st.received, GATE_MSGS);
    assert_each_once(seen, GATE_MSGS);
    assert_int_equal(st.disorder, 0);
    assert_int_equal(st.while_closed, 0);
    int64_t total = 0;
    for (int p = 0; p < PARTITIONS; p++)
        total += st.last[p] + 1; /* offsets 0..last, no gap */
    assert_int_equal(total, GATE_MSGS);
    assert_int_equal(st.errors, 0);
    gate_consumer_close(&st);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Present when the sanitizers' allocator replaces malloc (mallinfo2 then says nothing). */
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

/* Bytes malloc has handed out and not got back (0 when malloc does not say). */
static size_t heap_bytes(void)
{
    if (__sanitizer_get_current_allocated_bytes)
        return __sanitizer_get_current_allocated_bytes();
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* The process's memory: the heap in use (the allocator's own count, not blurred by what its arenas
 * keep), or the RSS where the allocator does not tell. */
static size_t mem_bytes(void)
{
    size_t heap = heap_bytes();
    return heap ? heap : rss_bytes();
}

typedef struct {
    size_t peak;
} mem_probe_t;

static void on_mem_probe(uv_timer_t *t)
{
    mem_probe_t *r = t->data;
    size_t now = mem_bytes();
    if (now > r->peak)
        r->peak = now;
}

/* 20,000 messages of 1 KiB wait in 5 partitions; behind a closed gate librdkafka prefetches only up to
 * its per-partition bound (with max_message_bytes 256 KiB the memory grows less than 8 MiB; without the
 * bound, librdkafka's defaults, the whole 20 MiB backlog comes in); opened, everything flows, exactly
 * once and in order. */
static void gate_closed_prefetch_stays_bounded(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    static feed_t feed;
    feed_start(&feed, &loop, "big", 0, BIG_MSGS, BIG_SIZE, true, 1000, 1);
    feed_close(&feed, &loop);
    run_for(&loop, 200);
    size_t baseline = mem_bytes();

    static gate_state_t st;
    static int seen[BIG_MSGS];
    memset(seen, 0, sizeof(seen));
    gate_state_init(&st, &loop, seen, BIG_MSGS);
    st.finish = true;
    assert_non_null(
        gate_consumer_start(&st, "big", "g-big", BIG_MAX_MESSAGE, gate_props, BASE_ARRAY_LEN(gate_props)));
    static mem_probe_t probe;
    probe.peak = baseline;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &probe;
    uv_timer_start(&t, on_mem_probe, 50, 50);
    assert_true(run_until(&loop, gate_assigned, &st, 20000));
    run_for(&loop, 3000);
    uv_timer_stop(&t);
    fprintf(stderr, "prefetch behind a closed gate: %s grew by %zu KiB at most\n",
            heap_bytes() ? "heap in use" : "RSS", (probe.peak - baseline) / 1024);
    assert_int_equal(st.received, 0);
    assert_true(probe.peak - baseline < 8u * 1024 * 1024);

    int64_t t0 = base_mono_ms();
    gate_open(&st);
    gate_wait_t all = {.st = &st, .want = BIG_MSGS};
    assert_true(run_until(&loop, gate_received_n, &all, 20000));
    fprintf(stderr, "%d messages handed over in %lld ms once the gate opened\n", BIG_MSGS,
            (long long)(base_mono_ms() - t0));
    assert_each_once(seen, BIG_MSGS);
    assert_int_equal(st.disorder, 0);
    assert_int_equal(st.errors, 0);
    uv_close((uv_handle_t *)&t, NULL);
    gate_consumer_close(&st);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

typedef struct {
    gate_state_t *a, *b;
} gate_pair_t;

static bool gate_a_revoked(void *arg) { return ((gate_pair_t *)arg)->a->revoked > 0; }

static bool gate_b_assigned(void *arg) { return ((gate_pair_t *)arg)->b->assigned > 0; }

static bool gate_all_seen(void *arg)
{
    gate_pair_t *pr = arg;
    return pr->a->received + pr->b->received >= GATE_MSGS;
}

/* Member a takes 30 messages and closes its gate from inside on_message (nothing more comes); with a
 * short max.poll.interval.ms, a second member joins: a's revoke waits for the 30, then completes, and b
 * gets its partitions, all while a's gate stays closed for longer than max.poll.interval.ms (a is not
 * evicted). Opened, a hands over the rest of its partitions: every message exactly once across both,
 * except that b may get again some of a's 30 (the mock broker refuses the revoke's commit when the
 * group is already rebalancing again: at-least-once). */
static void gate_closed_member_rebalances_and_stays_in_the_group(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    static gate_state_t a, b;
    static int seen[GATE_MSGS];
    memset(seen, 0, sizeof(seen));
    gate_state_init(&a, &loop, seen, GATE_MSGS);
    gate_state_init(&b, &loop, seen, GATE_MSGS);
    b.finish = true;
    a.close_at = 30;
    /* no auto-commit: its results would wake the loop every second; commits come on revoke and close */
    const config_kv_t props[] = {{"session.timeout.ms", "3000"},
                                 {"heartbeat.interval.ms", "300"},
                                 {"max.poll.interval.ms", "3000"},
                                 {"enable.auto.commit", "false"}};
    assert_non_null(gate_consumer_start(&a, "gate", "g-gate-rebalance", 0, props, BASE_ARRAY_LEN(props)));
    gate_open(&a);
    gate_wait_t w = {.st = &a, .want = 30};
    assert_true(run_until(&loop, gate_received_n, &w, 20000));
    assert_true(a.closed);
    run_for(&loop, 200);
    assert_int_equal(a.received, 30); /* nothing after the pause_all made in on_message */

    assert_non_null(gate_consumer_start(&b, "gate", "g-gate-rebalance", 0, props, BASE_ARRAY_LEN(props)));
    gate_open(&b);
    gate_pair_t pr = {&a, &b};
    assert_true(run_until(&loop, gate_a_revoked, &pr, 20000));
    assert_int_equal(b.assigned, 0); /* a still holds its 30 */
    static bool first30[GATE_MSGS];
    memset(first30, 0, sizeof(first30));
    for (int k = 0; k < a.n_held; k++) {
        first30[gate_index(a.held[k])] = true;
        kafka_message_done(a.held[k], true);
    }
    a.n_held = 0;
    assert_true(run_until(&loop, gate_b_assigned, &pr, 20000));
    run_for(&loop, 4000); /* quiet, a's gate closed, for longer than max.poll.interval.ms */
    assert_int_equal(a.received, 30);
    assert_false(a.lost);
    assert_int_equal(a.errors, 0);
    kafka_consumer_stats_t stats;
    kafka_consumer_get_stats(a.c, &stats);
    assert_int_equal(stats.assigned + (size_t)b.assigned, PARTITIONS);
    assert_int_equal(stats.paused, stats.assigned);

    a.finish = true;
    gate_open(&a);
    assert_true(run_until(&loop, gate_all_seen, &pr, 20000));
    run_for(&loop, 300);
    int again = 0;
    for (int i = 0; i < GATE_MSGS; i++)
        if (first30[i] && seen[i] == 2) {
            seen[i] = 1;
            again++;
        }
    if (again)
        fprintf(stderr, "%d of a's first 30 messages redelivered to b (revoke commit refused)\n", again);
    assert_each_once(seen, GATE_MSGS);
    assert_int_equal(a.disorder + b.disorder, 0);
    assert_int_equal(a.while_closed, 0);
    assert_false(b.lost);
    assert_int_equal(b.errors, 0);
    gate_consumer_close(&a);
    gate_consumer_close(&b);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    log_setup(getenv("KAFKA_TEST_DEBUG") ? LOG_DEBUG : LOG_WARN, LOG_FORMAT_TEXT, stderr);
    /* one group, so that the runner's summary (the last PASSED line) counts every test; the pure ones
     * come first and do not use the cluster */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(offsets_commit_only_the_finished_prefix),
        cmocka_unit_test(offsets_large_shuffled),
        cmocka_unit_test(bad_properties_name_the_key_not_the_value),
        cmocka_unit_test(produce_delivers_reports_on_the_loop),
        cmocka_unit_test(produce_waits_when_the_local_queue_is_full),
        cmocka_unit_test(producer_close_reports_what_it_could_not_deliver),
        cmocka_unit_test(consume_all_once_across_pause_and_finish_out_of_order),
        cmocka_unit_test(restart_resumes_at_first_unfinished_and_revoke_waits),
        cmocka_unit_test(eager_strategy_consumes_and_commits_everything),
        cmocka_unit_test(gate_cycles_deliver_each_message_once_in_order),
        cmocka_unit_test(gate_closed_prefetch_stays_bounded),
        cmocka_unit_test(gate_closed_member_rebalances_and_stays_in_the_group),
    };
    return cmocka_run_group_tests_name("kafka", tests, cluster_setup, cluster_teardown);
}

/* kreply.c — reads a reply topic from its end with partitions assigned by hand (no consumer group). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "replay/replay_int.h"

#define KREPLY_POLL_MS  10
#define KREPLY_SETUP_MS 10000

struct replay_kreply {
    rd_kafka_t *rk;
    uv_timer_t timer;
    replay_kreply_cb cb;
    void *ctx;
};

void replay_run_id(char *out, size_t outlen)
{
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)base_mono_ns();
    snprintf(out, outlen, "%08x", (unsigned)rand_r(&seed) ^ (unsigned)base_mono_ns());
}

static void on_poll(uv_timer_t *t)
{
    replay_kreply_t *k = t->data;
    rd_kafka_message_t *m;
    while ((m = rd_kafka_consumer_poll(k->rk, 0)) != NULL) {
        if (!m->err && m->payload)
            k->cb(k->ctx, m->payload, m->len);
        rd_kafka_message_destroy(m);
    }
}

/* Sets bootstrap.servers and kafka.properties (consumer-side keys librdkafka refuses are skipped). */
static rd_kafka_conf_t *make_conf(const config_t *cfg, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char e[256];
    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->kafka.brokers, e, sizeof e) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof e) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", "parley-replay-nogroup", e, sizeof e) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka config: %s", e);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    for (size_t i = 0; i < cfg->kafka.n_properties; i++)
        rd_kafka_conf_set(conf, cfg->kafka.properties[i].key, cfg->kafka.properties[i].value, e, sizeof e);
    return conf;
}

/* Assigns every partition of topic at its high watermark. 0, or -1 and err. */
static int assign_end(rd_kafka_t *rk, const char *topic, char *err, size_t errlen)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    int rc = -1;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, KREPLY_SETUP_MS);
    if (e || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt < 1) {
        snprintf(err, errlen, "reply topic %s: %s", topic,
                 e                                         ? rd_kafka_err2str(e)
                 : md->topic_cnt == 1 && md->topics[0].err ? rd_kafka_err2str(md->topics[0].err)
                                                           : "no partitions");
        goto out;
    }
    parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++) {
        int32_t p = md->topics[0].partitions[i].id;
        int64_t lo = 0, hi = 0;
        e = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, KREPLY_SETUP_MS);
        if (e) {
            snprintf(err, errlen, "reply topic %s [%d]: %s", topic, (int)p, rd_kafka_err2str(e));
            goto out;
        }
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = hi;
    }
    e = rd_kafka_assign(rk, parts);
    if (e) {
        snprintf(err, errlen, "assign %s: %s", topic, rd_kafka_err2str(e));
        goto out;
    }
    rc = 0;
out:
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return rc;
}

replay_kreply_t *replay_kreply_new(uv_loop_t *loop, const config_t *cfg, const char *topic,
                                   replay_kreply_cb cb, void *ctx, char *err, size_t errlen)
{
    replay_kreply_t *k = base_calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rd_kafka_conf_t *conf = make_conf(cfg, err, errlen);
    char e[256];
    if (!conf)
        goto fail;
    k->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
    if (!k->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka consumer: %s", e);
        goto fail;
    }
    rd_kafka_poll_set_consumer(k->rk);
    if (assign_end(k->rk, topic, err, errlen) != 0)
        goto fail;
    k->cb = cb;
    k->ctx = ctx;
    uv_timer_init(loop, &k->timer);
    k->timer.data = k;
    uv_timer_start(&k->timer, on_poll, KREPLY_POLL_MS, KREPLY_POLL_MS);
    return k;
fail:
    if (k->rk)
        rd_kafka_destroy(k->rk);
    free(k);
    return NULL;
}

static void on_timer_closed(uv_handle_t *h)
{
    replay_kreply_t *k = h->data;
    rd_kafka_destroy_flags(k->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    free(k);
}

void replay_kreply_free(replay_kreply_t *k)
{
    if (!k)
        return;
    uv_timer_stop(&k->timer);
    uv_close((uv_handle_t *)&k->timer, on_timer_closed);
}

/* broker.c — the Kafka-protocol broker of the dev stack: librdkafka's mock cluster, which runs on
 * its own threads inside a dummy producer handle. librdkafka 2.0.2 chooses the listening ports
 * itself (127.0.0.1, ephemeral); a fixed port cannot be asked for. */
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "dev/dev.h"

struct dev_broker {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *cluster;
};

dev_broker_t *dev_broker_new(int n_brokers, char *err, size_t errlen)
{
    if (n_brokers < 1 || n_brokers > 16) {
        snprintf(err, errlen, "broker count must be 1..16, not %d", n_brokers);
        return NULL;
    }
    dev_broker_t *b = base_calloc(1, sizeof *b);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char kerr[256];
    if (!b || !conf) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* The dummy handle only hosts the cluster; keep it quiet. */
    if (rd_kafka_conf_set(conf, "log_level", "3", kerr, sizeof kerr) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "mock broker: %s", kerr);
        goto fail;
    }
    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof kerr);
    if (!b->rk) {
        snprintf(err, errlen, "mock broker: %s", kerr);
        goto fail;
    }
    conf = NULL;
    b->cluster = rd_kafka_mock_cluster_new(b->rk, n_brokers);
    if (!b->cluster) {
        snprintf(err, errlen, "mock broker: could not start the mock cluster");
        goto fail;
    }
    return b;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    dev_broker_free(b);
    return NULL;
}

int dev_broker_topic_create(dev_broker_t *b, const char *topic, int partitions, char *err, size_t errlen)
{
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(b->cluster, topic, partitions, 1);
    if (e) {
        snprintf(err, errlen, "create topic %s (%d partitions): %s", topic, partitions, rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

const char *dev_broker_bootstraps(const dev_broker_t *b)
{
    return rd_kafka_mock_cluster_bootstraps(b->cluster);
}

rd_kafka_mock_cluster_t *dev_broker_cluster(dev_broker_t *b) { return b->cluster; }

void dev_broker_free(dev_broker_t *b)
{
    if (!b)
        return;
    if (b->cluster)
        rd_kafka_mock_cluster_destroy(b->cluster);
    if (b->rk)
        rd_kafka_destroy(b->rk);
    free(b);
}

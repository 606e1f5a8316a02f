/* client.h — private to kafka/: what the consumer and the producer share (configuration with the
 * kafka.properties passthrough, librdkafka logs into log/, the wake-up pipe of a queue, and
 * rd_kafka_destroy on the thread pool). Other modules include kafka/kafka.h only. */
#ifndef PARLEY_KAFKA_CLIENT_H
#define PARLEY_KAFKA_CLIENT_H

#include <librdkafka/rdkafka.h>
#include <uv.h>

#include "kafka/kafka.h"

typedef enum { KAFKA_SCOPE_CONSUMER = 0, KAFKA_SCOPE_PRODUCER } kafka_scope_t;

/* A configuration with parley's defaults, then every kafka.properties entry that applies to scope
 * ("consumer."/"producer." prefixes select one side; keys librdkafka only knows for the other side are
 * skipped). NULL on error, with a message naming the key but never its value. */
rd_kafka_conf_t *kafka_conf_new(kafka_scope_t scope, const config_kv_t *defaults, size_t n_defaults,
                                const config_kv_t *props, size_t n_props, char *err, size_t errlen);
/* The value props would give key in scope (after prefix selection), or NULL. */
const char *kafka_prop_find(kafka_scope_t scope, const config_kv_t *props, size_t n_props, const char *key);

/* The read end of a non-blocking pipe that librdkafka writes one byte to when the queue becomes
 * non-empty, watched by poll (whose data is the owner). */
typedef struct {
    uv_poll_t poll;
    int rfd;
    int wfd;
} kafka_wake_t;

int kafka_wake_init(kafka_wake_t *w, uv_loop_t *loop, rd_kafka_queue_t *q, uv_poll_cb cb, void *owner);
/* Empties the pipe; call before serving the queue. */
void kafka_wake_drain(kafka_wake_t *w);
/* Closes the pipe (after the handle is closed and librdkafka no longer writes to it). */
void kafka_wake_close_fds(kafka_wake_t *w);

/* rd_kafka_destroy_flags on the thread pool, then done(arg) on the loop. */
void kafka_destroy_async(uv_loop_t *loop, rd_kafka_t *rk, int flags, void (*done)(void *arg), void *arg);

#endif

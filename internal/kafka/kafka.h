/* kafka — the worker's two librdkafka clients on the libuv loop: the group consumer of the jobs topic
 * (rebalance, per-partition offset tracking, a gate for backpressure) and the producer of
 * replies and dead letters (delivery reports on the loop, retry on a full local queue).
 * It owns: the rd_kafka_t handles, the pipes that librdkafka writes to when a queue becomes
 * non-empty (watched by uv_poll, so the loop sleeps until Kafka has something), the offset tracker
 * of every assigned partition, and the consumed messages until the engine hands them back.
 * It never blocks the loop (no flush, no synchronous commit or close on it: rd_kafka_destroy runs
 * on the libuv thread pool), never commits an offset above an unfinished job, never interprets a
 * message's bytes, and never prints a kafka.properties value (they may be passwords).
 *
 * Offsets: enable.auto.offset.store is always false; when the lowest unfinished offset of a
 * partition advances, the consumer stores it (rd_kafka_offsets_store, "next offset to read"), and
 * librdkafka's auto-commit (enable.auto.commit=true, every auto.commit.interval.ms=1000) commits the
 * stored offsets; librdkafka also commits them when a partition is unassigned or the consumer
 * closes. With enable.auto.commit=false set in kafka.properties, the consumer commits
 * asynchronously on revoke and on close only.
 *
 * Prefetch: each assigned partition has its own librdkafka queue, so queued.min.messages (parley's
 * default 1000) and queued.max.messages.kbytes (default: fetch.message.max.bytes, i.e. max_message_bytes
 * + 64 KiB) bound what librdkafka holds per partition: about twice fetch.message.max.bytes (it may
 * overshoot by one fetch), so ~2 MiB per assigned partition with the 1 MiB default. kafka.properties may
 * override both; librdkafka refills a queue that reached its bound only when its broker thread next
 * wakes (up to 1 s later), so the bound should hold about a second of consumption. */
#ifndef PARLEY_KAFKA_H
#define PARLEY_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config/config.h"

/* ---- Offset tracker (pure; one per assigned partition) ------------------------------------------
 * The offsets a partition's jobs hold, in increasing order; the committable offset is the lowest one
 * still held, or the last finished + 1 when none is. track is amortised O(1), finish O(log n). */
typedef struct kafka_offsets kafka_offsets_t;

kafka_offsets_t *kafka_offsets_new(void);
void kafka_offsets_free(kafka_offsets_t *t);
/* 0 when taken; -1 when offset is not above every offset tracked so far (a redelivery: drop it);
 * -2 when out of memory. */
int kafka_offsets_track(kafka_offsets_t *t, int64_t offset);
/* 1 when the committable offset advanced, 0 when not, -1 when offset is not held. */
int kafka_offsets_finish(kafka_offsets_t *t, int64_t offset);
/* The offset to commit (the next one to read), or -1 before anything was tracked. */
int64_t kafka_offsets_committable(const kafka_offsets_t *t);
/* Offsets tracked and not yet finished. */
size_t kafka_offsets_held(const kafka_offsets_t *t);

/* ---- Shared types --------------------------------------------------------------------------------- */
typedef struct {
    const char *topic;
    int32_t partition;
} kafka_tp_t;

typedef struct {
    const char *name;
    const void *value;
    size_t value_len;
} kafka_header_t;

typedef void (*kafka_closed_cb)(void *ctx);

/* ---- Consumer -------------------------------------------------------------------------------------- */
typedef struct kafka_consumer kafka_consumer_t;

typedef struct {
    const char *brokers;       /* bootstrap.servers */
    const char *group_id;      /* group.id */
    const char *const *topics; /* subscribed topics */
    size_t n_topics;
    const config_kv_t *properties; /* kafka.properties, set after parley's defaults */
    size_t n_properties;
    int64_t max_message_bytes; /* sizes fetch.message.max.bytes (0 = 1 MiB) */
    int64_t drain_timeout_ms;  /* how long a revoke waits for the engine (0 = 30000) */
    int64_t close_timeout_ms;  /* bound on the group leave at close (0 = 10000) */
    const char *client_id;     /* client.id (NULL = "parley") */
} kafka_consumer_options_t;

/* A consumed message. The fields stay valid until kafka_message_done(); the value is librdkafka's
 * own buffer (no copy). */
typedef struct kafka_message {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key; /* NULL when the message has no key */
    size_t key_len;
    const void *value;
    size_t value_len;
    int64_t timestamp_ms; /* -1 when unknown */
} kafka_message_t;

typedef struct {
    void *ctx;
    /* The engine owns m until it calls kafka_message_done(m, ...). Required. */
    void (*on_message)(void *ctx, kafka_message_t *m);
    /* Partitions added to this member's assignment. Optional. */
    void (*on_assign)(void *ctx, const kafka_tp_t *parts, size_t n);
    /* Partitions leaving this member: no more of their messages will come. Unless lost, the consumer
     * lets them go (unassign) once every message of them is done, or after drain_timeout_ms.
     * lost: another member may own them already; their offsets are not committed. Optional. */
    void (*on_revoke)(void *ctx, const kafka_tp_t *parts, size_t n, bool lost);
    /* A client error (broker down, authentication...); fatal means the client is unusable. */
    void (*on_error)(void *ctx, bool fatal, int code, const char *text);
} kafka_consumer_callbacks_t;

typedef struct {
    uint64_t messages;   /* handed to on_message */
    uint64_t dropped;    /* consumed for a revoked or stopping partition, not handed over */
    uint64_t duplicates; /* redelivered at or below an offset already taken, not handed over */
    uint64_t rebalances;
    uint64_t commits; /* offset commits that succeeded */
    uint64_t commit_failures;
    size_t assigned;    /* partitions assigned now */
    size_t paused;      /* of which behind the closed gate (all, or none) */
    size_t outstanding; /* messages the engine holds */
} kafka_consumer_stats_t;

typedef struct {
    const char *topic;
    int32_t partition;
    int64_t committable;    /* next offset to commit, -1 when nothing consumed yet */
    size_t held;            /* unfinished jobs of this partition */
    int64_t high_watermark; /* last known end of the log, -1 when unknown */
    bool paused;            /* behind the closed gate */
    bool revoking;
} kafka_partition_info_t;

/* Creates the consumer and subscribes; messages flow once the group assigns partitions. NULL on error,
 * with a message in err naming the bad kafka.properties key (never its value). */
kafka_consumer_t *kafka_consumer_new(uv_loop_t *loop, const kafka_consumer_options_t *opts,
                                     const kafka_consumer_callbacks_t *cbs, char *err, size_t errlen);
/* Hands m back. finished: its job is published (or dead-lettered), so its offset may be committed once
 * every earlier one is; false: abandoned (revoked or stopping), its offset stays uncommitted. */
void kafka_message_done(kafka_message_t *m, bool finished);
/* The last header called name: 0 and value/len set, or -1 when absent. */
int kafka_message_header(const kafka_message_t *m, const char *name, const void **value, size_t *len);
size_t kafka_message_header_count(const kafka_message_t *m);
/* The i-th header, 0 or -1 when i is out of range. */
int kafka_message_header_at(const kafka_message_t *m, size_t i, kafka_header_t *h);

/* Backpressure, a gate rather than rd_kafka_pause_partitions (whose resume takes effect only when the
 * broker thread next wakes, up to a second later in librdkafka 2.0.2, and refetches what the pause
 * purged): pause_all closes the gate, and no message is handed to on_message after it returns (also when
 * called from inside on_message), for every partition assigned now or later. librdkafka keeps fetching
 * behind the gate until its prefetch bound per partition (see Prefetch above) and then stops by itself.
 * resume_all opens it: what waits is handed over from the next loop iteration, one partition after the
 * other, with no refetch. Rebalances, errors and commit results are served whether the gate is open or
 * closed, and the consumer polls at least every second, so max.poll.interval.ms is never exceeded by a
 * closed gate. A revoked or lost partition's waiting messages are dropped at its unassign (never handed
 * over, never committed). */
void kafka_consumer_pause_all(kafka_consumer_t *c);
void kafka_consumer_resume_all(kafka_consumer_t *c);
bool kafka_consumer_paused(const kafka_consumer_t *c);
/* Shutdown, step 1: close the gate for good (resume_all no longer opens it); later messages are not
 * committed. */
void kafka_consumer_stop_consuming(kafka_consumer_t *c);
/* Shutdown, step 2 (after the engine handed back its messages): commit, leave the group
 * (rd_kafka_consumer_close_queue, bounded by close_timeout_ms), destroy, free c, then cb(ctx). A
 * message still held is freed with an error log, so the engine must not touch it afterwards. */
void kafka_consumer_close(kafka_consumer_t *c, kafka_closed_cb cb, void *ctx);

void kafka_consumer_get_stats(const kafka_consumer_t *c, kafka_consumer_stats_t *out);
/* Fills up to max entries (topic points into c); returns the number of assigned partitions. */
size_t kafka_consumer_partitions(const kafka_consumer_t *c, kafka_partition_info_t *out, size_t max);

/* ---- Producer -------------------------------------------------------------------------------------- */
typedef struct kafka_producer kafka_producer_t;

typedef struct {
    const char *brokers;
    const config_kv_t *properties; /* the same kafka.properties; consumer-only keys are skipped */
    size_t n_properties;
    const char *client_id; /* NULL = "parley" */
} kafka_producer_options_t;

typedef struct {
    int err;           /* 0 = written; else an rd_kafka_resp_err_t */
    const char *error; /* "" when written */
    bool retriable;    /* a later kafka_produce of the same message may succeed */
    const char *topic;
    int32_t partition;
    int64_t offset; /* -1 when unknown */
} kafka_delivery_t;

/* Called exactly once per accepted message, on the loop, never from inside kafka_produce. */
typedef void (*kafka_delivery_cb)(void *ctx, const kafka_delivery_t *d);

/* Defaults: enable.idempotence=true, acks=all, linger.ms=5; kafka.properties override them. */
kafka_producer_t *kafka_producer_new(uv_loop_t *loop, const kafka_producer_options_t *opts, char *err,
                                     size_t errlen);
/* Copies topic, key, value and headers. 0 = accepted (cb will be called); -1 = not accepted, no
 * callback (out of memory, bad arguments, or the producer is closing). A full local queue is not an
 * error: the message waits in order and is retried from a timer. */
int kafka_produce(kafka_producer_t *p, const char *topic, const void *key, size_t key_len, const void *value,
                  size_t value_len, const kafka_header_t *headers, size_t n_headers, kafka_delivery_cb cb,
                  void *ctx);
/* Messages accepted whose delivery report has not been called yet. */
size_t kafka_producer_pending(const kafka_producer_t *p);
/* Waits on the loop (up to timeout_ms) for the pending deliveries, then purges what is left (their
 * callbacks get an error), destroys, frees p, then cb(ctx). */
void kafka_producer_close(kafka_producer_t *p, int64_t timeout_ms, kafka_closed_cb cb, void *ctx);

#endif

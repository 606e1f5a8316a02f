/* engine_int.h — private to the engine: the engine, a job's state, conversation queues. */
#ifndef PARLEY_ENGINE_INT_H
#define PARLEY_ENGINE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "admin/admin.h"
#include "config/config.h"
#include "http/http.h"
#include "job/job.h"
#include "kafka/kafka.h"
#include "limits/limits.h"
#include "metrics/metrics.h"
#include "router/router.h"
#include "store/store.h"

typedef struct engine engine_t;
typedef struct ejob ejob_t;

/* ---- conversation queues (conv.c) ---- */
typedef struct conv {
    char *id;
    size_t id_len;
    uint64_t hash;
    ejob_t *head; /* the running job; the others wait behind it in offset order */
    ejob_t *tail;
    struct conv *next_in_bucket;
} conv_t;

typedef struct {
    conv_t **buckets;
    size_t n_buckets;
    size_t count;
} conv_map_t;

int conv_map_init(conv_map_t *m);
void conv_map_free(conv_map_t *m);
/* Appends j to its conversation's queue; returns true when j is at the head (may start now), false
 * when it waits; -1 when out of memory. */
int conv_enqueue(conv_map_t *m, ejob_t *j, const char *id, size_t id_len);
/* Removes the head j; returns the next job of the conversation (to start), or NULL. */
ejob_t *conv_dequeue(conv_map_t *m, ejob_t *j);

/* ---- a job ---- */
typedef enum {
    STAGE_NEW = 0,
    STAGE_DEAD_LETTER, /* publishing the dead letter (and the error reply) */
    STAGE_QUEUED,      /* behind an earlier job of its conversation */
    STAGE_BEGIN,       /* idempotency check + history load in flight */
    STAGE_LLM,         /* providers called */
    STAGE_STORE,       /* MULTI/EXEC (or reply SET) in flight */
    STAGE_PUBLISH,     /* reply produced, waiting for its delivery report */
    STAGE_WAIT,        /* waiting to retry `retry_op` (Redis down, publish failed, out of memory) */
} ejob_stage_t;

typedef enum { OP_NONE = 0, OP_PARSE, OP_BEGIN, OP_COMMIT, OP_PUT, OP_PUBLISH } ejob_op_t;

struct ejob {
    engine_t *e;
    kafka_message_t *msg; /* NULL once handed back */
    job_t *job;           /* NULL for a dead letter */
    job_error_t perr;
    conv_t *conv; /* set while in a conversation queue */
    ejob_t *next_in_conv;
    ejob_t *prev, *next; /* the engine's list of every held job */
    ejob_stage_t stage;
    ejob_op_t retry_op;
    int64_t retry_at_ms;      /* when to retry retry_op */
    int64_t waiting_since_ms; /* first failure of the Redis operation now retried; 0 none */
    int retries;
    int awaiting; /* callbacks owed to this job by store or producer */
    bool abandoned;
    bool delivered;     /* the final's delivery report arrived */
    uint64_t delta_seq; /* next delta's seq; 0 again after a reset */
    const config_route_t *route;
    const char *reply_topic;
    int64_t received_ms, started_ms;
    job_timing_t timing;
    chat_message_t *prompt;
    size_t n_prompt;
    chat_message_t *history; /* owned copies of the stored entries */
    size_t n_history;
    router_call_t *call;
    job_status_t status; /* of the final reply being stored/published */
    bool store_reply;    /* the final is stored for idempotency */
    char *reply;
    size_t reply_len;
    char *user_entry, *assistant_entry;
    size_t user_entry_len, assistant_entry_len;
};

/* ---- the engine (worker.c) ---- */
typedef struct {
    metric_t *jobs[3][JOB_ERR_INTERNAL + 1]; /* by status and error code */
    metric_t *dead_letters;
    metric_t *replies;
    metric_t *republished;
    metric_t *in_flight;
    metric_t *paused;
    metric_t *redis_waits;
    metric_t *publish_retries;
    metric_t *stream_publish_failures;
    metric_t *stage_seconds[4]; /* history, llm, store, total */
    metric_t **attempts;        /* [provider][outcome] */
} engine_metrics_t;

struct engine {
    uv_loop_t loop;
    const config_t *cfg;
    job_limits_t job_limits;
    kafka_consumer_t *consumer;
    kafka_producer_t *producer;
    store_t *store;
    http_client_t *http;
    limits_t *limits;
    router_t *router;
    admin_t *admin;
    conv_map_t convs;
    ejob_t *jobs; /* every held job */
    size_t in_flight;
    size_t peak_in_flight;
    bool redis_up;
    bool paused;
    size_t assigned;
    uv_timer_t tick; /* retries, heartbeat */
    uv_timer_t drain_timer;
    uv_signal_t sigterm, sigint;
    int signals;
    bool draining;
    bool closing;
    int open_clients; /* clients whose close is still running */
    int exit_code;
    engine_metrics_t m;
};

/* job_flow.c */
void engine_on_message(void *ctx, kafka_message_t *m);
/* Starts a job that reached the head of its conversation's queue. */
void engine_job_start(ejob_t *j);
void engine_retry_due(engine_t *e, bool redis_came_up);
void engine_abandon_all(engine_t *e);
/* worker.c */
void engine_job_finished(engine_t *e, ejob_t *j);
void engine_update_backpressure(engine_t *e);

#endif

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
#define ENGINE_TRACEPARENT    56 /* "00-" 32 hex "-" 16 hex "-" 2 hex, NUL */
#define ENGINE_TRACESTATE_MAX 512
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
    job_error_t *perr;    /* why it is a dead letter; NULL while it is a valid job */
    conv_t *conv;         /* set while in a conversation queue */
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
    int64_t store_started_ms, publish_started_ms; /* 0 = stage not entered yet */
    char traceparent[ENGINE_TRACEPARENT]; /* the job's, or a new trace (observe.c engine_trace_init) */
    const char *tracestate;               /* into msg's headers, passed on only when valid; NULL none */
    size_t tracestate_len;
};

/* Frees the job's loaded history and its prompt (the router needs them only inside router_start). */
void job_prompt_release(ejob_t *j);

/* ---- the engine (worker.c) ---- */
typedef enum {
    STAGE_METRIC_QUEUED = 0,
    STAGE_METRIC_HISTORY,
    STAGE_METRIC_LLM,
    STAGE_METRIC_STORE,
    STAGE_METRIC_PUBLISH,
    STAGE_METRIC_TOTAL,
    STAGE_METRIC_COUNT
} stage_metric_t;

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
    metric_t *stage_seconds[STAGE_METRIC_COUNT];
    metric_t **attempts; /* [provider][outcome] */
} engine_metrics_t;

/* ---- observability (observe.c) ---- */
#define OBSERVE_N_HTTP 20 /* the fixed codes of observe.c's list, then the classes 1xx..5xx */

typedef struct {
    char label[160]; /* provider="name" */
    metric_t *latency, *ttft, *retries, *tokens_in, *tokens_out, *cost, *breaker, *rate_waits, *rate_limited;
    metric_t *in_flight, *rejected;
    metric_t *http[OBSERVE_N_HTTP]; /* registered on first use */
} observe_provider_t;

typedef struct {
    char *topic;
    int32_t partition;
    bool seen;
    metric_t *lag, *committed;
} observe_partition_t;

/* Test-only hook: with PARLEY_TEST_BLOCK_LOOP_MS=N in the environment at start, each SIGUSR2 blocks the
 * loop for N ms (so /healthz can be seen to fail). Without it SIGUSR2 is not handled. */
typedef struct {
    uv_timer_t timer;
    uv_signal_t block_signal;
    bool block_started;
    int64_t block_ms;
    uint64_t rng;
    uint64_t config_hash;
    observe_provider_t *providers; /* one per cfg->llm.providers */
    observe_partition_t *parts;
    size_t n_parts, cap_parts;
    kafka_partition_info_t *infos;
    size_t cap_infos;
    buf_t status;
    metric_t *build_info, *hedges, *requests_in_flight, *calls_in_flight, *provider_requests;
    metric_t *assigned, *paused_partitions, *rebalances, *commits, *commit_failures, *kafka_errors;
    metric_t *consumed, *duplicates, *redis_up, *redis_requests, *redis_errors[4], *http_in_flight;
} engine_observe_t;

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
    bool jobs_may_wait; /* a job may be in STAGE_WAIT: the tick walks the held jobs for due retries */
    size_t peak_in_flight;
    bool redis_up;
    bool paused;
    size_t assigned;
    uv_timer_t tick;        /* retries, heartbeat */
    uv_check_t log_flusher; /* writes the info lines of each loop iteration together (log_batch) */
    uv_timer_t drain_timer;
    uv_signal_t sigterm, sigint;
    int signals;
    bool draining;
    bool closing;
    int open_clients; /* clients whose close is still running */
    int exit_code;
    engine_metrics_t m;
    engine_observe_t obs;
};

/* job_flow.c */
void engine_on_message(void *ctx, kafka_message_t *m);
/* Starts a job that reached the head of its conversation's queue. */
void engine_job_start(ejob_t *j);
void engine_retry_due(engine_t *e, bool redis_came_up);
void engine_abandon_all(engine_t *e);
/* observe.c: the tick copying module stats into metrics, /readyz providers and /status. */
int observe_start(engine_t *e);
void observe_close(engine_t *e); /* closes its handles (the loop is being closed) */
void observe_free(engine_t *e);  /* after the loop ended */
/* Per-provider metrics of a finished router call. */
void observe_router_done(engine_t *e, const router_result_t *res);
void observe_kafka_error(engine_t *e);
/* Records ms (≥ 0) in the histogram of a job stage. */
void observe_stage(engine_t *e, stage_metric_t stage, int64_t ms);
/* W3C trace context of j from its message headers: a valid traceparent is continued (rewritten as
 * version 00), anything else starts a new trace; tracestate is kept only with a valid traceparent. */
void engine_trace_init(ejob_t *j);
/* worker.c */
void engine_job_finished(engine_t *e, ejob_t *j);
void engine_update_backpressure(engine_t *e);

#endif

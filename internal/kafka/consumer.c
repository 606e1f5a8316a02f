/* consumer.c — the group consumer on the loop.
 * Queues: every assigned partition's fetch queue is detached from librdkafka's consumer queue
 * (rd_kafka_queue_forward(pq, NULL), done before the assign call so that no message of it can reach
 * the consumer queue first), so the consumer queue carries only rebalances, errors and commit results,
 * and is always served; the partition queues are the gate: served only while it is open. Every queue
 * writes a byte to one pipe when it goes from empty to non-empty; the loop wakes on it, serves at most
 * SERVE_BUDGET events and SERVE_BUDGET messages (one per partition in turn), and comes back through a
 * uv_idle while a queue is left non-empty. A 1 s timer polls too, so that max.poll.interval.ms stays
 * satisfied while nothing arrives. While the gate is closed librdkafka's prefetch stops by itself at
 * queued.min.messages / queued.max.messages.kbytes per partition: resuming needs no refetch.
 * Each assigned partition has a state with its queue and its offset tracker; a message handed to the
 * engine points at that state until kafka_message_done.
 * Revoke is asynchronous: the rebalance callback only marks the partitions, and the unassign call
 * comes when their last message is done or after drain_timeout_ms (librdkafka stays in its
 * "wait unassign call" join state meanwhile and keeps heartbeating). */
#include "kafka/client.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "log/log.h"

#define SERVE_BUDGET     500
#define MAX_PARTITION_ID (1 << 20)
#define POLL_INTERVAL_MS 1000

typedef struct kafka_part kafka_part_t;

struct kafka_part {
    kafka_consumer_t *c;
    const char *topic; /* the consumer's copy of the topic name */
    int32_t partition;
    kafka_offsets_t *offsets; /* NULL once unassigned */
    rd_kafka_queue_t *queue;  /* its fetch queue, not forwarded; NULL once unassigned */
    int64_t stored;           /* last offset stored for commit, -1 none */
    size_t outstanding;       /* messages the engine holds */
    bool assigned;
    bool fresh;    /* attached by the assign call under way */
    bool revoking; /* revoked, waiting for its messages */
    bool lost;
    bool stalled; /* tracking failed (out of memory): nothing more is stored or delivered */
};

typedef struct msg_node {
    kafka_message_t pub;
    rd_kafka_message_t *rkm;
    kafka_part_t *p;
    struct msg_node *prev, *next;
} msg_node_t;

typedef struct {
    char *name;
    kafka_part_t **parts; /* indexed by partition id */
    size_t n_parts;
} topic_t;

struct kafka_consumer {
    uv_loop_t *loop;
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    kafka_wake_t wake;
    uv_idle_t idle;
    uv_timer_t drain_timer;
    uv_timer_t close_timer;
    uv_timer_t poll_timer;
    int open_handles;
    kafka_consumer_callbacks_t cbs;
    topic_t *topics;
    size_t n_topics;
    int64_t drain_timeout_ms;
    int64_t close_timeout_ms;
    bool auto_commit;
    bool gate_closed; /* kafka_consumer_pause_all: no message is handed over */
    bool stopping;
    bool closing;
    bool close_forced;
    bool finishing;
    bool ever_assigned; /* an assignment (even an empty one) arrived from the group */
    struct {
        rd_kafka_topic_partition_list_t *list;
        uint64_t gen; /* which revoke a commit result belongs to */
        bool pending;
        bool committing; /* drained; waiting for the commit of the finished prefix */
        bool lost;
        bool cooperative;
    } revoke;
    size_t cursor; /* the partition slot served last (round robin) */
    msg_node_t *msgs;
    kafka_consumer_stats_t stats;
    kafka_closed_cb close_cb;
    void *close_ctx;
};

static void serve(kafka_consumer_t *c);
static void on_idle(uv_idle_t *h);

/* ---- partition states ---- */

static topic_t *topic_find(const kafka_consumer_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_topics; i++)
        if (strcmp(c->topics[i].name, name) == 0)
            return &c->topics[i];
    return NULL;
}

static kafka_part_t *part_find(const kafka_consumer_t *c, const char *topic, int32_t partition)
{
    topic_t *t = topic_find(c, topic);
    if (!t || partition < 0 || (size_t)partition >= t->n_parts)
        return NULL;
    return t->parts[partition];
}

/* A fresh state for a partition that has none. NULL when out of memory or the topic is not subscribed. */
static kafka_part_t *part_attach(kafka_consumer_t *c, const char *topic, int32_t partition)
{
    topic_t *t = topic_find(c, topic);
    if (!t || partition < 0 || partition >= MAX_PARTITION_ID)
        return NULL;
    if ((size_t)partition >= t->n_parts) {
        size_t n = (size_t)partition + 1;
        kafka_part_t **parts = base_realloc(t->parts, n * sizeof(*parts));
        if (!parts)
            return NULL;
        memset(parts + t->n_parts, 0, (n - t->n_parts) * sizeof(*parts));
        t->parts = parts;
        t->n_parts = n;
    }
    kafka_part_t *p = base_calloc(1, sizeof(*p));
    if (!p || !(p->offsets = kafka_offsets_new())) {
        free(p);
        return NULL;
    }
    p->c = c;
    p->topic = t->name;
    p->partition = partition;
    p->stored = -1;
    p->assigned = true;
    t->parts[partition] = p;
    c->stats.assigned++;
    return p;
}

/* Removes p from the assignment; it is freed now or when its last message is done. */
static void part_detach(kafka_part_t *p)
{
    kafka_consumer_t *c = p->c;
    topic_find(c, p->topic)->parts[p->partition] = NULL;
    c->stats.assigned--;
    if (p->queue) { /* what librdkafka still holds of it is dropped: never handed over, never committed */
        rd_kafka_queue_io_event_enable(p->queue, -1, NULL, 0);
        rd_kafka_queue_destroy(p->queue);
        p->queue = NULL;
    }
    kafka_offsets_free(p->offsets);
    p->offsets = NULL;
    p->assigned = false;
    if (p->outstanding == 0)
        free(p);
}

static void detach_all(kafka_consumer_t *c)
{
    for (size_t i = 0; i < c->n_topics; i++)
        for (size_t j = 0; j < c->topics[i].n_parts; j++)
            if (c->topics[i].parts[j])
                part_detach(c->topics[i].parts[j]);
}

static kafka_tp_t *tps_of(const rd_kafka_topic_partition_list_t *l)
{
    kafka_tp_t *tps = base_calloc((size_t)l->cnt + 1, sizeof(*tps));
    for (int i = 0; tps && i < l->cnt; i++)
        tps[i] = (kafka_tp_t){.topic = l->elems[i].topic, .partition = l->elems[i].partition};
    return tps;
}

static void report_error(kafka_consumer_t *c, bool fatal, int code, const char *text)
{
    log_at(fatal ? LOG_ERROR : LOG_WARN, "kafka consumer error",
           LOG_FIELDS_(LOG_S("error", text), LOG_I("code", code), LOG_B("fatal", fatal)), 4);
    if (c->cbs.on_error)
        c->cbs.on_error(c->cbs.ctx, fatal, code, text);
}

/* Takes a partition about to be assigned behind the gate: detaches its fetch queue from the consumer
 * queue (before the assign call, so that librdkafka's fetch start, which forwards the queue unless the
 * application set its forwarding, never sends a message of it there), then gives it a state that owns
 * the queue and wakes the loop through the pipe. */
static void part_open(kafka_consumer_t *c, const char *topic, int32_t partition)
{
    rd_kafka_queue_t *q = rd_kafka_queue_get_partition(c->rk, topic, partition);
    if (q)
        rd_kafka_queue_forward(q, NULL);
    kafka_part_t *p = part_find(c, topic, partition);
    if (p) { /* still assigned (not expected): it keeps its queue */
        if (q)
            rd_kafka_queue_destroy(q);
        return;
    }
    if (!(p = part_attach(c, topic, partition))) {
        /* its messages wait in librdkafka (bounded by the prefetch limits), never handed over */
        report_error(c, false, RD_KAFKA_RESP_ERR__FAIL,
                     "out of memory for an assigned partition: not consumed until reassigned");
        if (q)
            rd_kafka_queue_destroy(q);
        return;
    }
    p->fresh = true;
    if (!q) {
        p->stalled = true;
        report_error(c, false, RD_KAFKA_RESP_ERR__FAIL,
                     "no queue for an assigned partition: stalled until reassigned");
        return;
    }
    p->queue = q;
    rd_kafka_queue_io_event_enable(q, c->wake.wfd, "1", 1);
}

/* ---- offsets ---- */

/* Stores p's committable offset when it moved past the last stored one. */
static void store_offset(kafka_consumer_t *c, kafka_part_t *p)
{
    int64_t off = kafka_offsets_committable(p->offsets);
    if (off <= p->stored)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = off;
    rd_kafka_offsets_store(c->rk, l);
    rd_kafka_resp_err_t err = l->elems[0].err;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        p->stored = off;
    else if (err == RD_KAFKA_RESP_ERR__STATE)
        log_debug("kafka: offset not stored, partition no longer assigned", LOG_S("topic", p->topic),
                  LOG_I("partition", p->partition), LOG_I("offset", off));
    else
        log_warn("kafka: offset store failed", LOG_S("topic", p->topic), LOG_I("partition", p->partition),
                 LOG_I("offset", off), LOG_S("error", rd_kafka_err2str(err)));
    rd_kafka_topic_partition_list_destroy(l);
}

/* The offsets stored for the partitions of l that have one (the caller destroys the list). */
static rd_kafka_topic_partition_list_t *stored_offsets(kafka_consumer_t *c,
                                                       const rd_kafka_topic_partition_list_t *l)
{
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(l->cnt > 0 ? l->cnt : 1);
    for (int i = 0; i < l->cnt; i++) {
        kafka_part_t *p = part_find(c, l->elems[i].topic, l->elems[i].partition);
        if (p && p->stored >= 0 && !p->lost)
            rd_kafka_topic_partition_list_add(offs, p->topic, p->partition)->offset = p->stored;
    }
    return offs;
}

static void offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    kafka_consumer_t *c = opaque;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    if (err) {
        c->stats.commit_failures++;
        log_warn("kafka: offset commit failed", LOG_S("error", rd_kafka_err2str(err)));
        return;
    }
    c->stats.commits++;
    for (int i = 0; offsets && i < offsets->cnt; i++)
        log_debug("kafka: offset committed", LOG_S("topic", offsets->elems[i].topic),
                  LOG_I("partition", offsets->elems[i].partition), LOG_I("offset", offsets->elems[i].offset));
}

/* ---- the gate ---- */

static bool gate_open(const kafka_consumer_t *c) { return !c->gate_closed && !c->stopping && !c->finishing; }

void kafka_consumer_pause_all(kafka_consumer_t *c) { c->gate_closed = true; }

void kafka_consumer_resume_all(kafka_consumer_t *c)
{
    if (c->stopping || !c->gate_closed)
        return;
    c->gate_closed = false;
    uv_idle_start(&c->idle, on_idle);
}

bool kafka_consumer_paused(const kafka_consumer_t *c) { return c->gate_closed; }

void kafka_consumer_stop_consuming(kafka_consumer_t *c)
{
    c->stopping = true;
    c->gate_closed = true;
}

/* ---- rebalance ---- */

static void assign_partitions(kafka_consumer_t *c, rd_kafka_topic_partition_list_t *parts, bool cooperative)
{
    c->ever_assigned = true;
    for (int i = 0; i < parts->cnt; i++)
        part_open(c, parts->elems[i].topic, parts->elems[i].partition);
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (cooperative)
        error = rd_kafka_incremental_assign(c->rk, parts);
    else
        err = rd_kafka_assign(c->rk, parts);
    for (int i = 0; i < parts->cnt; i++) {
        kafka_part_t *p = part_find(c, parts->elems[i].topic, parts->elems[i].partition);
        if (p && p->fresh && (error || err))
            part_detach(p);
        else if (p)
            p->fresh = false;
    }
    if (error || err) {
        report_error(c, false, error ? rd_kafka_error_code(error) : err,
                     error ? rd_kafka_error_string(error) : rd_kafka_err2str(err));
        if (error)
            rd_kafka_error_destroy(error);
        return;
    }
    kafka_tp_t *tps = tps_of(parts);
    log_info("kafka: partitions assigned", LOG_I("count", parts->cnt), LOG_B("cooperative", cooperative));
    if (tps && c->cbs.on_assign)
        c->cbs.on_assign(c->cbs.ctx, tps, (size_t)parts->cnt);
    free(tps);
}

/* Lets the revoked partitions go: unassign, drop their states and their queues (with the messages
 * still waiting behind the gate). */
static void revoke_complete(kafka_consumer_t *c)
{
    rd_kafka_topic_partition_list_t *l = c->revoke.list;
    c->revoke.list = NULL;
    c->revoke.pending = false;
    c->revoke.committing = false;
    uv_timer_stop(&c->drain_timer);
    size_t left = 0;
    for (int i = 0; i < l->cnt; i++) {
        kafka_part_t *p = part_find(c, l->elems[i].topic, l->elems[i].partition);
        left += p ? p->outstanding : 0;
    }
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (c->revoke.cooperative)
        error = rd_kafka_incremental_unassign(c->rk, l);
    else
        err = rd_kafka_assign(c->rk, NULL);
    if (error || err) {
        report_error(c, false, error ? rd_kafka_error_code(error) : err,
                     error ? rd_kafka_error_string(error) : rd_kafka_err2str(err));
        if (error)
            rd_kafka_error_destroy(error);
    }
    for (int i = 0; i < l->cnt; i++) {
        kafka_part_t *p = part_find(c, l->elems[i].topic, l->elems[i].partition);
        if (p)
            part_detach(p);
    }
    if (!c->revoke.cooperative)
        detach_all(c);
    log_info("kafka: partitions released", LOG_I("count", l->cnt), LOG_B("lost", c->revoke.lost),
             LOG_I("jobs_still_running", left));
    rd_kafka_topic_partition_list_destroy(l);
}

static void revoke_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets, void *gen)
{
    kafka_consumer_t *c = rd_kafka_opaque(rk);
    if (c->finishing || !c->revoke.committing || (uintptr_t)gen != c->revoke.gen)
        return;
    offset_commit_cb(rk, err, offsets, c);
    revoke_complete(c);
}

/* Commits the stored offsets of the drained partitions while this member still owns them (in the
 * current generation, before the unassign starts the next rebalance), then lets them go. */
static void revoke_commit(kafka_consumer_t *c)
{
    if (c->revoke.lost) {
        revoke_complete(c);
        return;
    }
    rd_kafka_topic_partition_list_t *offs = stored_offsets(c, c->revoke.list);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__NO_OFFSET;
    if (offs->cnt > 0) {
        c->revoke.committing = true;
        err =
            rd_kafka_commit_queue(c->rk, offs, c->queue, revoke_commit_cb, (void *)(uintptr_t)c->revoke.gen);
    }
    rd_kafka_topic_partition_list_destroy(offs);
    if (err) {
        c->revoke.committing = false;
        revoke_complete(c);
    }
}

static void revoke_maybe_complete(kafka_consumer_t *c)
{
    if (!c->revoke.pending || c->revoke.committing)
        return;
    if (!c->revoke.lost && !c->closing)
        for (int i = 0; i < c->revoke.list->cnt; i++) {
            kafka_part_t *p =
                part_find(c, c->revoke.list->elems[i].topic, c->revoke.list->elems[i].partition);
            if (p && p->outstanding > 0)
                return;
        }
    revoke_commit(c);
}

static void on_drain_timeout(uv_timer_t *t)
{
    kafka_consumer_t *c = t->data;
    log_warn("kafka: drain timeout, releasing revoked partitions with jobs still running",
             LOG_I("drain_timeout_ms", c->drain_timeout_ms));
    revoke_complete(c);
}

static void revoke_partitions(kafka_consumer_t *c, rd_kafka_topic_partition_list_t *parts, bool cooperative)
{
    bool lost = rd_kafka_assignment_lost(c->rk) != 0;
    c->revoke.list = rd_kafka_topic_partition_list_copy(parts);
    c->revoke.gen++;
    c->revoke.pending = true;
    c->revoke.committing = false;
    c->revoke.lost = lost;
    c->revoke.cooperative = cooperative;
    for (int i = 0; i < parts->cnt; i++) {
        kafka_part_t *p = part_find(c, parts->elems[i].topic, parts->elems[i].partition);
        if (p) {
            p->revoking = true;
            p->lost = lost;
        }
    }
    log_info("kafka: partitions revoked", LOG_I("count", parts->cnt), LOG_B("lost", lost),
             LOG_B("cooperative", cooperative));
    kafka_tp_t *tps = tps_of(parts);
    if (tps && c->cbs.on_revoke)
        c->cbs.on_revoke(c->cbs.ctx, tps, (size_t)parts->cnt, lost);
    free(tps);
    revoke_maybe_complete(c);
    if (c->revoke.pending)
        uv_timer_start(&c->drain_timer, on_drain_timeout, (uint64_t)c->drain_timeout_ms, 0);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    kafka_consumer_t *c = opaque;
    const char *proto = rd_kafka_rebalance_protocol(rk);
    bool cooperative = proto && strcmp(proto, "COOPERATIVE") == 0;
    if (c->finishing) { /* served by rd_kafka_destroy off the loop: just keep librdkafka consistent */
        if (cooperative && err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            rd_kafka_error_destroy(rd_kafka_incremental_unassign(rk, parts));
        else
            rd_kafka_assign(rk, NULL);
        return;
    }
    c->stats.rebalances++;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        assign_partitions(c, parts, cooperative);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        if (c->revoke.pending) /* not expected: librdkafka waits for the unassign call */
            revoke_complete(c);
        revoke_partitions(c, parts, cooperative);
    } else {
        report_error(c, false, err, rd_kafka_err2str(err));
        if (c->revoke.pending)
            revoke_complete(c);
        rd_kafka_assign(rk, NULL);
        detach_all(c);
    }
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_consumer_t *c = opaque;
    char fatal_text[512];
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        int code = rd_kafka_fatal_error(rk, fatal_text, sizeof(fatal_text));
        report_error(c, true, code, fatal_text);
        return;
    }
    report_error(c, false, err, reason);
}

/* ---- messages ---- */

/* Reports and frees rkm when it is an error event (partition EOF is not reported); false otherwise. */
static bool error_event(kafka_consumer_t *c, rd_kafka_message_t *rkm)
{
    if (!rkm->err)
        return false;
    if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        report_error(c, false, rkm->err, rd_kafka_message_errstr(rkm));
    rd_kafka_message_destroy(rkm);
    return true;
}

/* An event of the consumer queue. A message there would have bypassed the gate (not expected: every
 * assigned partition has its own queue): it is dropped and its partition stalled, so that no later
 * offset of it is committed. */
static void consumer_event(kafka_consumer_t *c, rd_kafka_message_t *rkm)
{
    if (error_event(c, rkm))
        return;
    kafka_part_t *p = rkm->rkt ? part_find(c, rd_kafka_topic_name(rkm->rkt), rkm->partition) : NULL;
    if (p && !p->stalled) {
        p->stalled = true;
        report_error(c, false, RD_KAFKA_RESP_ERR__FAIL,
                     "message on the consumer queue: partition stalled until reassigned");
    }
    c->stats.dropped++;
    rd_kafka_message_destroy(rkm);
}

/* A message of a partition queue: handed to the engine, or dropped when its partition is leaving. */
static void deliver(kafka_consumer_t *c, rd_kafka_message_t *rkm)
{
    if (error_event(c, rkm))
        return;
    kafka_part_t *p = part_find(c, rd_kafka_topic_name(rkm->rkt), rkm->partition);
    if (!p || p->revoking || p->stalled || c->stopping) {
        c->stats.dropped++;
        rd_kafka_message_destroy(rkm);
        return;
    }
    msg_node_t *n = base_calloc(1, sizeof(*n));
    int tracked = n ? kafka_offsets_track(p->offsets, rkm->offset) : -2;
    if (tracked != 0) {
        if (tracked == -1) {
            c->stats.duplicates++;
            log_debug("kafka: redelivered message dropped", LOG_S("topic", p->topic),
                      LOG_I("partition", p->partition), LOG_I("offset", rkm->offset));
        } else {
            p->stalled = true;
            report_error(c, false, RD_KAFKA_RESP_ERR__FAIL,
                         "out of memory tracking an offset: partition stalled until reassigned");
        }
        free(n);
        rd_kafka_message_destroy(rkm);
        return;
    }
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(rkm, &tstype);
    n->pub = (kafka_message_t){.topic = p->topic,
                               .partition = p->partition,
                               .offset = rkm->offset,
                               .key = rkm->key,
                               .key_len = rkm->key_len,
                               .value = rkm->payload ? rkm->payload : "",
                               .value_len = rkm->len,
                               .timestamp_ms = tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts};
    n->rkm = rkm;
    n->p = p;
    n->next = c->msgs;
    if (c->msgs)
        c->msgs->prev = n;
    c->msgs = n;
    p->outstanding++;
    c->stats.outstanding++;
    c->stats.messages++;
    c->cbs.on_message(c->cbs.ctx, &n->pub);
}

static msg_node_t *node_of(const kafka_message_t *m)
{
    return (msg_node_t *)((char *)m - offsetof(msg_node_t, pub));
}

/* Unlinks and frees n; returns its partition state, or NULL when that state was freed too. */
static kafka_part_t *node_free(kafka_consumer_t *c, msg_node_t *n)
{
    kafka_part_t *p = n->p;
    if (n->prev)
        n->prev->next = n->next;
    else
        c->msgs = n->next;
    if (n->next)
        n->next->prev = n->prev;
    rd_kafka_message_destroy(n->rkm);
    free(n);
    c->stats.outstanding--;
    p->outstanding--;
    if (!p->assigned && p->outstanding == 0) {
        free(p);
        return NULL;
    }
    return p;
}

void kafka_message_done(kafka_message_t *m, bool finished)
{
    msg_node_t *n = node_of(m);
    kafka_consumer_t *c = n->p->c;
    kafka_part_t *p = n->p;
    if (finished && p->offsets && !p->lost && !p->stalled && kafka_offsets_finish(p->offsets, m->offset) == 1)
        store_offset(c, p);
    p = node_free(c, n);
    if (p && p->revoking)
        revoke_maybe_complete(c);
}

int kafka_message_header(const kafka_message_t *m, const char *name, const void **value, size_t *len)
{
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers(node_of(m)->rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    if (rd_kafka_header_get_last(hdrs, name, value, len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    if (!*value)
        *value = "";
    return 0;
}

size_t kafka_message_header_count(const kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers(node_of(m)->rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    return rd_kafka_header_cnt(hdrs);
}

int kafka_message_header_at(const kafka_message_t *m, size_t i, kafka_header_t *h)
{
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers(node_of(m)->rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    if (rd_kafka_header_get_all(hdrs, i, &h->name, &h->value, &h->value_len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    if (!h->value)
        h->value = "";
    return 0;
}

/* ---- the loop side ---- */

static void finish_close(kafka_consumer_t *c);

static void on_idle(uv_idle_t *h)
{
    uv_idle_stop(h);
    serve(h->data);
}

static void on_wake(uv_poll_t *h, int status, int events)
{
    kafka_consumer_t *c = h->data;
    kafka_wake_drain(&c->wake);
    serve(c);
}

static void on_poll_timer(uv_timer_t *t) { serve(t->data); }

static size_t slot_count(const kafka_consumer_t *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_topics; i++)
        n += c->topics[i].n_parts;
    return n;
}

/* The state in slot k of the (topic, partition) slots, or NULL. */
static kafka_part_t *slot_at(const kafka_consumer_t *c, size_t k)
{
    for (size_t i = 0; i < c->n_topics; k -= c->topics[i].n_parts, i++)
        if (k < c->topics[i].n_parts)
            return c->topics[i].parts[k];
    return NULL;
}

/* While the gate is open, hands over up to budget messages, one per partition queue in turn from where
 * the last call stopped; each is popped only just before it is handed over, so that nothing comes after
 * a pause_all made in on_message. True when the budget ran out with messages left. */
static bool serve_partitions(kafka_consumer_t *c, int budget)
{
    size_t empty_in_a_row = 0;
    while (gate_open(c)) {
        size_t n = slot_count(c);
        if (empty_in_a_row >= n)
            return false;
        if (budget == 0)
            return true;
        c->cursor = (c->cursor + 1) % n;
        kafka_part_t *p = slot_at(c, c->cursor);
        rd_kafka_message_t *rkm = p && p->queue ? rd_kafka_consume_queue(p->queue, 0) : NULL;
        if (!rkm) {
            empty_in_a_row++;
            continue;
        }
        empty_in_a_row = 0;
        budget--;
        deliver(c, rkm);
    }
    return false;
}

/* Serves up to SERVE_BUDGET events of the consumer queue (always, gate or not: rebalances, errors,
 * commit results; each poll also counts for max.poll.interval.ms), then the partition queues; comes
 * back through uv_idle while a queue is left non-empty (the pipe is written only when a queue goes
 * from empty to non-empty). */
static void serve(kafka_consumer_t *c)
{
    for (int i = 0; i < SERVE_BUDGET && !c->finishing; i++) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->rk, 0);
        if (!rkm)
            break;
        consumer_event(c, rkm);
    }
    bool more = !c->finishing && serve_partitions(c, SERVE_BUDGET);
    if (c->finishing)
        return;
    if (c->closing && (c->close_forced || rd_kafka_consumer_closed(c->rk)))
        finish_close(c);
    else if (more || rd_kafka_queue_length(c->queue) > 0)
        uv_idle_start(&c->idle, on_idle);
}

/* ---- lifecycle ---- */

static void free_topics(kafka_consumer_t *c)
{
    for (size_t i = 0; i < c->n_topics; i++) {
        free(c->topics[i].name);
        free(c->topics[i].parts);
    }
    free(c->topics);
}

static void on_handle_closed(uv_handle_t *h)
{
    kafka_consumer_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    kafka_wake_close_fds(&c->wake);
    free_topics(c);
    kafka_closed_cb cb = c->close_cb;
    void *ctx = c->close_ctx;
    free(c);
    if (cb)
        cb(ctx);
}

/* Closes the handles (the pipe's poll only when the pipe was made); c is freed when the last one is. */
static void close_handles(kafka_consumer_t *c)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&c->idle, (uv_handle_t *)&c->drain_timer,
                         (uv_handle_t *)&c->close_timer, (uv_handle_t *)&c->poll_timer,
                         (uv_handle_t *)&c->wake.poll};
    c->open_handles = c->wake.rfd >= 0 ? 5 : 4;
    for (int i = 0; i < c->open_handles; i++)
        uv_close(hs[i], on_handle_closed);
}

static void after_destroy(void *arg) { close_handles(arg); }

static void finish_close(kafka_consumer_t *c)
{
    c->finishing = true;
    uv_poll_stop(&c->wake.poll);
    uv_idle_stop(&c->idle);
    uv_timer_stop(&c->drain_timer);
    uv_timer_stop(&c->close_timer);
    uv_timer_stop(&c->poll_timer);
    if (c->msgs) {
        log_error("kafka: consumer closed while the engine still held messages",
                  LOG_I("count", c->stats.outstanding));
        while (c->msgs)
            node_free(c, c->msgs);
    }
    if (c->revoke.list)
        rd_kafka_topic_partition_list_destroy(c->revoke.list);
    c->revoke.list = NULL;
    detach_all(c);
    rd_kafka_queue_io_event_enable(c->queue, -1, NULL, 0);
    rd_kafka_queue_destroy(c->queue);
    log_info("kafka: consumer closed", LOG_B("clean", !c->close_forced),
             LOG_I("messages", c->stats.messages));
    if (!c->ever_assigned && rd_kafka_version() < 0x020300ff) {
        /* librdkafka before 2.3.0 asserts in rd_kafka_destroy when the group answered JoinGroup but no
         * assignment ever came (the sticky assignor's state is still NULL: librdkafka #4312). The
         * consumer has left the group; its handle is left to the process's exit. */
        log_info("kafka: consumer never got an assignment; not destroying it (librdkafka < 2.3.0, #4312)");
        after_destroy(c);
        return;
    }
    kafka_destroy_async(c->loop, c->rk, c->close_forced ? RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE : 0,
                        after_destroy, c);
}

static void on_close_timeout(uv_timer_t *t)
{
    kafka_consumer_t *c = t->data;
    log_warn("kafka: consumer close timed out, destroying without leaving the group",
             LOG_I("close_timeout_ms", c->close_timeout_ms));
    c->close_forced = true;
    finish_close(c);
}

void kafka_consumer_close(kafka_consumer_t *c, kafka_closed_cb cb, void *ctx)
{
    if (c->closing)
        return;
    c->closing = true;
    c->close_cb = cb;
    c->close_ctx = ctx;
    kafka_consumer_stop_consuming(c);
    if (c->revoke.pending)
        revoke_complete(c);
    if (!c->auto_commit) {
        rd_kafka_topic_partition_list_t *all;
        if (rd_kafka_assignment(c->rk, &all) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_topic_partition_list_t *offs = stored_offsets(c, all);
            if (offs->cnt > 0)
                rd_kafka_commit(c->rk, offs, 1);
            rd_kafka_topic_partition_list_destroy(offs);
            rd_kafka_topic_partition_list_destroy(all);
        }
    }
    rd_kafka_error_t *error = rd_kafka_consumer_close_queue(c->rk, c->queue);
    if (error) {
        log_warn("kafka: consumer close failed", LOG_S("error", rd_kafka_error_string(error)));
        rd_kafka_error_destroy(error);
        c->close_forced = true;
    }
    uv_timer_start(&c->close_timer, on_close_timeout, (uint64_t)c->close_timeout_ms, 0);
    uv_idle_start(&c->idle, on_idle);
}

void kafka_consumer_get_stats(const kafka_consumer_t *c, kafka_consumer_stats_t *out)
{
    *out = c->stats;
    out->paused = c->gate_closed ? c->stats.assigned : 0;
}

size_t kafka_consumer_partitions(const kafka_consumer_t *c, kafka_partition_info_t *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_topics; i++)
        for (size_t j = 0; j < c->topics[i].n_parts; j++) {
            kafka_part_t *p = c->topics[i].parts[j];
            if (!p)
                continue;
            if (n < max) {
                int64_t low, high;
                if (rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &low, &high) != 0)
                    high = -1;
                out[n] = (kafka_partition_info_t){.topic = p->topic,
                                                  .partition = p->partition,
                                                  .committable = kafka_offsets_committable(p->offsets),
                                                  .held = kafka_offsets_held(p->offsets),
                                                  .high_watermark = high,
                                                  .paused = c->gate_closed,
                                                  .revoking = p->revoking};
            }
            n++;
        }
    return n;
}

/* The consumer configuration: parley's defaults, then kafka.properties. */
static rd_kafka_conf_t *consumer_conf(const kafka_consumer_options_t *o, char *err, size_t errlen)
{
    const char *store =
        kafka_prop_find(KAFKA_SCOPE_CONSUMER, o->properties, o->n_properties, "enable.auto.offset.store");
    if (store && strcmp(store, "false") != 0) {
        snprintf(err, errlen,
                 "kafka.properties: enable.auto.offset.store: must stay false (parley stores "
                 "the offset of the finished prefix of each partition itself)");
        return NULL;
    }
    int64_t max_bytes = o->max_message_bytes > 0 ? o->max_message_bytes : 1048576;
    if (max_bytes > 512 * 1024 * 1024)
        max_bytes = 512 * 1024 * 1024;
    char fetch_bytes[32], queued_kbytes[32];
    snprintf(fetch_bytes, sizeof(fetch_bytes), "%lld", (long long)(max_bytes + 65536));
    /* The prefetch bound of each partition queue (the gate keeps them apart from the consumer queue, so
     * librdkafka applies these per partition): one fetch of the partition (fetch.message.max.bytes, the
     * largest message plus framing) and at most 1000 messages. A closed gate then holds at most about
     * twice fetch.message.max.bytes per assigned partition (librdkafka may overshoot by one fetch), and
     * an open one still has a full fetch ready while the next is under way. */
    snprintf(queued_kbytes, sizeof(queued_kbytes), "%lld", (long long)((max_bytes + 65536 + 1023) / 1024));
    const config_kv_t defaults[] = {
        {"bootstrap.servers", (char *)o->brokers},
        {"group.id", (char *)o->group_id},
        {"client.id", (char *)(o->client_id ? o->client_id : "parley")},
        {"enable.auto.offset.store", "false"},
        {"enable.auto.commit", "true"},
        {"auto.commit.interval.ms", "1000"},
        {"partition.assignment.strategy", "cooperative-sticky"},
        {"auto.offset.reset", "earliest"},
        {"fetch.message.max.bytes", fetch_bytes},
        {"queued.min.messages", "1000"},
        {"queued.max.messages.kbytes", queued_kbytes},
    };
    return kafka_conf_new(KAFKA_SCOPE_CONSUMER, defaults, BASE_ARRAY_LEN(defaults), o->properties,
                          o->n_properties, err, errlen);
}

static int init_topics(kafka_consumer_t *c, const kafka_consumer_options_t *o)
{
    c->topics = base_calloc(o->n_topics, sizeof(*c->topics));
    if (!c->topics)
        return -1;
    for (size_t i = 0; i < o->n_topics; i++) {
        if (!(c->topics[i].name = base_strdup(o->topics[i])))
            return -1;
        c->n_topics++;
    }
    return 0;
}

static int subscribe(kafka_consumer_t *c, char *err, size_t errlen)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)c->n_topics);
    for (size_t i = 0; i < c->n_topics; i++)
        rd_kafka_topic_partition_list_add(l, c->topics[i].name, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e)
        snprintf(err, errlen, "kafka: subscribe: %s", rd_kafka_err2str(e));
    return e ? -1 : 0;
}

kafka_consumer_t *kafka_consumer_new(uv_loop_t *loop, const kafka_consumer_options_t *opts,
                                     const kafka_consumer_callbacks_t *cbs, char *err, size_t errlen)
{
    if (!opts->brokers || !opts->group_id || opts->n_topics == 0 || !cbs->on_message) {
        snprintf(err, errlen, "kafka: consumer needs brokers, a group id, topics and on_message");
        return NULL;
    }
    kafka_consumer_t *c = base_calloc(1, sizeof(*c));
    rd_kafka_conf_t *conf = NULL;
    if (!c || init_topics(c, opts) < 0) {
        snprintf(err, errlen, "kafka: out of memory");
        goto fail;
    }
    c->loop = loop;
    c->cbs = *cbs;
    c->drain_timeout_ms = opts->drain_timeout_ms > 0 ? opts->drain_timeout_ms : 30000;
    c->close_timeout_ms = opts->close_timeout_ms > 0 ? opts->close_timeout_ms : 10000;
    c->wake.rfd = c->wake.wfd = -1;
    if (!(conf = consumer_conf(opts, err, errlen)))
        goto fail;
    char value[16];
    size_t size = sizeof(value);
    c->auto_commit = rd_kafka_conf_get(conf, "enable.auto.commit", value, &size) == RD_KAFKA_CONF_OK &&
                     strcmp(value, "true") == 0;
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, offset_commit_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    char why[512];
    if (!(c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why)))) {
        snprintf(err, errlen, "kafka: consumer: %s", why);
        goto fail;
    }
    conf = NULL; /* owned by rk now */
    rd_kafka_poll_set_consumer(c->rk);
    c->queue = rd_kafka_queue_get_consumer(c->rk);
    uv_idle_init(loop, &c->idle);
    uv_timer_init(loop, &c->drain_timer);
    uv_timer_init(loop, &c->close_timer);
    uv_timer_init(loop, &c->poll_timer);
    c->idle.data = c->drain_timer.data = c->close_timer.data = c->poll_timer.data = c;
    if (kafka_wake_init(&c->wake, loop, c->queue, on_wake, c) < 0) {
        snprintf(err, errlen, "kafka: cannot create the wake-up pipe");
        goto fail_handles;
    }
    if (subscribe(c, err, errlen) < 0) {
        rd_kafka_queue_io_event_enable(c->queue, -1, NULL, 0);
        uv_poll_stop(&c->wake.poll);
        goto fail_handles;
    }
    uv_idle_start(&c->idle, on_idle);
    uv_timer_start(&c->poll_timer, on_poll_timer, POLL_INTERVAL_MS, POLL_INTERVAL_MS);
    return c;
fail_handles:
    /* Nothing joined yet: destroying here is quick. Handles are closed on the loop. */
    rd_kafka_queue_destroy(c->queue);
    rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    c->finishing = true;
    close_handles(c);
    return NULL;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (c && c->topics)
        free_topics(c);
    free(c);
    return NULL;
}

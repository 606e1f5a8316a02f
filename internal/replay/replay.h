/* replay — batch replay of recorded conversations (and OpenAI Batch API input) against providers, on
 * the worker's own engine (router, limits, llm, http), or through a running fleet over Kafka; and
 * `parley produce`, posting jobs by hand and waiting for their replies.
 * Input is streamed: one conversation line is read when a slot frees, so at most `concurrency`
 * conversations (each with its turns) are held at once. Each finished (turn, target) pair is appended
 * to DIR/results.jsonl at once (one write per line); a rerun with the same DIR reads the pairs already
 * there and skips them. DIR/summary.json is computed from results.jsonl (so it always matches it).
 * It owns: the input reader, the set of finished pairs, the result files, the router/limits/http
 * client of a run, its Kafka producer and its reply consumer (partitions assigned by hand, no group).
 * It never blocks its loop while work runs (the reply consumer's metadata and watermark queries run
 * before the loop starts, its rd_kafka_destroy after the last reply), never logs an API key, and never
 * exits the process. */
#ifndef PARLEY_REPLAY_H
#define PARLEY_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef enum { REPLAY_TURNS_LAST = 0, REPLAY_TURNS_EACH } replay_turns_t;
typedef enum { REPLAY_HISTORY_RECORDED = 0, REPLAY_HISTORY_GENERATED } replay_history_t;

typedef struct {
    const char *input;    /* IN.jsonl */
    const char *out_dir;  /* DIR (created when missing) */
    replay_turns_t turns; /* default last */
    replay_history_t history;
    const char *const *compare; /* provider names (in-process) or route names (via Kafka); NULL = route */
    size_t n_compare;
    const char *route;  /* NULL = "default" */
    size_t concurrency; /* conversations in flight (default 16) */
    bool stream;        /* ask providers to stream (time to first token); default true */
    bool via_kafka;
    const char *reply_topic;  /* via Kafka: NULL = "parley.replay"; must be in kafka.reply_topics_allowed */
    int64_t kafka_timeout_ms; /* via Kafka: how long a job waits for its reply (default 120000) */
    int64_t progress_ms;      /* progress line period (default 2000) */
    int64_t limit;            /* stop reading after this many input lines (0 = all) */
} replay_options_t;

void replay_options_init(replay_options_t *o);

/* Runs a replay to the end of the input or to SIGINT/SIGTERM (then stops cleanly: what finished is in
 * results.jsonl, the rest is not started again, summary.json is written). 0 when every pair ended
 * (whatever their status), 1 interrupted, -1 with err on a failure of the run itself (files, clients),
 * -2 with err on a usage error (a reply topic that is not allowed, an unknown provider or route). */
int replay_run(const config_t *cfg, const replay_options_t *opts, char *err, size_t errlen);

/* Writes DIR/summary.json from DIR/results.jsonl: per target, count, ok, errors by code, latency and
 * time-to-first-token p50/p95/p99 (nearest rank over ok results), tokens and cost. 0, or -1 and err. */
int replay_summary_write(const char *dir, char *err, size_t errlen);

/* Writes DIR/report.html from DIR/results.jsonl: one self-contained page (inline SVG, no script, no
 * network) with per target a latency CDF, a time-to-first-token histogram, p50/p95/p99, errors by
 * kind, tokens and cost, and the answers of the slowest turns side by side (with their word overlap).
 * 0, or -1 and err. */
int replay_report_write(const char *dir, char *err, size_t errlen);

/* Nearest-rank percentile (p in 0..100) of n sorted values; 0 when n is 0. */
double replay_percentile(const double *sorted, size_t n, double p);

/* ---- resume set: the (turn, target) pairs of a results file ---------------------------------- */
typedef struct replay_done replay_done_t;

replay_done_t *replay_done_new(void);
void replay_done_free(replay_done_t *d);
/* Adds the pair with an optional answer (kept for --history generated; NULL = none). 0, or -1 (no
 * memory). Adding a pair already there keeps the first. */
int replay_done_add(replay_done_t *d, const char *turn_id, const char *target, const char *answer);
bool replay_done_has(const replay_done_t *d, const char *turn_id, const char *target);
/* The answer stored with the pair, or NULL. */
const char *replay_done_answer(const replay_done_t *d, const char *turn_id, const char *target);
size_t replay_done_count(const replay_done_t *d);
/* Reads a results file into d (a missing file is empty). A last line without its newline (a write cut
 * by a crash) is cut off the file. keep_answers: store ok answers too. 0, or -1 and err. */
int replay_done_load(replay_done_t *d, const char *path, bool keep_answers, char *err, size_t errlen);

/* ---- input lines ------------------------------------------------------------------------------ */
typedef enum { REPLAY_LINE_CONVERSATION = 0, REPLAY_LINE_BATCH } replay_line_kind_t;

/* One parsed input line: a recorded conversation, or a Batch request (its body's messages). */
typedef struct {
    replay_line_kind_t kind;
    char *id; /* conversation_id, or custom_id */
    chat_message_t *messages;
    size_t n_messages;
    char *metadata_json; /* NULL when absent */
    char *model;         /* Batch body.model, NULL otherwise */
    bool has_temperature, has_top_p, has_max_tokens, has_seed;
    double temperature, top_p;
    int64_t max_tokens, seed;
} replay_line_t;

/* Parses one line. 0, or -1 with err ("messages[2].role: must be a string"). */
int replay_line_parse(const char *s, size_t len, replay_line_t *out, char *err, size_t errlen);
void replay_line_clear(replay_line_t *l);
/* Indexes of the user messages to replay: turns last = the final user message; each = every one. */
size_t replay_line_turns(const replay_line_t *l, replay_turns_t turns, size_t *idx, size_t max);

/* ---- produce ---------------------------------------------------------------------------------- */
typedef struct {
    const char *conversation; /* one job: --conversation and --message */
    const char *message;
    const char *input; /* or jobs from JSONL, one job object per line */
    const char *route;
    bool stream;
    bool wait;
    int64_t timeout_ms; /* --wait: default 60000 */
} replay_produce_options_t;

/* Posts the jobs (keyed by conversation id); with wait, prints each matching final reply (and the
 * deltas as they come) to stdout. Bad input lines are reported on stderr with their line number and
 * the rest go on. 0 all posted (and, waiting, all answered ok), 1 otherwise, -1 and err on setup. */
int replay_produce(const config_t *cfg, const replay_produce_options_t *opts, char *err, size_t errlen);

#endif

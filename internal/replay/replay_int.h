/* replay_int.h — shared inside replay/: the reply-topic reader used by --via-kafka and produce --wait,
 * what one finished (turn, target) pair says and its JSON lines, and the per-target figures of a results
 * file that summary.json and report.html share. */
#ifndef PARLEY_REPLAY_INT_H
#define PARLEY_REPLAY_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "base/base.h"
#include "config/config.h"
#include "job/job.h"

struct cJSON;

typedef struct replay_kreply replay_kreply_t;

/* A reply message's value (not NUL-terminated), on the loop. */
typedef void (*replay_kreply_cb)(void *ctx, const char *value, size_t len);

/* Assigns every partition of topic at its current end (no group, nothing committed) and hands every
 * later message to cb. The metadata and watermark queries block (up to 10 s): call it before the loop
 * runs. NULL and err on failure. */
replay_kreply_t *replay_kreply_new(uv_loop_t *loop, const config_t *cfg, const char *topic,
                                   replay_kreply_cb cb, void *ctx, char *err, size_t errlen);
/* Stops the poll timer and destroys the consumer once the timer is closed. */
void replay_kreply_free(replay_kreply_t *k);

/* A short random hex id for job ids of one run. */
void replay_run_id(char *out, size_t outlen);

/* ---- results ---- */
typedef struct {
    const char *turn_id, *id, *target, *job_id;
    bool batch;
    long line_no;
    size_t turn, msg_index;
    bool ok;
    const char *answer;
    size_t answer_len;
    const char *provider, *model, *finish_reason;
    const char *err_code, *err_kind, *err_msg; /* !ok */
    int http_status;                           /* !ok: the last attempt's, 0 unknown */
    bool has_usage;
    int64_t prompt_tokens, completion_tokens, total_tokens;
    bool has_cost;
    double cost_usd;
    int64_t latency_ms, ttft_ms; /* ttft -1 = unknown */
    const char *attempts_json;   /* JSON array text, NULL = [] */
    const char *metadata_json;
} replay_result_t;

/* Append the line (with its newline) to b. 0, or -1 when out of memory. */
int replay_result_line(buf_t *b, const replay_result_t *r);
int replay_batch_line(buf_t *b, const replay_result_t *r);
int replay_attempts_json(buf_t *b, const job_attempt_t *a, size_t n);

/* ---- figures ---- */
struct cJSON;

#define REPLAY_MAX_TARGETS   32
#define REPLAY_MAX_ERR_KINDS 32

typedef struct {
    double *v; /* sorted after replay_stats_load */
    size_t n, cap;
} replay_series_t;

typedef struct {
    char name[160];
    uint64_t results, ok, errors;
    struct {
        char kind[64];
        uint64_t n;
    } errs[REPLAY_MAX_ERR_KINDS];
    size_t n_errs;
    replay_series_t latency, ttft; /* ok results only */
    int64_t prompt_tokens, completion_tokens, total_tokens;
    bool has_cost;
    double cost_usd;
} replay_target_stats_t;

typedef struct {
    replay_target_stats_t t[REPLAY_MAX_TARGETS];
    size_t n;
    uint64_t results, bad_lines;
} replay_stats_t;

/* Called with each results line as it is read (may be NULL); non-zero stops with an error. */
typedef int (*replay_stats_line_cb)(void *ctx, const struct cJSON *line);

int replay_stats_load(const char *dir, replay_stats_t *st, replay_stats_line_cb cb, void *ctx, char *err,
                      size_t errlen);
void replay_stats_free(replay_stats_t *st);
int replay_summary_json(const replay_stats_t *st, buf_t *b);
/* Writes DIR/NAME atomically (temporary file, rename). */
int replay_write_file(const char *dir, const char *name, const char *data, size_t len, char *err,
                      size_t errlen);

#endif

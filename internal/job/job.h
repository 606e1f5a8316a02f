/* job — the job and reply JSON of CONTRACT.md §1–§3: parse and validate a job message (with
 * every size limit), and encode every message the worker publishes or stores (final reply,
 * delta, reset, history entry), plus the JSON string escaper they share.
 * It owns the parsed job_t and the strings it returns. It never does I/O, never logs, and never
 * puts bytes of the input into an error message (messages name fields and limits only).
 *
 * Parsing rules (job_parse):
 * - The whole value must be valid UTF-8 JSON (strict: no raw control characters in strings);
 *   strings must not contain U+0000 (\u0000), since no stage downstream could carry it.
 * - Unknown top-level fields are ignored (forward compatible). Unknown `params` members are
 *   ignored too, but their names are listed in job_t.unknown_params so the caller can log once.
 * - An optional field whose value is JSON null counts as absent.
 * - Codes: too_large for the whole value and for content, system, history (entry size or count)
 *   and metadata over their limits; invalid_job for everything else (ids, types, ranges);
 *   internal_error only when memory ran out (not the job's fault: do not dead-letter it).
 * - Integers (max_tokens, seed, deadline_ms) must be integral JSON numbers within ±2^53.
 * - JSON as RFC 8259 has it (read with json/, no tree): nesting at most JSON_MAX_DEPTH (64) deep,
 *   a lone UTF-16 surrogate escape is an error, a leading UTF-8 byte order mark is skipped. */
#ifndef PARLEY_JOB_H
#define PARLEY_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* Error codes of the reply's error.code (CONTRACT §2) and of job_parse. */
typedef enum {
    JOB_ERR_NONE = 0,
    JOB_ERR_INVALID_JOB,
    JOB_ERR_DEADLINE_EXCEEDED,
    JOB_ERR_ALL_PROVIDERS_FAILED,
    JOB_ERR_HISTORY_UNAVAILABLE,
    JOB_ERR_UNKNOWN_ROUTE,
    JOB_ERR_REPLY_TOPIC_NOT_ALLOWED,
    JOB_ERR_TOO_LARGE,
    JOB_ERR_INTERNAL,
} job_error_code_t;

/* "invalid_job", "too_large", ... ("none" for JOB_ERR_NONE). */
const char *job_error_code_name(job_error_code_t code);

typedef struct {
    size_t max_message_bytes;       /* the whole value (kafka.max_message_bytes), default 1 MiB */
    size_t max_job_id;              /* 128 */
    size_t max_conversation_id;     /* 256 */
    size_t max_content_bytes;       /* message.content, 256 KiB */
    size_t max_system_bytes;        /* 64 KiB */
    size_t max_history_messages;    /* 1000 */
    size_t max_history_entry_bytes; /* 64 KiB: an inline entry's content, or a stored entry's JSON */
    size_t max_metadata_bytes;      /* 16 KiB, serialized compactly */
    size_t max_stop;                /* 4 stop sequences */
    size_t max_stop_bytes;          /* 256 bytes per stop sequence */
    size_t max_route;               /* 128 bytes */
} job_limits_t;

job_limits_t job_limits_default(void);

/* Why a value is not a valid job. Even then, job_id / conversation_id / metadata_json are set
 * (malloc'd copies) when they could be read and are valid, so that an error reply can be sent:
 * from its members when the value is a JSON object, else (too large, not JSON, bad UTF-8) by a
 * tree-free scan of the value's first max_message_bytes for those top-level members. */
typedef struct {
    job_error_code_t code; /* JOB_ERR_NONE on success */
    char message[256];     /* "message.content: must be a string", "job_id: longer than 128 bytes" */
    char *job_id;          /* NULL when not readable */
    char *conversation_id; /* NULL when not readable */
    char *metadata_json;   /* NULL when absent or not valid; compacted as in job_t */
} job_error_t;

bool job_error_ids_readable(const job_error_t *err);
/* Frees the copies; safe on a zeroed or already freed job_error_t. */
void job_error_free(job_error_t *err);

typedef struct {
    bool has_temperature;
    double temperature; /* 0..2 */
    bool has_top_p;
    double top_p; /* 0..1 */
    bool has_max_tokens;
    int64_t max_tokens; /* 1..1,000,000 */
    bool has_seed;
    int64_t seed;
    const char **stop; /* NULL when absent; a single string gives n_stop = 1 */
    size_t n_stop;
} job_params_t;

/* A parsed, valid job. Strings are NUL-terminated, valid UTF-8 without NUL, and live until job_free:
 * they are decoded from the value into the job's own allocation, after the job_t (the value itself
 * may go at once). Roles are static strings. */
typedef struct {
    const char *job_id;
    const char *conversation_id;
    chat_message_t message; /* role "user", content non-empty */
    const char *route;      /* NULL = "default" */
    const char *system;     /* NULL = none; "" is kept as given */
    size_t system_len;
    bool has_history;        /* inline history given (possibly empty): use it instead of Redis */
    chat_message_t *history; /* n_history entries, oldest first */
    size_t n_history;
    job_params_t params;
    bool stream;
    const char *reply_topic; /* NULL = kafka.reply_topic */
    bool has_deadline;
    int64_t deadline_ms;       /* Unix epoch ms */
    const char *metadata_json; /* the object as given, whitespace between tokens dropped; NULL when absent */
    char unknown_params[128];  /* "a,b" names of ignored params members ("...": more), "" none */
} job_t;

/* Parses and validates one job value of len bytes (not necessarily NUL-terminated). limits NULL
 * = defaults. Returns 0 and *out (free with job_free), or -1 with *err filled. *err is always
 * initialized; call job_error_free(err) afterwards in both cases. */
int job_parse(const char *value, size_t len, const job_limits_t *limits, job_t **out, job_error_t *err);
void job_free(job_t *job);

/* Parses one stored history entry {"role":"system|user|assistant","content":STRING} of at most
 * max_bytes. Returns 0 with out->role static and out->content a malloc'd NUL-terminated copy
 * (release with job_message_release), or -1 with *err set (the caller skips the entry). */
int job_history_entry_parse(const char *value, size_t len, size_t max_bytes, chat_message_t *out,
                            job_error_t *err);
void job_message_release(chat_message_t *m);

/* ---- encoding: every function returns a malloc'd NUL-terminated string (caller frees with
 * free()) and its length in *len (when len is not NULL), or NULL when memory ran out. ---- */

typedef enum { JOB_STATUS_OK = 0, JOB_STATUS_ERROR, JOB_STATUS_EXPIRED } job_status_t;
typedef enum {
    JOB_OUTCOME_WON = 0,
    JOB_OUTCOME_LOST,      /* finished after the winner */
    JOB_OUTCOME_CANCELLED, /* stopped because another provider won */
    JOB_OUTCOME_ERROR,
    JOB_OUTCOME_TIMEOUT,
    JOB_OUTCOME_SKIPPED, /* breaker open, rate limited, not needed */
} job_outcome_t;

const char *job_status_name(job_status_t status);
const char *job_outcome_name(job_outcome_t outcome);

/* One provider attempt. Optional members: -1 = omitted (first_token_ms, started_after_ms),
 * 0 = omitted (http_status, retries), NULL = omitted (reason). */
typedef struct {
    const char *provider;
    job_outcome_t outcome;
    int64_t latency_ms;
    int http_status;
    int64_t first_token_ms;
    int retries;
    const char *reason;       /* "hedge_after_ms=120", "breaker_open", "rate_limited", error text */
    int64_t started_after_ms; /* since the job's LLM stage started (hedges, fallbacks) */
} job_attempt_t;

/* Stage timings in ms; -1 = unknown, omitted. */
typedef struct {
    int64_t queued_ms, history_ms, first_token_ms, llm_ms, total_ms;
} job_timing_t;

/* Everything a final reply says. job_reply_init sets the optional members to "omitted". */
typedef struct {
    const char *job_id;          /* required */
    const char *conversation_id; /* required */
    job_status_t status;
    job_error_code_t error_code; /* status error/expired */
    const char *error_message;   /* status error/expired; NULL = "" */
    const char *content;         /* status ok: the assistant's text (may be invalid UTF-8: replaced) */
    size_t content_len;
    const char *finish_reason; /* NULL = omitted */
    const char *provider;      /* NULL = omitted */
    const char *model;         /* NULL = omitted */
    bool has_usage;
    int64_t prompt_tokens, completion_tokens, total_tokens;
    bool has_cost;
    double cost_usd;
    job_timing_t timing;
    const job_attempt_t *attempts;
    size_t n_attempts;
    const char *metadata_json; /* JSON object text from job_t / job_error_t, copied verbatim; NULL = {} */
} job_reply_t;

void job_reply_init(job_reply_t *r, const char *job_id, const char *conversation_id);
void job_attempt_init(job_attempt_t *a, const char *provider, job_outcome_t outcome);

/* The final reply, fields in CONTRACT §2 order: type, job_id, conversation_id, status,
 * message (ok) | error (error, expired), finish_reason, provider, model, usage, cost_usd, timing,
 * attempts, metadata. timing, attempts and metadata are always present. */
char *job_reply_encode(const job_reply_t *r, size_t *len);
/* {"type":"delta","job_id","conversation_id","seq","delta","provider"} */
char *job_delta_encode(const char *job_id, const char *conversation_id, uint64_t seq, const char *delta,
                       size_t delta_len, const char *provider, size_t *len);
/* {"type":"reset","job_id","conversation_id","reason"} */
char *job_reset_encode(const char *job_id, const char *conversation_id, const char *reason, size_t *len);
/* {"role":..,"content":..} for the Redis history list; a NUL in content is stored as U+FFFD, so
 * that every entry it writes job_history_entry_parse reads back. */
char *job_history_entry_encode(const chat_message_t *m, size_t *len);

/* Appends s[0..n) as a quoted JSON string: escapes quotes, backslash and control characters,
 * keeps valid UTF-8 as is, replaces each byte of an invalid sequence with U+FFFD; with
 * JOB_JSON_ESCAPE_LINESEP also escapes U+2028/U+2029, with JOB_JSON_NUL_AS_FFFD writes a NUL byte
 * as U+FFFD instead of \u0000 (which job_parse and job_history_entry_parse reject). 0, or -1 when
 * b is full or out of memory (b then holds a partial string). */
#define JOB_JSON_ESCAPE_LINESEP 1u
#define JOB_JSON_NUL_AS_FFFD    2u
int job_json_append_string(buf_t *b, const char *s, size_t n, unsigned flags);

#endif

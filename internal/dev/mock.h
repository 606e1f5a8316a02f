/* mock.h — private to dev/: the mock provider's state shared by its HTTP server (mock_http.c),
 * its knobs and counters (mock_knobs.c) and its wire formats (mock_wire.c). */
#ifndef PARLEY_DEV_MOCK_H
#define PARLEY_DEV_MOCK_H

#include "base/base.h"
#include "dev/dev.h"

#define MOCK_MAX_HEADERS     64
#define MOCK_MAX_HEAD_BYTES  (16 * 1024)
#define MOCK_MAX_BODY_BYTES  (8 * 1024 * 1024)
#define MOCK_MAX_LAST_BYTES  4096
#define MOCK_PREFIX_BYTES    24
#define MOCK_MAX_STATUSES    24
#define MOCK_MAX_TRACE_BYTES 520
#define MOCK_READ_BUF        (64 * 1024)

typedef struct {
    int64_t latency_ms, tail_ms, token_ms, fail_status, fail_next, retry_after_s;
    int64_t cut_after, error_after, drip_ms, pad_bytes, seed;
    double tail_prob, fail_rate;
    bool not_json, comments, crlf, ping, thinking;
} mock_knobs_t;

typedef enum {
    EP_CHAT = 0,
    EP_MESSAGES,
    EP_STATS,
    EP_STATS_RESET,
    EP_CONTROL,
    EP_OTHER,
    EP_COUNT
} mock_endpoint_t;

typedef struct {
    uint64_t requests, streamed, by_endpoint[EP_COUNT];
    uint64_t disconnects, cut, bytes_out, connections_total;
    int64_t in_flight, in_flight_peak, connections_open;
    int64_t first_request_ms, last_request_ms;
    int64_t rps_second;           /* the wall second being counted */
    uint64_t rps_count, rps_peak; /* requests in that second; the most in any second */
    struct {
        int status;
        uint64_t count;
    } statuses[MOCK_MAX_STATUSES];
    char last_traceparent[MOCK_MAX_TRACE_BYTES]; /* of the last request that had one ("" none) */
    char last_tracestate[MOCK_MAX_TRACE_BYTES];
    uint64_t traceparents; /* requests that carried a traceparent */
} mock_stats_t;

struct dev_mock {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listening, closing;
    int open_handles; /* listener + every connection; the mock is freed when it reaches 0 */
    char *name;
    dev_mock_type_t type;
    int port;
    mock_knobs_t knobs;
    uint64_t rng;
    uint64_t next_id;
    mock_stats_t stats;
    struct mock_conn *conns;  /* every open connection, for closing */
    char rbuf[MOCK_READ_BUF]; /* shared read buffer: reads are copied out at once */
};

/* What a parsed API request asks for; the answer is computed before the wait. */
typedef struct {
    char *model;
    char *text; /* the answer text */
    size_t text_len;
    bool stream, include_usage;
    int64_t prompt_tokens;
    int64_t max_tokens; /* -1 when absent */
} mock_call_t;

/* ---- knobs and counters (mock_knobs.c) ---- */
void mock_knobs_defaults(mock_knobs_t *k);
/* Sets one knob from its text value. 0, or -1 and err. */
int mock_knob_set(dev_mock_t *m, const char *name, const char *value, char *err, size_t errlen);
/* Applies a JSON object of knobs. 0, or -1 and err (knobs before the bad one stay applied). */
int mock_knobs_set_json(dev_mock_t *m, const char *json, size_t len, char *err, size_t errlen);
int mock_knobs_json(const dev_mock_t *m, buf_t *out);
int mock_stats_json(const dev_mock_t *m, buf_t *out);
void mock_stats_reset(dev_mock_t *m);
void mock_stats_status(dev_mock_t *m, int status);
/* A uniform draw in [0,1) from the mock's seeded source. */
double mock_rand(dev_mock_t *m);

/* ---- wire formats (mock_wire.c) ---- */
/* Parses a request body into call. 0; or the HTTP status of the error (400) with err set. */
int mock_call_parse(const dev_mock_t *m, const char *body, size_t len, mock_call_t *call, char *err,
                    size_t errlen);
void mock_call_clear(mock_call_t *call);
/* Appends JSON-escaped s (without quotes). */
int mock_json_escape(buf_t *b, const char *s, size_t n);
/* The provider's error body for status with message. */
int mock_error_body(dev_mock_type_t type, int status, const char *message, buf_t *out);
/* The whole non-streaming answer body. */
int mock_answer_json(const dev_mock_t *m, const mock_call_t *call, const char *id, buf_t *out);
/* Stream events; each appends complete SSE events to out. */
int mock_sse_start(const dev_mock_t *m, const mock_call_t *call, const char *id, buf_t *out);
int mock_sse_token(const dev_mock_t *m, const mock_call_t *call, const char *id, const char *tok, size_t n,
                   buf_t *out);
int mock_sse_end(const dev_mock_t *m, const mock_call_t *call, const char *id, int64_t tokens, buf_t *out);
int mock_sse_error(const dev_mock_t *m, buf_t *out);
int mock_sse_comment(const dev_mock_t *m, buf_t *out);
/* Anthropic ping event (nothing for OpenAI). */
int mock_sse_ping(const dev_mock_t *m, buf_t *out);
/* The number of tokens (words) of text. */
int64_t mock_count_tokens(const char *text, size_t len);

#endif

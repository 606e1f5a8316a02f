/* mock.h — private to dev/: the mock provider's state shared by its HTTP/1.1 server and call logic
 * (mock_http.c), its HTTP/2 transport (mock_h2.c), its knobs and counters (mock_knobs.c) and its
 * wire formats (mock_wire.c). */
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
#define MOCK_H2_PREFACE      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define MOCK_H2_PREFACE_LEN  24

typedef struct {
    int64_t latency_ms, tail_ms, token_ms, fail_status, fail_next, retry_after_s;
    int64_t cut_after, error_after, drip_ms, pad_bytes, seed;
    int64_t h2_max_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS of new HTTP/2 connections */
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
    uint64_t h2_connections_total, h2_streams_total;
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
    int open_handles; /* listener, connections, HTTP/2 stream timers; the mock is freed at 0 */
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

/* ---- calls and their transports (mock_http.c) ---- */
typedef struct mock_stream mock_stream_t;
typedef struct mock_conn mock_conn_t;
typedef struct mock_h2 mock_h2_t;

/* A response head as the call logic decides it; each transport renders it its own way. */
typedef struct {
    int status;
    const char *ctype;
    long long body_len;      /* -1: length unknown, the body is streamed */
    long long retry_after_s; /* 0: no Retry-After */
    const char *id_name;     /* the request id header's name, id its value ("" none) */
    const char *id;
} mock_head_t;

/* Where a call's response goes: the HTTP/1.1 connection or one HTTP/2 stream. head, write, end
 * and cut only queue (end fails -1 out of memory); flush sends up to max queued bytes and returns how many
 * stay queued, or -1 when the transport failed (the stream is then finished; do not touch it). Once the last
 * byte after end or cut has gone out (cut: then the connection closes or the stream is reset), or the client
 * went away, the transport calls mock_stream_finish. reset abandons the response now. */
typedef struct {
    int (*head)(mock_stream_t *s, const mock_head_t *h);
    int (*write)(mock_stream_t *s, const char *data, size_t n);
    int (*end)(mock_stream_t *s);
    void (*cut)(mock_stream_t *s);
    int64_t (*flush)(mock_stream_t *s, size_t max);
    void (*reset)(mock_stream_t *s);
} mock_sink_t;

/* One call (one request and its response). The transport sets m, sink and timer.data and owns the
 * timer handle (init and close); the rest belongs to the call logic. */
struct mock_stream {
    dev_mock_t *m;
    const mock_sink_t *sink;
    uv_timer_t timer; /* latency, token gaps, drip ticks */
    mock_call_t call;
    char id[48];
    size_t tok_off;    /* offset in call.text of the next token */
    int64_t toks_sent; /* content tokens sent */
    int status;
    bool api, in_flight, started, cut, dripping;
};

/* Serves one complete request on s. */
void mock_stream_request(mock_stream_t *s, const char *method, size_t mlen, const char *path, size_t plen,
                         const char *body, size_t blen);
/* Answers the provider's error body for status at once (a request the transport refused). */
void mock_stream_error(mock_stream_t *s, int status, const char *message);
/* Ends the call on s (counters: in_flight, and disconnects when lost, cut when cut) and clears it for
 * the next request; a second call does nothing. */
void mock_stream_finish(mock_stream_t *s, bool lost);
/* Notes a request header the counters keep (traceparent, tracestate); others are ignored. */
void mock_note_header(dev_mock_t *m, const char *name, size_t nlen, const char *val, size_t vlen);
/* Queues b's bytes on the connection (taking them). 0, or -1 after the connection closed as lost. */
int mock_conn_write(mock_conn_t *c, buf_t *b);
/* Closes the connection (its calls end, not counted as disconnects). */
void mock_conn_close(mock_conn_t *c);
/* A handle counted in m->open_handles closed; frees the mock when it was the last after closing. */
void mock_handle_released(dev_mock_t *m);

/* ---- HTTP/2 (mock_h2.c) ---- */
/* Serves connection c as HTTP/2 (the client preface has been seen). NULL when out of memory. */
mock_h2_t *mock_h2_new(dev_mock_t *m, mock_conn_t *c);
/* Feeds bytes read from the connection (preface included) and sends what is due. */
void mock_h2_input(mock_h2_t *h, const char *data, size_t n);
/* One write of the connection completed; sends what is due next. */
void mock_h2_written(mock_h2_t *h);
/* The connection is closing: ends every open stream (as disconnects when lost). */
void mock_h2_end(mock_h2_t *h, bool lost);
/* Frees the session once the connection's handles are closed. */
void mock_h2_free(mock_h2_t *h);

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

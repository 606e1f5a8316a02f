/* dev — the embedded development stack behind `parley dev`: a Kafka-protocol broker (librdkafka's
 * mock cluster) and mock LLM providers that speak the real OpenAI Chat Completions and Anthropic
 * Messages wire formats over HTTP/1.1 and HTTP/2 (h2c) on a libuv loop, with knobs for latency, failures and
 * stream faults, counters that tests read, and an HTTP control to inject broker faults.
 * It owns: the mock cluster and its dummy rd_kafka_t, the broker fault control's HTTP daemon, the
 * mock providers' listeners, connections, timers and counters, and the stack runner (ready file
 * with the control's URL under "broker_control", generated worker config, signals).
 * It never talks to anything but loopback (or the given host), never blocks its loop, never
 * exits the process, and never logs request bodies or keys.
 *
 * Mock provider answer text (so tests can check which prompt arrived). Let L be the request's
 * conversation as a list: the top-level "system" (Anthropic) first when present, then
 * "messages" in order. The answer is
 *     [NAME] n=<len(L)> sys=<SYS> prev=<PREV> | <LAST>
 * NAME the provider's name; SYS the first 24 bytes of the first system (or developer) message
 * of L, or "-"; PREV the first 24 bytes of L[len-2], or "-" when len(L) < 2; LAST the content of
 * the last message of L whose role is "user" (at most 4096 bytes), or "-". Content given as an
 * array of blocks counts its "text" blocks joined. Newlines in SYS and PREV become spaces.
 * With pad_bytes=N, " pad pad pad..." (N more bytes) follows.
 * Requests: HTTP/1.1 with keep-alive, at most 64 headers in 16 KiB, a Content-Length body of at most
 * 8 MiB (chunked request bodies get 501), Expect: 100-continue honoured; or HTTP/2 with prior
 * knowledge (a connection that starts with the h2 preface, mock_h2.c): the same bounds (431 / 413),
 * many streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS = h2_max_streams).
 * Tokens are the words of the answer, each with its trailing space; a stream sends one token per
 * content chunk, usage reports completion tokens = words sent and prompt tokens = (bytes of all
 * message contents + 3) / 4, at least 1.
 *
 * HTTP endpoints of each mock provider (base_url is http://HOST:PORT/v1):
 *   POST /v1/chat/completions   (type openai)     POST /v1/messages   (type anthropic)
 *   GET  /stats                 counters and knobs, JSON: requests{total,streamed,by_endpoint{..}},
 *                               responses{"200":n,..}, in_flight{now,peak}, client_disconnects (the
 *                               client left before the answer ended), cut_streams, bytes_out,
 *                               connections{open,total}, first_request_ms, last_request_ms (wall
 *                               clock of API calls), peak_rps (most API calls in one wall second),
 *                               h2_connections_total, h2_streams_total (a stream the client resets
 *                               before its answer ended counts in client_disconnects), knobs
 *   POST /stats/reset           zero the counters (in_flight.now stays)
 *   GET  /control               the knobs, JSON
 *   POST /control               JSON object {"knob": value, ...}: change knobs at run time
 *
 * Knobs (spec "k=v,k=v" or /control JSON; defaults in brackets):
 *   latency_ms [0]     time to the first byte (response headers, or the first stream event)
 *   tail_ms [0], tail_prob [0]   that fraction of requests waits tail_ms instead of latency_ms
 *   token_ms [0]       gap between stream content chunks
 *   fail_rate [0], fail_status [500]   that fraction of requests fails with this status
 *   fail_next [0]      the next N requests fail with fail_status (then counts down)
 *   retry_after_s [1]  Retry-After on 429/503/529 (0 = no header)
 *   cut_after [-1]     close the connection (HTTP/2: reset the stream, INTERNAL_ERROR) after K stream
 *                      tokens (no [DONE] / message_stop), or, for JSON answers, after K body bytes;
 *                      -1 = off
 *   error_after [-1]   send a mid-stream error event after K tokens, then end the stream
 *   drip_ms [0]        send the whole response (HTTP/2: the body) one byte every N ms
 *   not_json [0]       200 with a body that is not JSON
 *   pad_bytes [0]      make the answer N bytes longer
 *   comments [1]       SSE comment lines (": keep-alive") before the first event and every 4 tokens
 *   crlf [0]           SSE lines end with CRLF
 *   ping [1]           Anthropic ping events
 *   thinking [0]       Anthropic thinking block (thinking_delta, signature_delta) before the text
 *   h2_max_streams [128]  streams an HTTP/2 connection may carry at once (read when it opens)
 *   seed [1]           seeds the per-provider random source (tail and failure draws); setting it
 *                      restarts the sequence, so runs are repeatable
 * A failing request waits its latency too, then answers the provider's real error body
 * (OpenAI {"error":{message,type,param,code}}; Anthropic {"type":"error","error":{type,message}};
 * 429 rate_limit_error, 529 overloaded_error). */
#ifndef PARLEY_DEV_H
#define PARLEY_DEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <uv.h>

/* ---- broker ---- */

typedef struct dev_broker dev_broker_t;

/* Starts a mock cluster of n_brokers (1..16) on 127.0.0.1, ports chosen by librdkafka 2.0.2
 * (it cannot bind given ports). NULL and err on failure. */
dev_broker_t *dev_broker_new(int n_brokers, char *err, size_t errlen);
/* Creates a topic (replication 1). 0, or -1 and err. */
int dev_broker_topic_create(dev_broker_t *b, const char *topic, int partitions, char *err, size_t errlen);
/* "127.0.0.1:p1,127.0.0.1:p2,..." — valid until dev_broker_free. */
const char *dev_broker_bootstraps(const dev_broker_t *b);
/* The mock cluster, for fault injection (rd_kafka_mock_push_request_errors, broker down/up). */
rd_kafka_mock_cluster_t *dev_broker_cluster(dev_broker_t *b);
void dev_broker_free(dev_broker_t *b);

/* ---- broker fault control (HTTP on 127.0.0.1, port chosen by the kernel; own thread) ----
 * Every request is a POST; the answer is text/plain: 200, 400 (bad arguments), 404, 409 (the
 * cluster refused: an unknown broker or partition; an unknown topic is created by the mock).
 *   POST /broker/down?id=N                 broker N (1-based) stops answering (connections closed)
 *   POST /broker/up?id=N                   broker N is back
 *   POST /partition/leader?topic=T&partition=P&broker=N   move the leader (-1 = no leader)
 *   POST /errors?api=API&code=CODE&count=N the next N requests of API (name such as Produce, Fetch,
 *                                          OffsetCommit, JoinGroup, Heartbeat, or its number) fail
 *                                          with CODE (librdkafka name without RD_KAFKA_RESP_ERR_,
 *                                          e.g. NOT_ENOUGH_REPLICAS, _TRANSPORT, or the number);
 *                                          N 1..1000 (default 1), cluster-wide
 *   POST /errors/clear?api=API             drop the errors still pending for API */
typedef struct dev_broker_control dev_broker_control_t;

/* Starts the control endpoint for b's cluster. NULL and err on failure. */
dev_broker_control_t *dev_broker_control_new(dev_broker_t *b, char *err, size_t errlen);
int dev_broker_control_port(const dev_broker_control_t *bc);
/* Stops the endpoint (joins its thread). Call before dev_broker_free. */
void dev_broker_control_free(dev_broker_control_t *bc);

/* ---- mock LLM providers ---- */

typedef enum { DEV_MOCK_OPENAI = 0, DEV_MOCK_ANTHROPIC } dev_mock_type_t;

typedef struct dev_mock dev_mock_t;

/* Creates a mock provider on loop (not yet listening). knobs is "k=v,k=v" or NULL.
 * NULL and err on a bad knob or out of memory. */
dev_mock_t *dev_mock_new(uv_loop_t *loop, const char *name, dev_mock_type_t type, const char *knobs,
                         char *err, size_t errlen);
/* Listens on host:port (port 0 = chosen by the kernel). 0, or a negative uv error and err. */
int dev_mock_listen(dev_mock_t *m, const char *host, int port, char *err, size_t errlen);
/* The port it listens on (after dev_mock_listen). */
int dev_mock_port(const dev_mock_t *m);
const char *dev_mock_name(const dev_mock_t *m);
dev_mock_type_t dev_mock_type(const dev_mock_t *m);
/* Changes knobs from "k=v,k=v" (loop thread only). 0, or -1 and err naming the knob.
 * The process should ignore SIGPIPE (dev_run does) so that a write to a vanished client fails
 * with EPIPE instead of killing it. */
int dev_mock_set_knobs(dev_mock_t *m, const char *spec, char *err, size_t errlen);
/* Closes the listener and every connection; the mock frees itself when its last handle has closed
 * (run the loop on). Loop thread only. */
void dev_mock_close(dev_mock_t *m);

/* "openai" / "anthropic" → type; -1 when unknown. */
int dev_mock_type_parse(const char *s);
const char *dev_mock_type_name(dev_mock_type_t t);

/* ---- the stack runner ---- */

typedef struct {
    char *name;
    int partitions;
} dev_topic_t;

typedef struct {
    char *name;
    dev_mock_type_t type;
    char *knobs; /* "k=v,..." or NULL */
    int port;    /* 0 = chosen at run time */
} dev_provider_t;

typedef struct {
    int n_brokers;       /* default 1 */
    bool no_broker;      /* start no broker */
    dev_topic_t *topics; /* topics to create */
    size_t n_topics;
    dev_provider_t *providers;
    size_t n_providers;
    const char *host;         /* providers listen here (default 127.0.0.1) */
    const char *ready_file;   /* JSON written atomically once everything listens; NULL = none */
    const char *write_config; /* worker config YAML pointing at the stack; NULL = none */
    const char *jobs_topic;   /* topic names written into the config (defaults chat.*) */
    const char *reply_topic;
    const char *dlq_topic;
} dev_options_t;

/* Parses a provider spec "NAME:TYPE[:k=v,...]" (port=N among the pairs sets the port) into out
 * (strings owned by out; free with dev_provider_clear). 0, or -1 and err. */
int dev_provider_parse(const char *spec, dev_provider_t *out, char *err, size_t errlen);
void dev_provider_clear(dev_provider_t *p);

/* Runs the stack in the foreground on its own loop until SIGINT/SIGTERM: starts the broker and the
 * providers, prints the bootstrap list and the base URLs, writes the ready file and the config.
 * 0 after a clean stop; -1 and err when something could not start or be written. */
int dev_run(const dev_options_t *opt, char *err, size_t errlen);

#endif

/* llm — provider adapters for the OpenAI Chat Completions API (and every OpenAI-compatible API) and
 * the Anthropic Messages API: they turn chat messages and job params into an HTTP request (URL,
 * headers, JSON body), and turn what comes back — a JSON body or an SSE byte stream in any chunking —
 * into one normalized llm_result_t (text, finish reason, model, usage, provider error and whether it
 * is worth retrying). It also estimates prompt tokens before a call and prices usage afterwards.
 * It owns the request it builds, the SSE parser state and the stream's accumulated answer.
 * It is pure: it never does I/O, never logs, never retries, and never puts an API key anywhere but
 * in the request's header strings (never in an error message). */
#ifndef PARLEY_LLM_H
#define PARLEY_LLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "config/config.h"

/* ---- Request ---------------------------------------------------------------------------------- */

/* Job params (CONTRACT §1). Each is sent only when its has_ flag is set; stop when n_stop > 0. */
typedef struct {
    bool has_temperature;
    double temperature;
    bool has_top_p;
    double top_p;
    bool has_max_tokens;
    int64_t max_tokens;
    const char *const *stop; /* n_stop NUL-terminated strings */
    size_t n_stop;
    bool has_seed;
    int64_t seed;
} llm_params_t;

/* Bits of llm_request_t.dropped_params: params the provider cannot take (logged once by the caller). */
enum {
    LLM_PARAM_TEMPERATURE = 1u << 0,
    LLM_PARAM_TOP_P = 1u << 1,
    LLM_PARAM_MAX_TOKENS = 1u << 2,
    LLM_PARAM_STOP = 1u << 3,
    LLM_PARAM_SEED = 1u << 4,
};

typedef struct {
    char *url;
    char **headers; /* n_headers NUL-terminated "Name: value" strings */
    size_t n_headers;
    char *body; /* JSON, body_len bytes (NUL-terminated too) */
    size_t body_len;
    unsigned dropped_params; /* LLM_PARAM_* bits */
    bool borrowed;           /* url and headers belong to an llm_endpoint_t (llm_request_build_on) */
} llm_request_t;

/* What every request of one provider (streamed or not) shares: the URL and the headers, auth included. */
typedef struct {
    char *url;
    char **headers;
    size_t n_headers;
} llm_endpoint_t;

/* Builds p's endpoint for stream or non-stream calls. 0, or -1 with err (never showing a header value). */
int llm_endpoint_build(const config_provider_t *p, bool stream, llm_endpoint_t *out, char *err,
                       size_t errlen);
void llm_endpoint_free(llm_endpoint_t *e);
/* Like llm_request_build, with the URL and headers borrowed from ep (built for p and stream), which must
 * outlive out: only the body is built per call. */
int llm_request_build_on(const llm_endpoint_t *ep, const config_provider_t *p, const chat_message_t *msgs,
                         size_t n, const llm_params_t *params, bool stream, llm_request_t *out, char *err,
                         size_t errlen);

/* Builds the request for provider p (OpenAI: POST base_url/chat/completions; Anthropic: POST
 * base_url/messages). Anthropic gets the system messages joined by "\n\n" as its top-level `system`,
 * consecutive user/assistant messages of one role merged with "\n\n" (the API requires alternation),
 * max_tokens from params or p->max_tokens_default (it is required), and no seed (reported in
 * dropped_params). Roles other than system/user/assistant are refused. Content that is not valid
 * UTF-8 is sent with U+FFFD in place of the bad bytes. Configured headers are added after the
 * default ones and replace a default of the same name. 0 on success; -1 with err filled (never
 * containing a secret or a header value) and out zeroed. */
int llm_request_build(const config_provider_t *p, const chat_message_t *msgs, size_t n,
                      const llm_params_t *params, bool stream, llm_request_t *out, char *err, size_t errlen);
void llm_request_free(llm_request_t *r);

/* Prompt tokens before the call, for rate limiting: ceil(bytes / 4) per message plus 4 per message
 * for role and framing, plus 3 for the reply's priming — the usual English-text rule of thumb; the
 * caller corrects its budget from the reported usage afterwards. */
int64_t llm_estimate_prompt_tokens(const chat_message_t *msgs, size_t n);

/* ---- Result ----------------------------------------------------------------------------------- */

typedef enum {
    LLM_ERR_NONE = 0,
    LLM_ERR_PROVIDER,  /* the provider answered with an error: non-2xx status, error body or event */
    LLM_ERR_MALFORMED, /* a 2xx answer that is not what the API defines (not JSON, fields missing) */
    LLM_ERR_CUT,       /* the stream ended before its end marker ([DONE] / message_stop) */
    LLM_ERR_LIMIT,     /* an SSE line or event is over its bound */
    LLM_ERR_NOMEM,     /* out of memory */
} llm_err_kind_t;

/* Whether the same request may succeed if sent again (to this provider, after a backoff). */
typedef enum { LLM_RETRY_NO = 0, LLM_RETRY_YES } llm_retry_t;

typedef struct {
    llm_err_kind_t kind;
    llm_retry_t retry;
    int http_status;   /* as given by the caller; 0 for a stream's own errors */
    char type[64];     /* provider's error type, else malformed_response|stream_cut|sse_limit|
                          out_of_memory|http_<status> */
    char code[64];     /* provider's error code when it gave one (OpenAI), else "" */
    char message[512]; /* provider's message or ours; truncated on a UTF-8 boundary */
} llm_error_t;

typedef struct {
    int64_t prompt_tokens; /* Anthropic: input + cache_creation_input + cache_read_input tokens */
    int64_t completion_tokens;
    int64_t total_tokens;
    bool has; /* the provider reported usage */
} llm_usage_t;

typedef struct {
    char *text; /* the answer text (NUL-terminated, text_len bytes); NULL on error */
    size_t text_len;
    /* stop | length | content_filter | tool_calls | the raw value when unknown | "" when absent.
     * Anthropic end_turn/stop_sequence → stop, max_tokens → length, tool_use → tool_calls,
     * refusal → content_filter; OpenAI function_call → tool_calls. */
    char finish_reason[32];
    char finish_reason_raw[32];
    char model[128];
    llm_usage_t usage;
    llm_error_t error; /* error.kind == LLM_ERR_NONE on success */
} llm_result_t;

/* Parses a whole (non-streamed) response body; the caller bounds len. A non-2xx status or an error
 * body is LLM_ERR_PROVIDER, a 2xx body that is not valid JSON or lacks the answer's fields is
 * LLM_ERR_MALFORMED — never an empty success. Anthropic text is the concatenation of the `text`
 * blocks only (thinking, redacted_thinking and tool_use are skipped). 0 on success; -1 with
 * out->error filled. Either way out is the caller's to llm_result_free. */
int llm_response_parse(provider_type_t t, int http_status, const char *body, size_t len, llm_result_t *out);
void llm_result_free(llm_result_t *r);

/* Retry class of an error from its HTTP status, else (status 0 or 2xx: an error event or body)
 * from the provider's error type. Retryable: 408, 409, 429, 5xx, 529, overloaded_error,
 * rate_limit_error, api_error, server_error and unknown types; permanent: every other status,
 * invalid_request_error, authentication_error, permission_error, not_found_error, request_too_large,
 * billing_error, insufficient_quota. */
llm_retry_t llm_error_classify(int http_status, const char *type);
const char *llm_err_kind_name(llm_err_kind_t k);

/* ---- SSE (WHATWG EventSource parsing) --------------------------------------------------------- */

#define LLM_SSE_DEFAULT_MAX (1024u * 1024u)

/* Line ends CRLF, LF or CR (also when split across chunks); ':' comments; "field: value" with one
 * leading space removed; data lines joined by "\n"; a blank line dispatches when data is non-empty;
 * id and retry are ignored; a UTF-8 BOM at stream start is skipped. */
typedef struct {
    buf_t line;
    buf_t data;
    buf_t type;
    size_t max_line; /* bytes of one line, without its end */
    size_t max_data; /* bytes of one event's data */
    int bom;         /* BOM bytes matched so far; 3 = BOM phase over */
    bool after_cr;   /* the last line ended in CR: a following LF belongs to it */
    bool dispatched; /* an event was handed out: clear it at the next feed */
    int err;         /* sticky LLM_SSE_E_* once failed */
} llm_sse_t;

typedef struct {
    const char *type; /* "message" when the event had no event field */
    size_t type_len;
    const char *data; /* NUL-terminated; may contain NUL bytes, data_len is authoritative */
    size_t data_len;
} llm_sse_event_t;

enum {
    LLM_SSE_NEED_MORE = 0,
    LLM_SSE_EVENT = 1,
    LLM_SSE_E_LINE = -1,
    LLM_SSE_E_DATA = -2,
    LLM_SSE_E_NOMEM = -3
};

/* Limits of 0 mean LLM_SSE_DEFAULT_MAX. llm_sse_init allocates nothing. */
void llm_sse_init(llm_sse_t *p, size_t max_line, size_t max_data);
/* Pull parser: consumes bytes of in until an event is complete. Returns LLM_SSE_EVENT with *ev valid
 * until the next call (and *used = bytes consumed, the rest to be fed again), LLM_SSE_NEED_MORE when
 * all n bytes are consumed, or a negative LLM_SSE_E_* (sticky). */
int llm_sse_feed(llm_sse_t *p, const char *in, size_t n, size_t *used, llm_sse_event_t *ev);
void llm_sse_free(llm_sse_t *p);

/* ---- Streams ---------------------------------------------------------------------------------- */

/* The receiver of a stream's text, defined by the caller (struct llm_stream_sink { ... } in its own
 * file); llm only passes the pointer back. */
typedef struct llm_stream_sink llm_stream_sink_t;
/* A piece of answer text (never empty, not NUL-terminated); first is true for the first piece of the
 * stream (time to first token). It must not free the stream. */
typedef void (*llm_on_delta_fn)(llm_stream_sink_t *sink, const char *text, size_t len, bool first);

typedef struct llm_stream llm_stream_t;

/* A stream interpreter for a 2xx text/event-stream response of provider type t (for a non-2xx
 * status, give the body to llm_response_parse instead). Limits as llm_sse_init; on_delta may be
 * NULL. NULL when out of memory. */
llm_stream_t *llm_stream_new(provider_type_t t, size_t max_line, size_t max_event, llm_on_delta_fn on_delta,
                             llm_stream_sink_t *sink);
/* Feeds raw bytes in any chunking. 0, or -1 once the stream has failed (an error event, malformed
 * data, a limit, no memory: sticky, the caller can stop reading). Bytes after the end marker are
 * ignored. */
int llm_stream_feed(llm_stream_t *s, const char *chunk, size_t n);
/* True once the end marker arrived: OpenAI `data: [DONE]`, Anthropic `message_stop`. */
bool llm_stream_complete(const llm_stream_t *s);
/* At the end of the bytes: fills out (text, finish reason, model, usage) and returns 0 when the
 * stream is complete; else -1 with out->error: the stream's failure, or LLM_ERR_CUT "stream ended
 * before [DONE]" / "before message_stop". Call once; out is the caller's to llm_result_free. */
int llm_stream_finish(llm_stream_t *s, llm_result_t *out);
void llm_stream_free(llm_stream_t *s);

/* ---- Cost ------------------------------------------------------------------------------------- */

/* USD for usage u at p's price.input_per_mtok / price.output_per_mtok (cache tokens, counted in
 * prompt_tokens, are priced as input). 0, or -1 when prices are not set or usage was not reported. */
int llm_cost_usd(const config_provider_t *p, const llm_usage_t *u, double *out);

#endif

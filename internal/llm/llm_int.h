/* llm_int.h — what the files of the llm module share and nobody else includes: the provider table,
 * the JSON writer used for request bodies, result and error helpers, and the stream's state. */
#ifndef PARLEY_LLM_INT_H
#define PARLEY_LLM_INT_H

#include <cjson/cJSON.h>

#include "llm/llm.h"

/* A list of "Name: value" header strings under construction. */
typedef struct {
    char **v;
    size_t n;
} llm_headers_t;

struct llm_stream {
    provider_type_t type;
    llm_sse_t sse;
    llm_on_delta_fn on_delta;
    llm_stream_sink_t *sink;
    buf_t text;
    llm_result_t res; /* everything but text; res.error set once failed */
    bool complete;
    bool started; /* a well-formed chunk (OpenAI) / message_start (Anthropic) arrived */
    bool first_sent;
    int64_t counts[4]; /* Anthropic's running usage: input, cache creation, cache read, output */
};

/* One provider: its request path, its auth headers, its body, its answer and its stream events. */
typedef struct {
    const char *path;
    const char *end_marker; /* named in the "stream ended before ..." error */
    const char *done_data;  /* event data that ends the stream and is no JSON (OpenAI "[DONE]"), or NULL */
    int (*auth_headers)(llm_headers_t *h, const config_provider_t *p);
    int (*body)(buf_t *b, const config_provider_t *p, const chat_message_t *msgs, size_t n,
                const llm_params_t *params, bool stream, unsigned *dropped, char *err, size_t errlen);
    int (*parse)(const cJSON *root, llm_result_t *out);
    /* One stream event: root is its JSON object data, or NULL for done_data. */
    int (*event)(llm_stream_t *s, const llm_sse_event_t *ev, const cJSON *root);
} llm_provider_t;

extern const llm_provider_t llm_openai;
extern const llm_provider_t llm_anthropic;
const llm_provider_t *llm_provider_of(provider_type_t t);

/* JSON writer (every call returns 0 or -1 when out of memory). */
int llm_jw_str_open(buf_t *b);
int llm_jw_str_bytes(buf_t *b, const char *s, size_t n); /* escaped, invalid UTF-8 → U+FFFD */
int llm_jw_str_close(buf_t *b);
int llm_jw_key(buf_t *b, const char *key); /* ,"key": — comma only when the object has members */
int llm_jw_string(buf_t *b, const char *key, const char *s, size_t n);
/* "content":"..." of m: its content_json copied when it has one, else its content escaped. */
int llm_jw_content(buf_t *b, const chat_message_t *m);
int llm_jw_double(buf_t *b, const char *key, double v);
int llm_jw_int(buf_t *b, const char *key, int64_t v);
int llm_jw_bool(buf_t *b, const char *key, bool v);
int llm_jw_str_array(buf_t *b, const char *key, const char *const *v, size_t n);
/* Writes the params every provider takes the same way (temperature, top_p) plus stop under stop_key. */
int llm_jw_common_params(buf_t *b, const llm_params_t *params, const char *stop_key);

int llm_headers_add(llm_headers_t *h, const char *name, const char *value);
/* Role check shared by the bodies: 0 for system/user/assistant, else -1 with err. */
int llm_check_role(const chat_message_t *m, char *err, size_t errlen);

/* Result helpers. */
void llm_copy_str(char *dst, size_t cap, const char *src); /* truncates on a UTF-8 boundary */
int llm_fail(llm_result_t *out, llm_err_kind_t kind, const char *type, const char *msg); /* returns -1 */
void llm_set_finish(llm_result_t *out, const char *raw);
/* JSON helpers: the string at key, or NULL; a token count at key, or -1 when absent or not sane. */
const char *llm_json_str(const cJSON *obj, const char *key);
int64_t llm_json_tokens(const cJSON *obj, const char *key);
/* Fills out->error from an error object ({"error":{...}} / {"type":"error","error":{...}}) when
 * root has one: returns -1 then, 0 when root carries no error. */
int llm_parse_error_body(const cJSON *root, int http_status, llm_result_t *out);
/* Hands a stream's text piece to the accumulated answer and to on_delta. 0, or -1 (NOMEM set). */
int llm_stream_emit(llm_stream_t *s, const char *text, size_t len);

#endif

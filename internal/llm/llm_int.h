/* llm_int.h — what the files of the llm module share and nobody else includes: the provider table,
 * the JSON writer used for request bodies, result and error helpers, and the stream's state. */
#ifndef PARLEY_LLM_INT_H
#define PARLEY_LLM_INT_H

#include "json/json.h"
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

#define LLM_ROOT_KEYS 8

/* One provider: its request path, its auth headers, its body, its answer and its stream events. */
typedef struct {
    const char *path;
    const char *end_marker; /* named in the "stream ended before ..." error */
    const char *done_data;  /* event data that ends the stream and is no JSON (OpenAI "[DONE]"), or NULL */
    int (*auth_headers)(llm_headers_t *h, const config_provider_t *p);
    int (*body)(buf_t *b, const config_provider_t *p, const chat_message_t *msgs, size_t n,
                const llm_params_t *params, bool stream, unsigned *dropped, char *err, size_t errlen);
    /* The members of an answer's root object that parse reads (at most LLM_ROOT_KEYS), looked up in
     * one pass; the first is "error", which llm_response_parse checks before parse sees them. */
    const char *const *answer_keys;
    size_t n_answer_keys;
    int (*parse)(const json_value_t *member, llm_result_t *out);
    /* Likewise for a stream event's JSON object: the members event reads, looked up while it is parsed. */
    const char *const *event_keys;
    size_t n_event_keys;
    /* One stream event: member[i] is its object's event_keys[i]; member is NULL for done_data. */
    int (*event)(llm_stream_t *s, const llm_sse_event_t *ev, const json_value_t *member);
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
/* JSON helpers. A string read from an answer ends at its first NUL (from \u0000), as it did when
 * cJSON parsed the answers. */
/* Parses data into doc, after a UTF-8 BOM if it starts with one (cJSON skipped it), looking up the
 * root members keys[0..n) into member on the way; true when it is a JSON object, then in *root. */
bool llm_json_object(const char *data, size_t len, json_doc_t *doc, json_value_t *root,
                     const char *const *keys, size_t n, json_value_t *member);
/* The string v decoded into dst (cap bytes, NUL-terminated, cut as llm_copy_str cuts); false, dst
 * unchanged, when v is no string. llm_json_str does it for obj's member key. */
bool llm_json_copy(json_value_t v, char *dst, size_t cap);
bool llm_json_str(json_value_t obj, const char *key, char *dst, size_t cap);
/* Whether obj's member key is a string equal to lit (shorter than 31 bytes). */
bool llm_json_is(json_value_t obj, const char *key, const char *lit);
/* Appends the string s decoded to b. 0, or -1 when out of memory (b unchanged). */
int llm_json_append(buf_t *b, json_value_t s);
/* v as a token count, or -1 when it is no number or not sane. */
int64_t llm_json_count(json_value_t v);
/* Fills out->error from e, the "error" member of an answer or event ({"error":{...}} /
 * {"type":"error","error":{...}}), unless it is absent or null: returns -1 then, else 0. */
int llm_parse_error(json_value_t e, int http_status, llm_result_t *out);
/* Hands the string text, a stream's text piece, to the accumulated answer and to on_delta. 0, or -1
 * (NOMEM set). */
int llm_stream_emit(llm_stream_t *s, json_value_t text);

#endif

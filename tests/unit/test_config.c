/* test_config.c — the config loader: a full file, defaults, ${VAR} expansion, every error kind with its
 * exact file:line:column and key path, synthesized routes, masked dump and its round trip, the example
 * configs/parley.yaml, and failing every allocation in turn. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"
#include "config/config.h"
#include "log/log.h"

static const char full_yaml[] =
    "kafka:\n"
    "  brokers: \"k1:9092,k2:9092\"\n"
    "  group_id: grp\n"
    "  jobs_topic: in.jobs\n"
    "  reply_topic: out.replies\n"
    "  dlq_topic: in.dlq\n"
    "  reply_topics_allowed: [alt.replies, other.replies]\n"
    "  properties:\n"
    "    fetch.wait.max.ms: 50\n"
    "    enable.idempotence: true\n"
    "    sasl.password: kafka-PASS-777\n"
    "  max_message_bytes: 2048\n"
    "redis:\n"
    "  url: \"redis://app:hunter2-REDIS-pw@redis.local:6380/2\"\n"
    "  key_prefix: pfx\n"
    "  idempotency_ttl_s: 3600\n"
    "  unavailable_timeout_ms: 1500\n"
    "  connect_timeout_ms: 300\n"
    "  command_timeout_ms: 400\n"
    "  ca_file: /etc/ca.pem\n"
    "history:\n"
    "  max_messages: 7\n"
    "  max_len: 70\n"
    "  ttl_s: 99\n"
    "  append: false\n"
    "  max_entry_bytes: 1000\n"
    "llm:\n"
    "  strategy: hedge\n"
    "  hedge_delay_ms: 120\n"
    "  hedge_order: latency\n"
    "  hedge_min_ms: 10\n"
    "  hedge_max_ms: 900\n"
    "  timeout_ms: 8000\n"
    "  max_response_bytes: 100000\n"
    "  providers:\n"
    "    - name: oa\n"
    "      type: openai\n"
    "      base_url: \"http://127.0.0.1:8080/v1/\"\n"
    "      api_key: sk-test-SECRET-123\n"
    "      model: gpt-x\n"
    "      connect_timeout_ms: 111\n"
    "      first_token_timeout_ms: 222\n"
    "      idle_timeout_ms: 333\n"
    "      max_retries: 4\n"
    "      retry_base_ms: 50\n"
    "      retry_max_ms: 500\n"
    "      max_concurrency: 8\n"
    "      rpm: 600\n"
    "      tpm: 90000\n"
    "      limit_wait_ms: 25\n"
    "      breaker: {failures: 3, failure_ratio: 0.25, window_s: 10, min_requests: 4,"
    " cooldown_s: 5}\n"
    "      price: {input_per_mtok: 0.15, output_per_mtok: 0.6}\n"
    "      http_version: 2\n"
    "      tls_verify: false\n"
    "      ca_file: /etc/prov.pem\n"
    "      weight: 2.5\n"
    "      headers:\n"
    "        X-Team: blue\n"
    "        Authorization: Bearer hdr-SECRET-456\n"
    "    - name: an\n"
    "      type: anthropic\n"
    "      base_url: https://api.anthropic.com/v1\n"
    "      model: claude-x\n"
    "      timeout_ms: 7000\n"
    "      anthropic_version: \"2024-01-01\"\n"
    "      max_tokens_default: 2048\n"
    "  routes:\n"
    "    fast:\n"
    "      strategy: race\n"
    "      providers: [an, oa]\n"
    "      weights: [1, 3]\n"
    "      hedge_delay_ms: auto\n"
    "      hedge_order: route\n"
    "      hedge_min_ms: 20\n"
    "      hedge_max_ms: 200\n"
    "      timeout_ms: 5000\n"
    "      system: \"Be brief.\"\n"
    "    slow:\n"
    "      strategy: fallback\n"
    "      providers: [oa]\n"
    "worker:\n"
    "  max_in_flight: 50\n"
    "  drain_timeout_ms: 1234\n"
    "admin:\n"
    "  listen: \"127.0.0.1:0\"\n"
    "log:\n"
    "  level: debug\n"
    "  format: text\n";

static config_t *load(const char *yaml, char *err, size_t errlen)
{
    return config_load_string(yaml, strlen(yaml), "parley.yaml", err, errlen);
}

/* Loads yaml, which must fail with exactly want. */
static void expect_error(const char *yaml, const char *want)
{
    char err[512] = "";
    config_t *cfg = load(yaml, err, sizeof err);
    if (cfg)
        fail_msg("loaded, expected: %s", want);
    assert_string_equal(err, want);
}

static char *dump_to_string(const config_t *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    assert_int_equal(config_dump(cfg, out), 0);
    fclose(out);
    return text;
}

static void full_file_loads(void **state)
{
    char err[512] = "";
    config_t *cfg = load(full_yaml, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->source, "parley.yaml");
    assert_string_equal(cfg->kafka.brokers, "k1:9092,k2:9092");
    assert_string_equal(cfg->kafka.group_id, "grp");
    assert_string_equal(cfg->kafka.jobs_topic, "in.jobs");
    assert_string_equal(cfg->kafka.reply_topic, "out.replies");
    assert_string_equal(cfg->kafka.dlq_topic, "in.dlq");
    assert_int_equal(cfg->kafka.n_reply_topics_allowed, 2);
    assert_string_equal(cfg->kafka.reply_topics_allowed[1], "other.replies");
    assert_int_equal(cfg->kafka.n_properties, 3);
    assert_string_equal(cfg->kafka.properties[0].key, "fetch.wait.max.ms");
    assert_string_equal(cfg->kafka.properties[0].value, "50");
    assert_string_equal(cfg->kafka.properties[1].value, "true");
    assert_int_equal(cfg->kafka.max_message_bytes, 2048);
    assert_string_equal(secret_reveal(&cfg->redis.url), "redis://app:hunter2-REDIS-pw@redis.local:6380/2");
    assert_string_equal(cfg->redis.key_prefix, "pfx");
    assert_int_equal(cfg->redis.idempotency_ttl_s, 3600);
    assert_int_equal(cfg->redis.unavailable_timeout_ms, 1500);
    assert_int_equal(cfg->redis.connect_timeout_ms, 300);
    assert_int_equal(cfg->redis.command_timeout_ms, 400);
    assert_string_equal(cfg->redis.ca_file, "/etc/ca.pem");
    assert_int_equal(cfg->history.max_messages, 7);
    assert_int_equal(cfg->history.max_len, 70);
    assert_int_equal(cfg->history.ttl_s, 99);
    assert_false(cfg->history.append);
    assert_int_equal(cfg->history.max_entry_bytes, 1000);
    assert_int_equal(cfg->llm.strategy, STRATEGY_HEDGE);
    assert_false(cfg->llm.hedge_auto);
    assert_int_equal(cfg->llm.hedge_delay_ms, 120);
    assert_int_equal(cfg->llm.hedge_min_ms, 10);
    assert_int_equal(cfg->llm.hedge_max_ms, 900);
    assert_int_equal(cfg->llm.timeout_ms, 8000);
    assert_int_equal(cfg->llm.max_response_bytes, 100000);

    assert_int_equal(cfg->llm.n_providers, 2);
    const config_provider_t *oa = config_provider_find(cfg, "oa");
    assert_ptr_equal(oa, &cfg->llm.providers[0]);
    assert_int_equal(oa->type, PROVIDER_OPENAI);
    assert_string_equal(oa->base_url, "http://127.0.0.1:8080/v1"); /* trailing '/' trimmed */
    assert_string_equal(secret_reveal(&oa->api_key), "sk-test-SECRET-123");
    assert_string_equal(oa->model, "gpt-x");
    assert_int_equal(oa->timeout_ms, 8000); /* inherited from llm.timeout_ms */
    assert_int_equal(oa->connect_timeout_ms, 111);
    assert_int_equal(oa->first_token_timeout_ms, 222);
    assert_int_equal(oa->idle_timeout_ms, 333);
    assert_int_equal(oa->max_retries, 4);
    assert_int_equal(oa->retry_base_ms, 50);
    assert_int_equal(oa->retry_max_ms, 500);
    assert_int_equal(oa->max_concurrency, 8);
    assert_int_equal(oa->rpm, 600);
    assert_int_equal(oa->tpm, 90000);
    assert_int_equal(oa->limit_wait_ms, 25);
    assert_int_equal(oa->breaker.failures, 3);
    assert_true(oa->breaker.failure_ratio == 0.25);
    assert_int_equal(oa->breaker.window_s, 10);
    assert_int_equal(oa->breaker.min_requests, 4);
    assert_int_equal(oa->breaker.cooldown_s, 5);
    assert_true(oa->price_set);
    assert_true(oa->price_input_per_mtok == 0.15);
    assert_true(oa->price_output_per_mtok == 0.6);
    assert_int_equal(oa->http_version, PROVIDER_HTTP_2);
    assert_false(oa->tls_verify);
    assert_string_equal(oa->ca_file, "/etc/prov.pem");
    assert_true(oa->weight == 2.5);
    assert_int_equal(oa->n_headers, 2);
    assert_string_equal(oa->headers[0].key, "X-Team");
    assert_string_equal(oa->headers[0].value, "blue");
    const config_provider_t *an = config_provider_find(cfg, "an");
    assert_int_equal(an->type, PROVIDER_ANTHROPIC);
    assert_int_equal(an->timeout_ms, 7000);
    assert_string_equal(an->anthropic_version, "2024-01-01");
    assert_int_equal(an->max_tokens_default, 2048);
    assert_false(an->price_set);
    assert_false(secret_is_set(&an->api_key));
    assert_null(config_provider_find(cfg, "nope"));

    assert_int_equal(cfg->llm.n_routes, 3); /* fast, slow, and the synthesized default */
    const config_route_t *fast = config_route_find(cfg, "fast");
    assert_int_equal(fast->strategy, STRATEGY_RACE);
    assert_int_equal(fast->n_providers, 2);
    assert_int_equal(fast->providers[0], 1);
    assert_int_equal(fast->providers[1], 0);
    assert_true(fast->weights[0] == 1 && fast->weights[1] == 3);
    assert_true(fast->hedge_auto);
    assert_int_equal(fast->hedge_order, HEDGE_ORDER_ROUTE);
    assert_int_equal(fast->hedge_min_ms, 20);
    assert_int_equal(fast->hedge_max_ms, 200);
    assert_int_equal(fast->timeout_ms, 5000);
    assert_string_equal(fast->system, "Be brief.");
    const config_route_t *slow = config_route_find(cfg, "slow");
    assert_int_equal(slow->strategy, STRATEGY_FALLBACK);
    assert_null(slow->weights);
    assert_null(slow->system);
    assert_false(slow->hedge_auto); /* inherited from llm */
    assert_int_equal(slow->hedge_delay_ms, 120);
    assert_int_equal(slow->hedge_order, HEDGE_ORDER_LATENCY);
    assert_int_equal(slow->timeout_ms, 8000);

    assert_int_equal(cfg->worker.max_in_flight, 50);
    assert_int_equal(cfg->worker.drain_timeout_ms, 1234);
    assert_true(cfg->admin.enabled);
    assert_string_equal(cfg->admin.listen, "127.0.0.1:0");
    assert_int_equal(cfg->log.level, LOG_DEBUG);
    assert_int_equal(cfg->log.format, LOG_FORMAT_TEXT);
    config_free(cfg);
}

static void assert_defaults(const config_t *cfg)
{
    assert_string_equal(cfg->kafka.brokers, "localhost:9092");
    assert_string_equal(cfg->kafka.group_id, "parley");
    assert_string_equal(cfg->kafka.jobs_topic, "chat.jobs");
    assert_string_equal(cfg->kafka.reply_topic, "chat.replies");
    assert_string_equal(cfg->kafka.dlq_topic, "chat.jobs.dlq");
    assert_int_equal(cfg->kafka.n_reply_topics_allowed, 0);
    assert_int_equal(cfg->kafka.n_properties, 0);
    assert_int_equal(cfg->kafka.max_message_bytes, 1048576);
    assert_string_equal(secret_reveal(&cfg->redis.url), "redis://localhost:6379/0");
    assert_string_equal(cfg->redis.key_prefix, "parley");
    assert_int_equal(cfg->redis.idempotency_ttl_s, 86400);
    assert_int_equal(cfg->redis.unavailable_timeout_ms, 30000);
    assert_int_equal(cfg->redis.connect_timeout_ms, 2000);
    assert_int_equal(cfg->redis.command_timeout_ms, 5000);
    assert_null(cfg->redis.ca_file);
    assert_int_equal(cfg->history.max_messages, 20);
    assert_int_equal(cfg->history.max_len, 200);
    assert_int_equal(cfg->history.ttl_s, 604800);
    assert_true(cfg->history.append);
    assert_int_equal(cfg->history.max_entry_bytes, 65536);
    assert_int_equal(cfg->llm.strategy, STRATEGY_RACE);
    assert_true(cfg->llm.hedge_auto);
    assert_int_equal(cfg->llm.hedge_order, HEDGE_ORDER_ROUTE);
    assert_int_equal(cfg->llm.hedge_min_ms, 50);
    assert_int_equal(cfg->llm.hedge_max_ms, 5000);
    assert_int_equal(cfg->llm.timeout_ms, 60000);
    assert_int_equal(cfg->llm.max_response_bytes, 4194304);
    assert_int_equal(cfg->llm.n_providers, 0);
    assert_int_equal(cfg->llm.n_routes, 1);
    assert_string_equal(cfg->llm.routes[0].name, "default");
    assert_int_equal(cfg->llm.routes[0].n_providers, 0);
    assert_int_equal(cfg->worker.max_in_flight, 1000);
    assert_int_equal(cfg->worker.drain_timeout_ms, 30000);
    assert_true(cfg->admin.enabled);
    assert_string_equal(cfg->admin.listen, "0.0.0.0:9090");
    assert_int_equal(cfg->log.level, LOG_INFO);
    assert_int_equal(cfg->log.format, LOG_FORMAT_JSON);
}

static void empty_file_gives_defaults(void **state)
{
    static const char *const empties[] = {"", "# nothing but a comment\n", "---\n", "~\n",
                                          "kafka:\nredis:\nllm:\n  providers:\n  routes:\n"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(empties); i++) {
        char err[512] = "";
        config_t *cfg = load(empties[i], err, sizeof err);
        if (!cfg)
            fail_msg("%s: %s", empties[i], err);
        assert_defaults(cfg);
        config_free(cfg);
    }
}

static void provider_defaults_filled(void **state)
{
    char err[512] = "";
    config_t *cfg =
        load("llm:\n  providers:\n    - {name: p, type: anthropic, base_url: \"http://h\", model: m}\n", err,
             sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    const config_provider_t *p = &cfg->llm.providers[0];
    assert_int_equal(p->timeout_ms, 60000);
    assert_int_equal(p->connect_timeout_ms, 10000);
    assert_int_equal(p->first_token_timeout_ms, 0);
    assert_int_equal(p->idle_timeout_ms, 30000);
    assert_int_equal(p->max_retries, 2);
    assert_int_equal(p->retry_base_ms, 200);
    assert_int_equal(p->retry_max_ms, 5000);
    assert_int_equal(p->max_concurrency, 0);
    assert_int_equal(p->rpm, 0);
    assert_int_equal(p->tpm, 0);
    assert_int_equal(p->limit_wait_ms, 1000);
    assert_int_equal(p->breaker.failures, 5);
    assert_true(p->breaker.failure_ratio == 0.5);
    assert_int_equal(p->breaker.window_s, 30);
    assert_int_equal(p->breaker.min_requests, 20);
    assert_int_equal(p->breaker.cooldown_s, 30);
    assert_false(p->price_set);
    assert_true(p->tls_verify);
    assert_int_equal(p->http_version, PROVIDER_HTTP_AUTO);
    assert_null(p->ca_file);
    assert_string_equal(p->anthropic_version, "2023-06-01");
    assert_int_equal(p->max_tokens_default, 1024);
    assert_true(p->weight == 1);
    assert_int_equal(p->n_headers, 0);
    assert_false(secret_is_set(&p->api_key));
    config_free(cfg);
}

/* What a key inherits does not depend on the order the file writes the keys in. */
static void inheritance_ignores_key_order(void **state)
{
    char err[512] = "";
    config_t *cfg = load("llm:\n  routes:\n    r: {providers: [p]}\n"
                         "  providers:\n    - {name: p, type: openai, base_url: \"http://h\", model: m}\n"
                         "  timeout_ms: 4321\n  strategy: fallback\n  hedge_delay_ms: 75\n"
                         "  hedge_order: latency\n",
                         err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->llm.providers[0].timeout_ms, 4321);
    const config_route_t *r = config_route_find(cfg, "r");
    assert_int_equal(r->timeout_ms, 4321);
    assert_int_equal(r->strategy, STRATEGY_FALLBACK);
    assert_false(r->hedge_auto);
    assert_int_equal(r->hedge_delay_ms, 75);
    assert_int_equal(r->hedge_order, HEDGE_ORDER_LATENCY);
    config_free(cfg);
}

static void env_expansion(void **state)
{
    setenv("PARLEY_T_HOST", "broker.example", 1);
    setenv("PARLEY_T_PORT", "19092", 1);
    setenv("PARLEY_T_EMPTY", "", 1);
    setenv("PARLEY_T_TRICK", "${PARLEY_T_HOST}", 1);
    unsetenv("PARLEY_T_UNSET");
    char err[512] = "";
    config_t *cfg = load("kafka:\n"
                         "  brokers: \"${PARLEY_T_HOST}:${PARLEY_T_PORT}\"\n"
                         "  group_id: ${PARLEY_T_UNSET:-fallback-group}\n"
                         "  jobs_topic: \"${PARLEY_T_EMPTY:-empty.falls.back}\"\n"
                         "  properties:\n"
                         "    a: \"cost $$5 and $${PARLEY_T_HOST}\"\n"
                         "    b: \"lone $ sign, $x, ${PARLEY_T_TRICK}\"\n"
                         "    c: \"[${PARLEY_T_EMPTY}]${PARLEY_T_UNSET:-}\"\n"
                         "  max_message_bytes: ${PARLEY_T_PORT}\n"
                         "history:\n"
                         "  append: ${PARLEY_T_UNSET:-false}\n",
                         err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->kafka.brokers, "broker.example:19092");
    assert_string_equal(cfg->kafka.group_id, "fallback-group");
    assert_string_equal(cfg->kafka.jobs_topic, "empty.falls.back");
    assert_string_equal(cfg->kafka.properties[0].value, "cost $5 and ${PARLEY_T_HOST}");
    assert_string_equal(cfg->kafka.properties[1].value,
                        "lone $ sign, $x, ${PARLEY_T_HOST}"); /* not expanded twice */
    assert_string_equal(cfg->kafka.properties[2].value, "[]");
    assert_int_equal(cfg->kafka.max_message_bytes, 19092);
    assert_false(cfg->history.append);
    config_free(cfg);
}

static void env_unset_is_an_error(void **state)
{
    unsetenv("PARLEY_T_UNSET");
    expect_error("llm:\n"
                 "  providers:\n"
                 "    - name: p\n"
                 "      type: openai\n"
                 "      base_url: http://h\n"
                 "      api_key: \"${PARLEY_T_UNSET}\"\n"
                 "      model: m\n",
                 "parley.yaml:6:16: llm.providers[0].api_key: environment variable PARLEY_T_UNSET is not set "
                 "(use ${PARLEY_T_UNSET:-} to allow empty)");
    expect_error("kafka:\n  brokers: \"${PARLEY_T_HOST\"\n",
                 "parley.yaml:2:12: kafka.brokers: unterminated ${ (no closing }; write $$ for a literal $)");
    expect_error("kafka:\n  brokers: \"${9x}\"\n",
                 "parley.yaml:2:12: kafka.brokers: bad ${...}: expected ${NAME} or ${NAME:-default}, NAME of "
                 "letters, digits and _");
}

static void each_error_kind(void **state)
{
    /* wrong type */
    expect_error("worker:\n  max_in_flight: lots\n",
                 "parley.yaml:2:18: worker.max_in_flight: expected an integer, got \"lots\"");
    expect_error("kafka:\n  brokers: [a, b]\n",
                 "parley.yaml:2:12: kafka.brokers: expected a string, got a list");
    expect_error("history:\n  append: yes\n",
                 "parley.yaml:2:11: history.append: expected true or false, got \"yes\"");
    expect_error("kafka: 5\n", "parley.yaml:1:8: kafka: expected a mapping, got a scalar");
    expect_error(
        "llm:\n  providers:\n    - {name: p, type: openai, base_url: \"http://h\", model: m, weight: x}\n",
        "parley.yaml:3:71: llm.providers[0].weight: expected a number, got \"x\"");
    /* out of range */
    expect_error("worker:\n  max_in_flight: 0\n",
                 "parley.yaml:2:18: worker.max_in_flight: must be between 1 and 1000000, got 0");
    expect_error(
        "llm:\n  providers:\n    - name: p\n      type: openai\n      base_url: http://h\n      model: m\n"
        "      breaker:\n        failure_ratio: 1.5\n",
        "parley.yaml:8:24: llm.providers[0].breaker.failure_ratio: must be between 0 and 1, got 1.5");
    expect_error("llm:\n  timeout_ms: -1\n",
                 "parley.yaml:2:15: llm.timeout_ms: must be between 1 and 86400000, got -1");
    expect_error(
        "llm:\n  hedge_min_ms: 600\n  hedge_max_ms: 500\n",
        "parley.yaml:3:17: llm.hedge_max_ms: hedge_max_ms (500) must not be below hedge_min_ms (600)");
    /* bad enum */
    expect_error("log:\n  level: verbose\n",
                 "parley.yaml:2:10: log.level: expected debug, info, warn or error, got \"verbose\"");
    expect_error(
        "llm:\n  strategy: hegde\n",
        "parley.yaml:2:13: llm.strategy: expected race, hedge or fallback, got \"hegde\" (did you mean "
        "\"hedge\"?)");
    expect_error("llm:\n  hedge_order: fastest\n",
                 "parley.yaml:2:16: llm.hedge_order: expected route or latency, got \"fastest\"");
    /* unknown key with a suggestion, and without */
    expect_error("kafka:\n  brokers: x\n\n\n\n\n  brokrs: y\n",
                 "parley.yaml:7:3: kafka.brokrs: unknown key (did you mean \"brokers\"?)");
    expect_error(
        "llm:\n  providers:\n    - name: p\n      type: openai\n      base_url: http://h\n      model: m\n"
        "      timeout: 5\n",
        "parley.yaml:7:7: llm.providers[0].timeout: unknown key (did you mean \"timeout_ms\"?)");
    expect_error("metrics:\n  x: 1\n",
                 "parley.yaml:1:1: metrics: unknown key (expected one of: kafka, redis, history, "
                 "llm, worker, admin, log)");
    /* duplicate provider name */
    expect_error(
        "llm:\n  providers:\n    - {name: a, type: openai, base_url: \"http://h\", model: m}\n"
        "    - {name: a, type: openai, base_url: \"http://h\", model: m}\n",
        "parley.yaml:4:14: llm.providers[1].name: duplicate provider name \"a\" (also llm.providers[0])");
    /* route naming a missing provider */
    expect_error(
        "llm:\n  providers:\n    - {name: openai-main, type: openai, base_url: \"http://h\", model: m}\n"
        "  routes:\n    fast: {providers: [openai-mian]}\n",
        "parley.yaml:5:24: llm.routes.fast.providers[0]: unknown provider \"openai-mian\" (did you mean "
        "\"openai-main\"?)");
    expect_error("llm:\n  routes:\n    fast: {providers: []}\n",
                 "parley.yaml:3:23: llm.routes.fast.providers: a route needs at least one provider");
    expect_error(
        "llm:\n  providers:\n    - {name: a, type: openai, base_url: \"http://h\", model: m}\n"
        "  routes:\n    r: {providers: [a], weights: [1, 2]}\n",
        "parley.yaml:5:34: llm.routes.r.weights: expected 1 weights (one per provider of the route), got 2");
    /* missing required key */
    expect_error("llm:\n  providers:\n    - name: p\n      type: openai\n      base_url: http://h\n",
                 "parley.yaml:3:7: llm.providers[0].model: missing required key");
    expect_error("llm:\n  routes:\n    r:\n      strategy: race\n",
                 "parley.yaml:4:7: llm.routes.r.providers: missing required key");
    /* duplicate key */
    expect_error("redis:\n  key_prefix: a\n  url: \"redis://h\"\n  key_prefix: b\n",
                 "parley.yaml:4:3: redis.key_prefix: duplicate key (also at line 2)");
    expect_error("kafka:\n  properties:\n    acks: all\n    acks: 1\n",
                 "parley.yaml:4:5: kafka.properties.acks: duplicate key (also at line 3)");
    /* bad YAML syntax */
    expect_error(
        "kafka:\n  brokers: \"unterminated\n",
        "parley.yaml:3:1: syntax error: found unexpected end of stream (while scanning a quoted scalar at "
        "line 2)");
    expect_error(
        "kafka:\n  brokers: a\n bad: b\n",
        "parley.yaml:3:2: syntax error: did not find expected key (while parsing a block mapping at line 1)");
    /* shape of the document */
    expect_error("- a\n",
                 "parley.yaml:1:1: the top level must be a mapping of sections (kafka, redis, llm, ...)");
    expect_error("kafka: {}\n---\nredis: {}\n", "parley.yaml:2:1: only one YAML document is allowed");
    /* strings with a format */
    expect_error("redis:\n  url: \"http://user:pw@h\"\n",
                 "parley.yaml:2:8: redis.url: must be a redis://, rediss:// or unix:// URL");
    expect_error(
        "admin:\n  listen: 9090\n",
        "parley.yaml:2:11: admin.listen: must be \"host:port\" (port 0-65535), or \"\" / \"off\" to disable");
    expect_error(
        "kafka:\n  jobs_topic: \"bad topic\"\n",
        "parley.yaml:2:15: kafka.jobs_topic: a Kafka topic name is 1-249 characters of letters, digits, "
        "'.', '_' and '-'");
    expect_error(
        "llm:\n  providers:\n    - {name: p, type: openai, base_url: \"ftp://h\", model: m}\n",
        "parley.yaml:3:41: llm.providers[0].base_url: must be an http:// or https:// URL with a host");
    expect_error("llm:\n  providers:\n    - {name: p, type: gemini, base_url: \"http://h\", model: m}\n",
                 "parley.yaml:3:23: llm.providers[0].type: expected openai or anthropic, got \"gemini\"");
}

static void admin_can_be_off(void **state)
{
    static const char *const offs[] = {"admin:\n  listen: off\n", "admin:\n  listen: \"\"\n"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(offs); i++) {
        char err[512] = "";
        config_t *cfg = load(offs[i], err, sizeof err);
        if (!cfg)
            fail_msg("%s", err);
        assert_false(cfg->admin.enabled);
        assert_string_equal(cfg->admin.listen, "");
        config_free(cfg);
    }
}

static void routes_synthesized(void **state)
{
    static const char providers[] = "llm:\n  strategy: fallback\n  timeout_ms: 777\n  providers:\n"
                                    "    - {name: a, type: openai, base_url: \"http://h\", model: m}\n"
                                    "    - {name: b, type: openai, base_url: \"http://h\", model: m}\n";
    char err[512] = "";
    config_t *cfg = load(providers, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->llm.n_routes, 1);
    const config_route_t *d = config_route_find(cfg, "default");
    assert_non_null(d);
    assert_int_equal(d->strategy, STRATEGY_FALLBACK);
    assert_int_equal(d->timeout_ms, 777);
    assert_int_equal(d->n_providers, 2);
    assert_int_equal(d->providers[0], 0);
    assert_int_equal(d->providers[1], 1);
    config_free(cfg);

    /* routes without "default": default is still every provider, appended after the named ones */
    char yaml[1024];
    snprintf(yaml, sizeof yaml, "%s  routes:\n    only_b: {providers: [b], strategy: race}\n", providers);
    cfg = load(yaml, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->llm.n_routes, 2);
    assert_string_equal(cfg->llm.routes[0].name, "only_b");
    assert_int_equal(cfg->llm.routes[0].strategy, STRATEGY_RACE);
    d = config_route_find(cfg, "default");
    assert_ptr_equal(d, &cfg->llm.routes[1]);
    assert_int_equal(d->n_providers, 2);
    assert_int_equal(d->strategy, STRATEGY_FALLBACK);
    config_free(cfg);

    /* an explicit default is kept as written */
    snprintf(yaml, sizeof yaml, "%s  routes:\n    default: {providers: [b]}\n", providers);
    cfg = load(yaml, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->llm.n_routes, 1);
    d = config_route_find(cfg, "default");
    assert_int_equal(d->n_providers, 1);
    assert_int_equal(d->providers[0], 1);
    assert_null(config_route_find(cfg, "missing"));
    config_free(cfg);
}

static void dump_masks_secrets(void **state)
{
    char err[512] = "";
    config_t *cfg = load(full_yaml, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    char *text = dump_to_string(cfg);
    assert_null(strstr(text, "sk-test-SECRET-123"));
    assert_null(strstr(text, "hunter2-REDIS-pw"));
    assert_null(strstr(text, "hdr-SECRET-456"));
    assert_null(strstr(text, "kafka-PASS-777"));
    assert_non_null(strstr(text, "url: \"redis://app:***@redis.local:6380/2\""));
    assert_non_null(strstr(text, "api_key: \"***\""));
    assert_non_null(strstr(text, "\"Authorization\": \"***\""));
    assert_non_null(strstr(text, "\"X-Team\": \"blue\""));
    char masked[256];
    assert_int_equal(config_redis_url_masked(cfg, masked, sizeof masked), 0);
    assert_string_equal(masked, "redis://app:***@redis.local:6380/2");
    free(text);
    config_free(cfg);

    cfg = load("redis:\n  url: \"rediss://onlysecret-TOKEN@h:6379\"\n", err, sizeof err);
    assert_non_null(cfg);
    text = dump_to_string(cfg);
    assert_null(strstr(text, "onlysecret-TOKEN"));
    assert_non_null(strstr(text, "\"rediss://***@h:6379\""));
    free(text);
    config_free(cfg);
}

static void secrets_registered_for_logs(void **state)
{
    char err[512] = "";
    config_t *cfg = load(full_yaml, err, sizeof err);
    assert_non_null(cfg);
    config_register_secrets(cfg);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    log_setup(LOG_INFO, LOG_FORMAT_JSON, out);
    log_info("leak", LOG_S("a", "sk-test-SECRET-123"), LOG_S("b", "hunter2-REDIS-pw"),
             LOG_S("c", "kafka-PASS-777"));
    fclose(out);
    log_setup(LOG_INFO, LOG_FORMAT_JSON, stderr);
    assert_null(strstr(text, "SECRET"));
    assert_null(strstr(text, "hunter2"));
    assert_null(strstr(text, "PASS"));
    free(text);
    log_forget_secrets();
    config_free(cfg);
}

/* dump → load gives the same config: the second dump equals the first (the dump prints every field). */
static void dump_round_trip(void **state)
{
    static const char tricky[] =
        "kafka:\n  group_id: \"g $$HOME\"\n  properties:\n    \"odd key: #1\": \"v\"\n"
        "llm:\n  providers:\n    - {name: p, type: openai, base_url: \"http://h\", model: "
        "\"true\", weight: 0.1, price: {input_per_mtok: 0.3}}\n"
        "  routes:\n    r1: {providers: [p], weights: [0.7], hedge_delay_ms: 0, system: "
        "\"quote \\\" backslash \\\\ dollar $$HOME $${X} tab\\t nl\\n \xc3\xa9 \\u2028 "
        "\\x01 \\u0085 \\x80 \\uFEFF \\uFFFE end\"}\n";
    const char *inputs[] = {full_yaml, tricky, ""};
    for (size_t i = 0; i < BASE_ARRAY_LEN(inputs); i++) {
        char err[512] = "";
        config_t *a = load(inputs[i], err, sizeof err);
        if (!a)
            fail_msg("%s", err);
        char *da = dump_to_string(a);
        config_t *b = config_load_string(da, strlen(da), "dump", err, sizeof err);
        if (!b)
            fail_msg("dump does not load: %s\n%s", err, da);
        char *db = dump_to_string(b);
        assert_string_equal(da, db);
        assert_string_equal(a->kafka.group_id, b->kafka.group_id);
        assert_int_equal(a->llm.n_routes, b->llm.n_routes);
        assert_int_equal(a->llm.n_providers, b->llm.n_providers);
        for (size_t p = 0; p < a->llm.n_providers; p++) {
            assert_true(a->llm.providers[p].weight == b->llm.providers[p].weight);
            assert_int_equal(a->llm.providers[p].price_set, b->llm.providers[p].price_set);
        }
        free(da);
        free(db);
        config_free(a);
        config_free(b);
    }
    char err[512] = "";
    config_t *t = load(tricky, err, sizeof err);
    assert_string_equal(t->kafka.group_id, "g $HOME");
    assert_string_equal(t->llm.routes[0].system, "quote \" backslash \\ dollar $HOME ${X} tab\t nl\n "
                                                 "\xc3\xa9 \xe2\x80\xa8 \x01 \xc2\x85 \xc2\x80 \xef\xbb\xbf "
                                                 "\xef\xbf\xbe end");
    assert_string_equal(t->kafka.properties[0].key, "odd key: #1");
    assert_string_equal(t->llm.providers[0].model, "true");
    assert_false(t->llm.routes[0].hedge_auto);
    assert_int_equal(t->llm.routes[0].hedge_delay_ms, 0);
    config_free(t);
}

static void example_config_loads(void **state)
{
    unsetenv("OPENAI_API_KEY");
    unsetenv("ANTHROPIC_API_KEY");
    char err[512] = "";
    config_t *cfg = config_load_file("configs/parley.yaml", err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->llm.n_providers, 2);
    assert_false(secret_is_set(&cfg->llm.providers[0].api_key));
    assert_non_null(config_route_find(cfg, "careful"));
    config_free(cfg);

    setenv("OPENAI_API_KEY", "sk-from-env-0001", 1);
    cfg = config_load_file("configs/parley.yaml", err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(secret_reveal(&config_provider_find(cfg, "openai-main")->api_key),
                        "sk-from-env-0001");
    char *text = dump_to_string(cfg);
    assert_null(strstr(text, "sk-from-env-0001"));
    free(text);
    config_free(cfg);
    unsetenv("OPENAI_API_KEY");

    assert_null(config_load_file("configs/does-not-exist.yaml", err, sizeof err));
    assert_string_equal(err, "configs/does-not-exist.yaml: cannot open: No such file or directory");
}

static void names_and_limits(void **state)
{
    assert_string_equal(config_strategy_name(STRATEGY_HEDGE), "hedge");
    assert_string_equal(config_provider_type_name(PROVIDER_ANTHROPIC), "anthropic");
    char err[512] = "";
    size_t big = (4u << 20) + 1;
    char *huge = calloc(1, big + 1);
    memset(huge, '#', big);
    assert_null(config_load_string(huge, big, "big.yaml", err, sizeof err));
    assert_string_equal(err, "big.yaml: larger than 4194304 bytes");
    free(huge);
    /* a NUL inside the text is a YAML error, not a crash */
    assert_null(config_load_string("a: 1\0b", 6, "nul.yaml", err, sizeof err));
    assert_string_equal(err, "nul.yaml:1:5: syntax error: control characters are not allowed");
    expect_error("kafka:\n  brokers: \"\xc3\xa9\xff\"\n",
                 "parley.yaml:2:14: syntax error: invalid leading UTF-8 octet");
    expect_error("? [a]\n: b\n", "parley.yaml:1:3: a key must be a string, got a list");
    expect_error("kafka:\n  brokers: *nope\n", "parley.yaml:2:12: syntax error: found undefined alias");
}

/* Failing each allocation in turn: every load either succeeds or reports out of memory, and leaks
 * nothing (the ASan build checks that). */
static void allocation_failures(void **state)
{
    for (long n = 1;; n++) {
        char err[512] = "";
        base_alloc_fail_after(n);
        config_t *cfg = load(full_yaml, err, sizeof err);
        base_alloc_fail_after(0);
        if (cfg) {
            assert_true(n > 50);
            config_free(cfg);
            break;
        }
        assert_non_null(strstr(err, "out of memory"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_file_loads),
        cmocka_unit_test(empty_file_gives_defaults),
        cmocka_unit_test(provider_defaults_filled),
        cmocka_unit_test(inheritance_ignores_key_order),
        cmocka_unit_test(env_expansion),
        cmocka_unit_test(env_unset_is_an_error),
        cmocka_unit_test(each_error_kind),
        cmocka_unit_test(admin_can_be_off),
        cmocka_unit_test(routes_synthesized),
        cmocka_unit_test(dump_masks_secrets),
        cmocka_unit_test(secrets_registered_for_logs),
        cmocka_unit_test(dump_round_trip),
        cmocka_unit_test(example_config_loads),
        cmocka_unit_test(names_and_limits),
        cmocka_unit_test(allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

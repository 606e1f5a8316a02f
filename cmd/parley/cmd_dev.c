/* cmd_dev.c — `parley dev`: flags of the embedded development stack; the stack is internal/dev. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_common.h"
#include "cmds.h"
#include "dev/dev.h"

#define DEV_MAX_TOPICS    64
#define DEV_MAX_PROVIDERS 32

static const char *const default_providers[] = {"openai-fast:openai:latency_ms=50",
                                                "anthropic-slow:anthropic:latency_ms=400"};

static void dev_usage(FILE *out)
{
    fprintf(
        out,
        "usage: parley dev [options]\n\n"
        "Runs the embedded development stack on loopback until SIGINT/SIGTERM: a Kafka-protocol broker\n"
        "(librdkafka's mock cluster) and mock LLM providers speaking the OpenAI Chat Completions and\n"
        "Anthropic Messages wire formats (JSON, SSE, real error bodies).\n\n"
        "  --brokers N              mock brokers in the cluster (default 1)\n"
        "  --topic NAME[:PARTS]     create a topic (repeatable; default 4 partitions)\n"
        "  -c, --config FILE        create the jobs, reply, dlq and allowed reply topics of a config\n"
        "  --partitions N           partitions of the default and config topics (default 6)\n"
        "                           without --topic or -c: chat.jobs, chat.replies, chat.jobs.dlq\n"
        "  --provider NAME:TYPE[:key=value,...]\n"
        "                           a mock provider (repeatable); TYPE openai | anthropic; port=N fixes\n"
        "                           its port (default: chosen at run time); other keys are knobs:\n"
        "                           latency_ms tail_ms tail_prob token_ms fail_rate fail_status fail_next\n"
        "                           retry_after_s cut_after error_after drip_ms not_json pad_bytes\n"
        "                           comments crlf ping thinking seed (see internal/dev/dev.h)\n"
        "                           default: %s and %s\n"
        "  --host ADDR              where the providers listen (default 127.0.0.1)\n"
        "  --ready-file F           write JSON {brokers, providers{NAME:{type,base_url,stats,control}}, "
        "pid}\n"
        "                           atomically once everything listens\n"
        "  --write-config F         write a worker config (YAML) pointing at the stack, api_key dev-key\n"
        "  --no-broker              start no broker\n"
        "  --no-providers           start no mock providers\n\n"
        "Broker ports are chosen by librdkafka 2.0.2, which cannot bind a given port (no --broker-port).\n"
        "Each provider serves /v1/chat/completions or /v1/messages, GET /stats, POST /stats/reset,\n"
        "GET|POST /control (JSON object of knobs).\n"
        "Exit status: 0 after SIGINT/SIGTERM, 1 when the stack cannot start, 2 on a usage error.\n",
        default_providers[0], default_providers[1]);
}

/* A whole number in [lo, hi] from a flag value; -1 (after a message) when it is not. */
static int flag_int(const char *flag, const char *s, int lo, int hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "parley dev: %s: '%s' is not a number in [%d, %d]\n", flag, s, lo, hi);
        return -1;
    }
    return (int)v;
}

typedef struct {
    dev_topic_t topics[DEV_MAX_TOPICS];
    size_t n_topics;
    dev_provider_t providers[DEV_MAX_PROVIDERS];
    size_t n_providers;
} dev_args_t;

/* Adds a topic "NAME[:PARTS]" (parts_default when no count is given). 0, or 2 on a usage error. */
static int add_topic(dev_args_t *a, const char *spec, int parts_default)
{
    const char *colon = strrchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
    int parts = colon ? flag_int("--topic", colon + 1, 1, 10000) : parts_default;
    if (parts < 0)
        return 2;
    if (n == 0 || n > 249 || a->n_topics == DEV_MAX_TOPICS) {
        fprintf(stderr, "parley dev: --topic '%s': bad name or too many topics (max %d)\n", spec,
                DEV_MAX_TOPICS);
        return 2;
    }
    char *name = base_strndup(spec, n);
    if (!name)
        return 2;
    a->topics[a->n_topics++] = (dev_topic_t){.name = name, .partitions = parts};
    return 0;
}

static int add_provider(dev_args_t *a, const char *spec)
{
    char err[512];
    if (a->n_providers == DEV_MAX_PROVIDERS) {
        fprintf(stderr, "parley dev: too many providers (max %d)\n", DEV_MAX_PROVIDERS);
        return 2;
    }
    if (dev_provider_parse(spec, &a->providers[a->n_providers], err, sizeof err) < 0) {
        fprintf(stderr, "parley dev: --provider: %s\n", err);
        return 2;
    }
    a->n_providers++;
    return 0;
}

/* Adds the topics of a config file. */
static int add_config_topics(dev_args_t *a, const char *path, int parts, dev_options_t *opt)
{
    config_t *cfg = cmd_load_config(path);
    if (!cfg)
        return 2;
    size_t first = a->n_topics;
    int rc = add_topic(a, cfg->kafka.jobs_topic, parts);
    rc = rc ? rc : add_topic(a, cfg->kafka.reply_topic, parts);
    rc = rc ? rc : add_topic(a, cfg->kafka.dlq_topic, parts);
    for (size_t i = 0; i < cfg->kafka.n_reply_topics_allowed && rc == 0; i++)
        rc = add_topic(a, cfg->kafka.reply_topics_allowed[i], parts);
    /* Names written into --write-config; the topics just added own the strings. */
    if (rc == 0) {
        opt->jobs_topic = a->topics[first].name;
        opt->reply_topic = a->topics[first + 1].name;
        opt->dlq_topic = a->topics[first + 2].name;
    }
    config_free(cfg);
    return rc;
}

static void dev_args_free(dev_args_t *a)
{
    for (size_t i = 0; i < a->n_topics; i++)
        free(a->topics[i].name);
    for (size_t i = 0; i < a->n_providers; i++)
        dev_provider_clear(&a->providers[i]);
}

int cmd_dev(int argc, char **argv)
{
    enum {
        O_BROKERS = 256,
        O_TOPIC,
        O_PARTS,
        O_PROVIDER,
        O_HOST,
        O_READY,
        O_WRITE,
        O_NOBROKER,
        O_NOPROV,
        O_BPORT
    };
    static const struct option opts[] = {{"brokers", required_argument, NULL, O_BROKERS},
                                         {"topic", required_argument, NULL, O_TOPIC},
                                         {"config", required_argument, NULL, 'c'},
                                         {"partitions", required_argument, NULL, O_PARTS},
                                         {"provider", required_argument, NULL, O_PROVIDER},
                                         {"host", required_argument, NULL, O_HOST},
                                         {"ready-file", required_argument, NULL, O_READY},
                                         {"write-config", required_argument, NULL, O_WRITE},
                                         {"no-broker", no_argument, NULL, O_NOBROKER},
                                         {"no-providers", no_argument, NULL, O_NOPROV},
                                         {"broker-port", required_argument, NULL, O_BPORT},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    static dev_args_t a;
    dev_options_t opt = {.n_brokers = 1, .host = "127.0.0.1"};
    const char *config_path = NULL;
    const char *topic_specs[DEV_MAX_TOPICS];
    size_t n_topic_specs = 0;
    int partitions = 6, rc = 0, c;
    bool no_providers = false;
    memset(&a, 0, sizeof a);
    optind = 1;
    while (rc == 0 && (c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case O_BROKERS:
            rc = (opt.n_brokers = flag_int("--brokers", optarg, 1, 16)) < 0 ? 2 : 0;
            break;
        case O_TOPIC:
            if (n_topic_specs == DEV_MAX_TOPICS) {
                fprintf(stderr, "parley dev: too many --topic (max %d)\n", DEV_MAX_TOPICS);
                rc = 2;
            } else {
                topic_specs[n_topic_specs++] = optarg;
            }
            break;
        case 'c':
            config_path = optarg;
            break;
        case O_PARTS:
            rc = (partitions = flag_int("--partitions", optarg, 1, 10000)) < 0 ? 2 : 0;
            break;
        case O_PROVIDER:
            rc = add_provider(&a, optarg);
            break;
        case O_HOST:
            opt.host = optarg;
            break;
        case O_READY:
            opt.ready_file = optarg;
            break;
        case O_WRITE:
            opt.write_config = optarg;
            break;
        case O_NOBROKER:
            opt.no_broker = true;
            break;
        case O_NOPROV:
            no_providers = true;
            break;
        case O_BPORT:
            fprintf(stderr, "parley dev: --broker-port is not supported: librdkafka 2.0.2's mock cluster "
                            "chooses its own ports (read them from the output or --ready-file)\n");
            rc = 2;
            break;
        case 'h':
            dev_usage(stdout);
            goto out;
        default:
            rc = 2;
        }
    }
    if (rc == 0 && optind < argc) {
        fprintf(stderr, "parley dev: unexpected argument '%s'\n", argv[optind]);
        rc = 2;
    }
    for (size_t i = 0; i < n_topic_specs && rc == 0; i++)
        rc = add_topic(&a, topic_specs[i], 4);
    if (rc == 0 && config_path)
        rc = add_config_topics(&a, config_path, partitions, &opt);
    if (rc == 0 && !config_path && n_topic_specs == 0) {
        rc = add_topic(&a, "chat.jobs", partitions);
        rc = rc ? rc : add_topic(&a, "chat.replies", partitions);
        rc = rc ? rc : add_topic(&a, "chat.jobs.dlq", partitions);
    }
    if (rc == 0 && !no_providers && a.n_providers == 0)
        for (size_t i = 0; i < BASE_ARRAY_LEN(default_providers) && rc == 0; i++)
            rc = add_provider(&a, default_providers[i]);
    if (rc != 0) {
        if (rc == 2)
            fprintf(stderr, "Try 'parley dev --help'.\n");
        goto out;
    }
    opt.topics = a.topics;
    opt.n_topics = a.n_topics;
    opt.providers = a.providers;
    opt.n_providers = no_providers ? 0 : a.n_providers;
    char err[1024];
    if (dev_run(&opt, err, sizeof err) < 0) {
        fprintf(stderr, "parley dev: %s\n", err);
        rc = 1;
    }
out:
    dev_args_free(&a);
    return rc;
}

/* cmd_replay.c — `parley replay -c FILE --input IN.jsonl --out DIR` and `parley replay report DIR`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_common.h"
#include "cmds.h"
#include "replay/replay.h"

#define MAX_COMPARE 16

static void replay_usage(FILE *out)
{
    fprintf(
        out,
        "usage: parley replay -c FILE --input IN.jsonl --out DIR [options]\n"
        "       parley replay report DIR\n\n"
        "Replays recorded conversations ({\"conversation_id\",\"messages\":[..],\"metadata\"} per line) or\n"
        "OpenAI Batch API input lines (custom_id, method, url, body) against the providers. Results go to\n"
        "DIR/results.jsonl as they finish (Batch input: also DIR/batch_output.jsonl); a rerun with the same\n"
        "DIR skips what is done; SIGINT stops cleanly. DIR/summary.json and DIR/report.html at the end.\n"
        "  -c, --config FILE        the configuration file\n"
        "  --input FILE             input JSONL (streamed)\n"
        "  --out DIR                output directory\n"
        "  --turns last|each        the final user turn (default) or every user turn in order\n"
        "  --history recorded|generated\n"
        "                           history of a turn: as recorded (default) or the target's own answers\n"
        "  --compare A,B,..         send every turn to each named provider (via Kafka: route) separately\n"
        "  --route NAME             without --compare: the route to use (default: default)\n"
        "  --concurrency N          conversations in flight (default 16)\n"
        "  --no-stream              do not ask providers to stream (no time to first token)\n"
        "  --via-kafka              post the turns as jobs to a running fleet and collect the replies\n"
        "  --reply-topic T          via Kafka: reply topic (default parley.replay; must be allowed)\n"
        "  --timeout S              via Kafka: how long a job waits for its reply (default 120)\n"
        "  --progress-every S       progress line period on a non-terminal (default 2)\n"
        "  --limit N                read at most N input lines\n"
        "Exit status: 0 done, 1 interrupted or a runtime failure, 2 usage or configuration error.\n");
}

/* Splits "A,B" into names (pointing into s, which is modified). -1 when empty or too many. */
static int split_compare(char *s, const char **names, size_t *n)
{
    *n = 0;
    for (char *tok = s; tok && *tok;) {
        char *comma = strchr(tok, ',');
        if (comma)
            *comma = '\0';
        if (*tok) {
            if (*n == MAX_COMPARE)
                return -1;
            names[(*n)++] = tok;
        }
        tok = comma ? comma + 1 : NULL;
    }
    return *n ? 0 : -1;
}

static int parse_seconds(const char *flag, const char *s, int64_t *ms)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || v <= 0 || v > 86400 * 7) {
        fprintf(stderr, "parley replay: %s: expected a positive number of seconds\n", flag);
        return -1;
    }
    *ms = (int64_t)(v * 1000);
    return 0;
}

static int run_report(int argc, char **argv)
{
    if (argc != 3) {
        replay_usage(stderr);
        return 2;
    }
    char err[512];
    if (replay_summary_write(argv[2], err, sizeof err) != 0 ||
        replay_report_write(argv[2], err, sizeof err) != 0) {
        fprintf(stderr, "parley replay report: %s\n", err);
        return 1;
    }
    printf("%s/summary.json\n%s/report.html\n", argv[2], argv[2]);
    return 0;
}

int cmd_replay(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "report") == 0)
        return run_report(argc, argv);
    enum {
        O_INPUT = 256,
        O_OUT,
        O_TURNS,
        O_HISTORY,
        O_COMPARE,
        O_ROUTE,
        O_CONC,
        O_NOSTREAM,
        O_KAFKA,
        O_TOPIC,
        O_TIMEOUT,
        O_PROGRESS,
        O_LIMIT
    };
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"input", required_argument, NULL, O_INPUT},
                                         {"out", required_argument, NULL, O_OUT},
                                         {"turns", required_argument, NULL, O_TURNS},
                                         {"history", required_argument, NULL, O_HISTORY},
                                         {"compare", required_argument, NULL, O_COMPARE},
                                         {"route", required_argument, NULL, O_ROUTE},
                                         {"concurrency", required_argument, NULL, O_CONC},
                                         {"no-stream", no_argument, NULL, O_NOSTREAM},
                                         {"via-kafka", no_argument, NULL, O_KAFKA},
                                         {"reply-topic", required_argument, NULL, O_TOPIC},
                                         {"timeout", required_argument, NULL, O_TIMEOUT},
                                         {"progress-every", required_argument, NULL, O_PROGRESS},
                                         {"limit", required_argument, NULL, O_LIMIT},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    replay_options_t o;
    replay_options_init(&o);
    const char *names[MAX_COMPARE];
    const char *path = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        char *end;
        long v;
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case O_INPUT:
            o.input = optarg;
            break;
        case O_OUT:
            o.out_dir = optarg;
            break;
        case O_TURNS:
            if (strcmp(optarg, "last") != 0 && strcmp(optarg, "each") != 0) {
                fprintf(stderr, "parley replay: --turns: expected last or each\n");
                return 2;
            }
            o.turns = strcmp(optarg, "each") == 0 ? REPLAY_TURNS_EACH : REPLAY_TURNS_LAST;
            break;
        case O_HISTORY:
            if (strcmp(optarg, "recorded") != 0 && strcmp(optarg, "generated") != 0) {
                fprintf(stderr, "parley replay: --history: expected recorded or generated\n");
                return 2;
            }
            o.history = strcmp(optarg, "generated") == 0 ? REPLAY_HISTORY_GENERATED : REPLAY_HISTORY_RECORDED;
            break;
        case O_COMPARE:
            if (split_compare(optarg, names, &o.n_compare) != 0) {
                fprintf(stderr, "parley replay: --compare: expected 1..%d comma-separated names\n",
                        MAX_COMPARE);
                return 2;
            }
            o.compare = names;
            break;
        case O_ROUTE:
            o.route = optarg;
            break;
        case O_CONC:
        case O_LIMIT:
            v = strtol(optarg, &end, 10);
            if (*end || v < (c == O_CONC ? 1 : 0) || v > 100000) {
                fprintf(stderr, "parley replay: --%s: expected an integer in [%d, 100000]\n",
                        c == O_CONC ? "concurrency" : "limit", c == O_CONC ? 1 : 0);
                return 2;
            }
            if (c == O_CONC)
                o.concurrency = (size_t)v;
            else
                o.limit = v;
            break;
        case O_NOSTREAM:
            o.stream = false;
            break;
        case O_KAFKA:
            o.via_kafka = true;
            break;
        case O_TOPIC:
            o.reply_topic = optarg;
            break;
        case O_TIMEOUT:
            if (parse_seconds("--timeout", optarg, &o.kafka_timeout_ms) != 0)
                return 2;
            break;
        case O_PROGRESS:
            if (parse_seconds("--progress-every", optarg, &o.progress_ms) != 0)
                return 2;
            break;
        case 'h':
            replay_usage(stdout);
            return 0;
        default:
            return 2;
        }
    }
    if (optind < argc || !o.input || !o.out_dir) {
        replay_usage(stderr);
        return 2;
    }
    int exit_code;
    config_t *cfg = cmd_start(path, "replay", true, &exit_code);
    if (!cfg)
        return exit_code;
    char err[512];
    int rc = replay_run(cfg, &o, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "parley replay: %s\n", err);
    else if (replay_report_write(o.out_dir, err, sizeof err) != 0)
        fprintf(stderr, "parley replay: %s\n", err);
    config_free(cfg);
    return rc == -2 ? 2 : rc < 0 ? 1 : rc;
}

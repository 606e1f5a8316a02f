/* cmd_produce.c — `parley produce -c FILE`: post jobs by hand, optionally wait for the replies. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cmd_common.h"
#include "cmds.h"
#include "replay/replay.h"

static void produce_usage(FILE *out)
{
    fprintf(
        out,
        "usage: parley produce -c FILE (--conversation ID --message TEXT | --input JOBS.jsonl) [options]\n\n"
        "Posts jobs to kafka.jobs_topic, keyed by conversation id (a job without job_id gets one).\n"
        "  -c, --config FILE       the configuration file\n"
        "  --conversation ID       conversation of the single job\n"
        "  --message TEXT          its user message\n"
        "  --input FILE            jobs from JSONL, one job object per line ('-' = stdin); bad lines are\n"
        "                          reported with their line number and the rest are posted\n"
        "  --route NAME            route of the jobs that name none\n"
        "  --stream                ask for delta messages (printed as they come with --wait)\n"
        "  --wait                  read kafka.reply_topic and print each job's final reply\n"
        "  --timeout S             how long --wait waits for all replies (default 60)\n"
        "Exit status: 0 posted (and with --wait: every reply ok), 1 a bad line, an error reply or a\n"
        "timeout, 2 usage or configuration error.\n");
}

int cmd_produce(int argc, char **argv)
{
    enum { O_CONV = 256, O_MSG, O_INPUT, O_ROUTE, O_STREAM, O_WAIT, O_TIMEOUT };
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"conversation", required_argument, NULL, O_CONV},
                                         {"message", required_argument, NULL, O_MSG},
                                         {"input", required_argument, NULL, O_INPUT},
                                         {"route", required_argument, NULL, O_ROUTE},
                                         {"stream", no_argument, NULL, O_STREAM},
                                         {"wait", no_argument, NULL, O_WAIT},
                                         {"timeout", required_argument, NULL, O_TIMEOUT},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    replay_produce_options_t o = {.timeout_ms = 60000};
    const char *path = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case O_CONV:
            o.conversation = optarg;
            break;
        case O_MSG:
            o.message = optarg;
            break;
        case O_INPUT:
            o.input = optarg;
            break;
        case O_ROUTE:
            o.route = optarg;
            break;
        case O_STREAM:
            o.stream = true;
            break;
        case O_WAIT:
            o.wait = true;
            break;
        case O_TIMEOUT: {
            double s = strtod(optarg, &end);
            if (*end || s <= 0 || s > 86400) {
                fprintf(stderr, "parley produce: --timeout: expected seconds in (0, 86400]\n");
                return 2;
            }
            o.timeout_ms = (int64_t)(s * 1000);
            break;
        }
        case 'h':
            produce_usage(stdout);
            return 0;
        default:
            return 2;
        }
    }
    if (optind < argc || (!o.input && (!o.conversation || !o.message)) ||
        (o.input && (o.conversation || o.message))) {
        produce_usage(stderr);
        return 2;
    }
    int exit_code;
    config_t *cfg = cmd_start(path, "produce", false, &exit_code);
    if (!cfg)
        return exit_code;
    char err[512];
    int rc = replay_produce(cfg, &o, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "parley produce: %s\n", err);
    config_free(cfg);
    return rc < 0 ? 1 : rc;
}

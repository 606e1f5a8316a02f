/* main.c — the parley binary: dispatches to a subcommand; no logic of its own. */
#include <stdio.h>
#include <string.h>

#include "cmds.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command_t;

static const command_t commands[] = {
    {"worker", cmd_worker, "run a worker: Kafka jobs -> Redis history -> LLM providers -> replies"},
    {"produce", cmd_produce, "post jobs from the command line, optionally wait for the replies"},
    {"replay", cmd_replay, "replay recorded conversations against providers and compare them"},
    {"check-config", cmd_check_config, "validate a config file and print it, secrets masked"},
    {"dev", cmd_dev, "run the embedded development stack (Kafka-protocol broker, mock LLMs)"},
    {"version", cmd_version, "print the version"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: parley COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-13s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'parley COMMAND --help' describes a command's options.\n"
                 "Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0)
        name = "version";
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(name, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "parley: unknown command '%s'\n\n", name);
    usage(stderr);
    return 2;
}

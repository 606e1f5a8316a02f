/* cmd_common.h — what the subcommands share: loading -c FILE with a printed error, --help detection. */
#ifndef PARLEY_CMD_COMMON_H
#define PARLEY_CMD_COMMON_H

#include "config/config.h"

/* Loads and validates the config; prints the error and returns NULL on failure (exit 2). */
config_t *cmd_load_config(const char *path);
/* 1 when argv holds --help or -h. */
int cmd_wants_help(int argc, char **argv);

#endif

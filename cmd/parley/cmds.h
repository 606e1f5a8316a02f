/* cmds.h — the subcommands of the parley binary. Each parses its own flags and calls into
 * internal/; each returns the process exit code: 0 success, 1 runtime failure, 2 usage or
 * configuration error (CONTRACT.md §5). */
#ifndef PARLEY_CMDS_H
#define PARLEY_CMDS_H

int cmd_version(int argc, char **argv);
int cmd_check_config(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_dev(int argc, char **argv);
int cmd_produce(int argc, char **argv);
int cmd_replay(int argc, char **argv);

#endif

/* cmd_tokenize.c — placeholder until the subcommand lands (work in progress, not committed). */
#include "commands.h"
#include <stdio.h>
int moec_cmd_tokenize(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "moec tokenize: not implemented yet\n");
    return 1;
}

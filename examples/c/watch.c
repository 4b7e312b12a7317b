/*
 * watch.c: follow the license state of SERVICE with licd_watch() until it may no longer run.
 *
 *     cc -std=c99 -I include examples/c/watch.c path/to/liblicd.a -lpthread -ldl -lm -o watch
 *     ./watch wifi-ap [/run/licd/licd.sock]
 *
 * At LICD_EVENT_WATCHING it checks the current state (so no change is missed between the
 * two), then prints one line per change of any service and exits 0 once SERVICE is
 * unlicensed; 4 on an error (e.g. licd stopped).
 */
#include <stdio.h>
#include <string.h>

#include "licd.h"

struct watch_ctx {
    const char *service;
};

static void print_state(const char *what, const char *service, const licd_state *st) {
    printf("%s %s %s until=%llu reason=%s\n", what, service, licd_state_name(st->state),
           (unsigned long long)st->until, licd_reason_name(st->reason));
    fflush(stdout);
}

/* Runs on the thread that called licd_watch(); returns non-zero to stop. */
static int on_event(const licd_event *ev, void *user_data) {
    struct watch_ctx *ctx = user_data;
    licd_state st;
    switch (ev->kind) {
    case LICD_EVENT_WATCHING:
        if (licd_check(ctx->service, &st) != LICD_OK) {
            return 1;
        }
        print_state("watching", ctx->service, &st);
        return !st.may_run;
    case LICD_EVENT_LAGGED:
        printf("lagged missed=%llu\n", (unsigned long long)ev->missed);
        fflush(stdout);
        return 0;
    case LICD_EVENT_CHANGED:
        print_state("changed", ev->service, &ev->state);
        return strcmp(ev->service, ctx->service) == 0 && !ev->state.may_run;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s SERVICE [SOCKET]\n", argv[0]);
        return 4;
    }
    if (argc == 3 && licd_set_socket_path(argv[2]) != LICD_OK) {
        fprintf(stderr, "watch: bad socket path\n");
        return 4;
    }
    struct watch_ctx ctx = {argv[1]};
    licd_error rc = licd_watch(on_event, &ctx);
    if (rc != LICD_OK) {
        char message[512];
        licd_last_error_message(message, sizeof message);
        fprintf(stderr, "watch: %s (%s)\n", message, licd_strerror(rc));
        return 4;
    }
    return 0;
}

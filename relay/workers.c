/*
 * workers.c - the supervisor of worker processes.  See workers.h.
 *
 * The supervisor runs no event loop and handles no mail: it waits for
 * signals with sigwaitinfo() (blocking is right here) and keeps n workers
 * alive.  A worker that dies by a signal is restarted at once, but at most
 * WORKERS_RESTARTS times a minute, so a crash loop does not spin.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "relay/log.h"
#include "relay/workers.h"

#define WORKERS_RESTARTS  10      /* restarts per minute before giving up */
#define WORKERS_STARTUP   2       /* seconds: an exit(1) sooner is a start-up error */

struct worker {
	pid_t pid;
	time_t started;
};

static const int workers_signals[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD };

static void
workers_sigset(sigset_t *set)
{
	size_t i;

	sigemptyset(set);
	for (i = 0; i < sizeof(workers_signals) / sizeof(workers_signals[0]); i++)
		sigaddset(set, workers_signals[i]);
}

static pid_t
workers_spawn(struct worker *wk, int w, int (*run)(void *, int), void *arg, int *in_child)
{
	sigset_t set;
	pid_t pid = fork();

	if (pid != 0) {
		wk->pid = pid;
		wk->started = time(NULL);
		return pid;
	}
	/* The worker unblocks its signals once its handlers exist; SIGCHLD now. */
	*in_child = 0;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	exit(run(arg, w));
}

static void
workers_signal_all(struct worker *wk, int n, int sig)
{
	int w;

	for (w = 0; w < n; w++)
		if (wk[w].pid > 0)
			kill(wk[w].pid, sig);
}

/* A worker ended: restart it, or decide that the relay must stop. */
static int
workers_reap(struct worker *wk, int n, int stopping, int (*run)(void *, int), void *arg,
    int *in_child, int *restarts)
{
	int status, w, fatal = 0;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (w = 0; w < n && wk[w].pid != pid; w++)
			;
		if (w == n)
			continue;
		wk[w].pid = 0;
		if (stopping)
			continue;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 1 &&
		    time(NULL) - wk[w].started < WORKERS_STARTUP) {
			fatal = 1;
			continue;
		}
		log_msg(LOG_ERR, "worker %ld ended (%s %d): restarting", (long)pid,
		    WIFSIGNALED(status) ? "signal" : "status",
		    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
		if (++*restarts > WORKERS_RESTARTS)
			fatal = 1;
		else if (workers_spawn(&wk[w], w, run, arg, in_child) < 0)
			fatal = 1;
	}
	return fatal;
}

static int
workers_alive(const struct worker *wk, int n)
{
	int w, alive = 0;

	for (w = 0; w < n; w++)
		alive += wk[w].pid > 0;
	return alive;
}

int
workers_supervise(int n, int (*run)(void *arg, int w), void *arg, int *in_child)
{
	struct worker *wk = xcalloc((size_t)n, sizeof(*wk));
	int w, sig, stopping = 0, failed = 0, restarts = 0;
	time_t window = time(NULL);
	sigset_t set;

	workers_sigset(&set);
	sigprocmask(SIG_BLOCK, &set, NULL);
	for (w = 0; w < n; w++)
		if (workers_spawn(&wk[w], w, run, arg, in_child) < 0)
			die("cannot start worker %d: %s", w, strerror(errno));
	log_msg(LOG_INFO, "%d workers started", n);
	while (!stopping || workers_alive(wk, n) > 0) {
		sig = sigwaitinfo(&set, NULL);
		if (time(NULL) - window >= 60) {
			window = time(NULL);
			restarts = 0;
		}
		if (sig == SIGCHLD && workers_reap(wk, n, stopping, run, arg, in_child, &restarts)) {
			log_msg(LOG_ERR, "workers cannot run: stopping");
			failed = stopping = 1;
			workers_signal_all(wk, n, SIGTERM);
		} else if (sig == SIGTERM || sig == SIGINT) {
			stopping = 1;
			workers_signal_all(wk, n, SIGTERM);
		} else if (sig == SIGHUP || sig == SIGUSR1)
			workers_signal_all(wk, n, sig);
	}
	free(wk);
	return failed;
}

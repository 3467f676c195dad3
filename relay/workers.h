/*
 * workers.h - several worker processes sharing the listeners ([relay]
 * workers = N | auto), each with its own SO_REUSEPORT sockets and event
 * loop, under a supervisor that restarts a worker that dies.
 */
#ifndef RELAY_WORKERS_H
#define RELAY_WORKERS_H

/*
 * workers_supervise - fork n workers, each running run(arg, w) and exiting
 * with its return value; restart one that is killed by a signal or exits
 * unexpectedly (a worker that fails at start-up with status 1 stops the
 * whole relay instead, as a configuration error would).  SIGTERM/SIGINT
 * are passed on and the supervisor returns once every worker is gone;
 * SIGHUP and SIGUSR1 are passed on.  *in_child is set to 0 in the
 * workers.  Returns the exit status for the supervisor.
 */
int workers_supervise(int n, int (*run)(void *arg, int w), void *arg, int *in_child);

#endif

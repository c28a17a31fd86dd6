/*
 * One empty wake-up, in C: epoll_wait with a timeout and nothing to wait for, COUNT times every
 * INTERVAL_MS after 20 not counted; prints the process's CPU (user + system, getrusage) per
 * wake-up in microseconds.
 * The twin of wakeup.ts (bench/lib/scenarios.ts, measureWakeups): what any process pays on this
 * machine to be woken and go back to sleep, before it does anything.
 *
 *   wakeup COUNT INTERVAL_MS
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#define WARMUP 20

static double cpu_us(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: wakeup COUNT INTERVAL_MS\n");
    return 2;
  }
  int count = atoi(argv[1]), interval = atoi(argv[2]);
  int ep = epoll_create1(0);
  if (count <= 0 || interval <= 0 || ep < 0) {
    fprintf(stderr, "wakeup: bad arguments or no epoll\n");
    return 2;
  }
  struct epoll_event ev;
  /* The first wake-ups are not counted (wakeup.ts's warm-up: its timers' code compiled once). */
  for (int i = 0; i < WARMUP; i++) epoll_wait(ep, &ev, 1, interval);
  double before = cpu_us();
  for (int i = 0; i < count; i++) epoll_wait(ep, &ev, 1, interval);
  printf("%.2f\n", (cpu_us() - before) / count);
  return 0;
}

/* clockreport: the TimeChaos test target (tests/host_time.rs, tests/vm_time.rs, the bench).
 *
 * Every 100 ms it appends one line to FILE (default: stdout):
 *
 *   CLK <role> <pid> <seq> <rt> <mono> <tod> <time> <sys_rt> <sys_mono>
 *
 * role      "parent", or "child" for a process forked on SIGUSR1 (one per signal)
 * pid       getpid() (in the process's own pid namespace)
 * rt        clock_gettime(CLOCK_REALTIME): "SEC NSEC"   } through libc, i.e. the vDSO
 * mono      clock_gettime(CLOCK_MONOTONIC): "SEC NSEC"  } (what TimeChaos patches)
 * tod       gettimeofday(): "SEC USEC"                  }
 * time      time(NULL): "SEC"                           }
 * sys_*     the same two clocks by the raw syscall ("SEC NSEC"), read just before: the kernel's
 *           own clock, which no vDSO patch can move, so `rt - sys_rt` is the skew this process
 *           sees (plus a few microseconds) and `sys_mono` says when the line was made.
 * (Seconds and fractions apart: a skewed clock may be past what 64-bit nanoseconds hold.)
 *
 * Each line is one write(2) on an O_APPEND descriptor, so the lines of a parent and its
 * children never interleave. A child dies with its parent (PR_SET_PDEATHSIG).
 *
 * usage: clockreport [-o FILE] [-t THREADS] [-i INTERVAL_MS]
 *   -t N  N more threads that call clock_gettime in a loop (1000 calls, then 1 ms sleep): a
 *         multi-threaded target for ptrace stops.
 * Built static (gcc -static -O2) by tests/env/ctr/mk-oci-image.py into the test image as
 * /bin/clockreport, and left beside the image as clockreport for the VM tier and the bench.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t fork_requests;

static void on_usr1(int sig) {
  (void)sig;
  fork_requests++;
}

static struct timespec sys_clock(clockid_t id) {
  struct timespec ts = {-1, 0};
  syscall(SYS_clock_gettime, id, &ts);
  return ts;
}

static struct timespec libc_clock(clockid_t id) {
  struct timespec ts = {-1, 0};
  clock_gettime(id, &ts);
  return ts;
}

static void *spin(void *arg) {
  (void)arg;
  struct timespec pause = {0, 1000000};
  for (;;) {
    for (int i = 0; i < 1000; i++) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      __asm__ volatile("" : : "r"(&ts) : "memory");
    }
    nanosleep(&pause, NULL);
  }
  return NULL;
}

static void report(int fd, const char *role, unsigned long seq) {
  struct timespec sys_rt = sys_clock(CLOCK_REALTIME);
  struct timespec sys_mono = sys_clock(CLOCK_MONOTONIC);
  struct timespec rt = libc_clock(CLOCK_REALTIME);
  struct timespec mono = libc_clock(CLOCK_MONOTONIC);
  struct timeval tv = {-1, 0};
  gettimeofday(&tv, NULL);
  long long t = (long long)time(NULL);
  char line[320];
  int n = snprintf(line, sizeof line,
                   "CLK %s %d %lu %lld %ld %lld %ld %lld %ld %lld %lld %ld %lld %ld\n", role,
                   (int)getpid(), seq, (long long)rt.tv_sec, rt.tv_nsec, (long long)mono.tv_sec,
                   mono.tv_nsec, (long long)tv.tv_sec, (long)tv.tv_usec, t,
                   (long long)sys_rt.tv_sec, sys_rt.tv_nsec, (long long)sys_mono.tv_sec,
                   sys_mono.tv_nsec);
  if (n > 0 && write(fd, line, (size_t)n) < 0 && errno == EBADF) _exit(3);
}

int main(int argc, char **argv) {
  const char *out = NULL;
  int threads = 0;
  long interval_ms = 100;
  int opt;
  while ((opt = getopt(argc, argv, "o:t:i:")) != -1) {
    switch (opt) {
    case 'o': out = optarg; break;
    case 't': threads = atoi(optarg); break;
    case 'i': interval_ms = atol(optarg); break;
    default:
      fprintf(stderr, "usage: %s [-o FILE] [-t THREADS] [-i INTERVAL_MS]\n", argv[0]);
      return 2;
    }
  }
  int fd = 1;
  if (out && strcmp(out, "-") != 0) {
    fd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
      perror(out);
      return 1;
    }
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1; /* no SA_RESTART: the sleep returns early, the fork happens now */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  for (int i = 0; i < threads; i++) {
    pthread_t th;
    if (pthread_create(&th, NULL, spin, NULL) != 0) {
      perror("pthread_create");
      return 1;
    }
  }

  const char *role = "parent";
  sig_atomic_t forked = 0;
  struct timespec pause = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  for (unsigned long seq = 0;; seq++) {
    while (forked < fork_requests && role[0] == 'p') {
      forked++;
      pid_t parent = getpid();
      pid_t pid = fork();
      if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(0); /* the parent is already gone */
        role = "child";
        seq = 0;
        sa.sa_handler = SIG_IGN;
        sigaction(SIGUSR1, &sa, NULL);
        break;
      }
      if (pid < 0) perror("fork");
    }
    report(fd, role, seq);
    nanosleep(&pause, NULL);
  }
}

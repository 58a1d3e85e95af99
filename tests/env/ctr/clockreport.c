/* clockreport: the TimeChaos test target (tests/host_time.rs, tests/vm_time.rs, the bench).
 *
 * Every 100 ms it appends one line to FILE (default: stdout):
 *
 *   CLK <role> <pid> <seq> <rt_ns> <mono_ns> <tod_us> <time_s> <sys_rt_ns> <sys_mono_ns>
 *
 * role      "parent", or "child" for a process forked on SIGUSR1 (one per signal)
 * pid       getpid() (in the process's own pid namespace)
 * rt_ns     clock_gettime(CLOCK_REALTIME) in ns        } through libc, i.e. the vDSO
 * mono_ns   clock_gettime(CLOCK_MONOTONIC) in ns       } (what TimeChaos patches)
 * tod_us    gettimeofday() in us                       }
 * time_s    time(NULL)                                 }
 * sys_*_ns  the same two clocks by the raw syscall, read just before: the kernel's own clock,
 *           which no vDSO patch can move, so `rt_ns - sys_rt_ns` is the skew this process sees
 *           (plus a few microseconds) and `sys_mono_ns` says when the line was made.
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

static long long ns_of(const struct timespec *ts) {
  return (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

static long long sys_clock(clockid_t id) {
  struct timespec ts;
  if (syscall(SYS_clock_gettime, id, &ts) != 0) return -1;
  return ns_of(&ts);
}

static long long libc_clock(clockid_t id) {
  struct timespec ts;
  if (clock_gettime(id, &ts) != 0) return -1;
  return ns_of(&ts);
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
  long long sys_rt = sys_clock(CLOCK_REALTIME);
  long long sys_mono = sys_clock(CLOCK_MONOTONIC);
  long long rt = libc_clock(CLOCK_REALTIME);
  long long mono = libc_clock(CLOCK_MONOTONIC);
  struct timeval tv;
  gettimeofday(&tv, NULL);
  long long tod = (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
  long long t = (long long)time(NULL);
  char line[256];
  int n = snprintf(line, sizeof line, "CLK %s %d %lu %lld %lld %lld %lld %lld %lld\n", role,
                   (int)getpid(), seq, rt, mono, tod, t, sys_rt, sys_mono);
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

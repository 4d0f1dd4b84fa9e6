/*
 * walker: the Linux guest's memory walker (PID 1's child in the reference VMM's initramfs).
 *
 * Fills a share of the guest's memory (anonymous 4 KiB pages) with a pattern that depends on
 * each 8-byte word's index, verifies it in a loop and prints a heartbeat per pass to /dev/kmsg
 * (the kernel log, which the VMM's serial console carries). A SIGBUS with BUS_MCEERR_AR or
 * BUS_MCEERR_AO for one of its pages (the guest kernel's memory-failure handling of a machine
 * check) maps a fresh page over the lost one, restores its pattern, notes it and carries on.
 * PR_MCE_KILL_EARLY: an action-optional report reaches it before it touches the page.
 *
 * It names a few of its pages' guest-physical frames (from /proc/self/pagemap) so that the VMM
 * can poison memory that is really under it. It asks the VMM through one I/O port whether to stop.
 *
 * With several CPUs it forks one worker per CPU (or the count given), each pinned to its CPU with
 * its own share of the memory: the SMP guest's machine checks land under every CPU. Worker 0 asks
 * the VMM whether to stop and tells the others through shared memory; its bye sums them all.
 *
 * Static glibc (gcc -static), no other library.
 * Usage: walker [percent of MemAvailable] [ms between passes] [workers, default: online CPUs]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mman.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

#define PAGE 4096ul
#define WORDS (PAGE / 8)
#define MAX_LOST 64

static int kmsg = 2;
static uint8_t* buf;
static size_t npages;
static uint64_t seed = 0x5eed;
static uint64_t* pfns;
static volatile size_t lost_pages[MAX_LOST];
static volatile int nlost;
static int have_port;
#define MAX_WORKERS 64
struct shared {
  volatile int stop;
  struct {
    volatile uint64_t passes, wrong;
    volatile int lost, cpu;
  } w[MAX_WORKERS];
};
static struct shared* sh;
static int me;  /* worker index */

static uint64_t word(size_t page, size_t w) {
  uint64_t x = (page * WORDS + w) ^ (seed << 32);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x | 1;  /* never 0: a zero page is always wrong */
}

static void fill_page(size_t p) {
  uint64_t* q = (uint64_t*)(buf + p * PAGE);
  for (size_t w = 0; w < WORDS; w++) q[w] = word(p, w);
}

/* One line to the kernel log (level 4: shown with loglevel >= 5). printf-like, not for handlers. */
static void say(const char* fmt, ...) {
  char line[512];
  int n = snprintf(line, sizeof line, "<4>walker: ");
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(line + n, sizeof line - n, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof line - 2) n = sizeof line - 2;
  line[n++] = '\n';
  if (write(kmsg, line, n) < 0) {
  }
}

/* Async-signal-safe pieces for the SIGBUS handler. */
static size_t put_s(char* p, const char* s) {
  size_t n = strlen(s);
  memcpy(p, s, n);
  return n;
}
static size_t put_x(char* p, uint64_t v) {
  char t[20];
  int n = 0;
  do {
    t[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  p[0] = '0';
  p[1] = 'x';
  for (int i = 0; i < n; i++) p[2 + i] = t[n - 1 - i];
  return 2 + n;
}
static size_t put_d(char* p, uint64_t v) {
  char t[24];
  int n = 0;
  do {
    t[n++] = '0' + v % 10;
    v /= 10;
  } while (v);
  for (int i = 0; i < n; i++) p[i] = t[n - 1 - i];
  return n;
}

static void on_sigbus(int sig, siginfo_t* si, void* uc) {
  (void)sig;
  (void)uc;
  char line[320];
  size_t n = 0;
  uintptr_t a = (uintptr_t)si->si_addr & ~(PAGE - 1);
  const char* kind = si->si_code == BUS_MCEERR_AR ? "BUS_MCEERR_AR" : si->si_code == BUS_MCEERR_AO ? "BUS_MCEERR_AO" : "other";
  n += put_s(line + n, "<4>walker: SIGBUS ");
  n += put_s(line + n, kind);
  n += put_s(line + n, " addr=");
  n += put_x(line + n, (uintptr_t)si->si_addr);
  n += put_s(line + n, " lsb=");
  n += put_d(line + n, (uint64_t)si->si_addr_lsb);
  if ((si->si_code != BUS_MCEERR_AR && si->si_code != BUS_MCEERR_AO) || a < (uintptr_t)buf || a >= (uintptr_t)buf + npages * PAGE) {
    n += put_s(line + n, ": not a memory error in my buffer, giving up\n");
    if (write(kmsg, line, n) < 0) {
    }
    _exit(3);
  }
  size_t p = (a - (uintptr_t)buf) / PAGE;
  n += put_s(line + n, " page=");
  n += put_d(line + n, p);
  n += put_s(line + n, " pfn=");
  n += put_x(line + n, pfns[p]);
  /* The lost page is gone (the kernel unmapped it); a fresh one takes its place. */
  if (mmap((void*)a, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
    n += put_s(line + n, ": mmap failed\n");
    if (write(kmsg, line, n) < 0) {
    }
    _exit(4);
  }
  fill_page(p);
  if (nlost < MAX_LOST) lost_pages[nlost] = p;
  nlost++;
  n += put_s(line + n, ": fresh page mapped, pattern restored, lost=");
  n += put_d(line + n, (uint64_t)nlost);
  line[n++] = '\n';
  if (write(kmsg, line, n) < 0) {
  }
}

static uint64_t pfn_of(int pm, const void* va) {
  uint64_t e = 0;
  if (pread(pm, &e, 8, ((uintptr_t)va / PAGE) * 8) != 8) return 0;
  return (e >> 63) ? (e & ((1ull << 55) - 1)) : 0;
}

/* A /proc/meminfo line in KiB ("MemAvailable:", "HardwareCorrupted:"), -1 if absent. */
static long meminfo_kib(const char* key) {
  FILE* f = fopen("/proc/meminfo", "r");
  char l[128];
  long v = -1;
  size_t k = strlen(key);
  while (f && fgets(l, sizeof l, f))
    if (!strncmp(l, key, k) && sscanf(l + k, " %ld kB", &v) == 1) break;
  if (f) fclose(f);
  return v;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int stop_requested(void) {
  if (me == 0 && have_port && inb(RAS_LINUX_PORT_CONTROL) == RAS_LINUX_CONTROL_STOP) sh->stop = 1;
  return sh->stop;
}

int main(int argc, char** argv) {
  int percent = argc > 1 ? atoi(argv[1]) : 50;
  int interval = argc > 2 ? atoi(argv[2]) : 1000;
  int workers = argc > 3 && atoi(argv[3]) > 0 ? atoi(argv[3]) : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (percent < 1 || percent > 90) percent = 50;
  if (workers < 1) workers = 1;
  if (workers > MAX_WORKERS) workers = MAX_WORKERS;
  int k = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
  if (k >= 0) kmsg = k;
  have_port = ioperm(RAS_LINUX_PORT_CONTROL, 1, 1) == 0;
  if (!have_port) say("ioperm(0x%x): %s: the VMM cannot stop me", RAS_LINUX_PORT_CONTROL, strerror(errno));
  sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) return 1;
  long avail = meminfo_kib("MemAvailable:");
  pid_t kids[MAX_WORKERS];
  for (int w = 1; w < workers; w++) {
    pid_t pid = fork();
    if (pid == 0) {
      me = w;
      break;
    }
    kids[w] = pid;
  }
  int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(me % (ncpu > 0 ? ncpu : 1), &set);
  if (workers > 1 && sched_setaffinity(0, sizeof set, &set) != 0) say("worker %d: sched_setaffinity: %s", me, strerror(errno));
  sh->w[me].cpu = sched_getcpu();
  /* Action-optional reports too, before the page is touched. */
  if (prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0) != 0) say("PR_MCE_KILL_EARLY: %s", strerror(errno));
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, NULL);

  npages = (size_t)((avail > 0 ? avail : 65536) / 100 * percent / 4) / workers;
  buf = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  pfns = mmap(NULL, npages * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (buf == MAP_FAILED || pfns == MAP_FAILED) {
    say("mmap %zu pages: %s", npages, strerror(errno));
    return 1;
  }
  madvise(buf, npages * PAGE, MADV_NOHUGEPAGE);  /* 4 KiB pages: the unit a machine check takes */
  uint64_t t0 = now_ms();
  for (size_t p = 0; p < npages; p++) fill_page(p);
  int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  size_t mapped = 0;
  for (size_t p = 0; p < npages; p++) {
    pfns[p] = pm >= 0 ? pfn_of(pm, buf + p * PAGE) : 0;
    if (pfns[p]) mapped++;
  }
  say("filled %zu pages (%zu MiB of MemAvailable %ld MiB) in %llu ms, %zu with a known pfn, worker %d of %d on cpu %d", npages,
      npages * PAGE >> 20, avail >> 10, (unsigned long long)(now_ms() - t0), mapped, me, workers, sched_getcpu());
  /* Frames for the VMM to poison: a few pages spread over the buffer (workers after the first
   * name theirs after it, so that the first targets the VMM reads are spread over the workers). */
  const char* names[] = {"a", "b", "c"};
  if (me) {
    struct timespec ts = {0, 50000000L * me};
    nanosleep(&ts, NULL);
  }
  for (int i = 0; i < 3; i++) {
    size_t p = npages * (i + 1) / 4;
    say("target %s%d page=%zu va=%p pfn=0x%llx gpa=0x%llx", names[i], me, p, (void*)(buf + p * PAGE), (unsigned long long)pfns[p],
        (unsigned long long)pfns[p] * PAGE);
  }

  uint64_t pass = 0, wrong_total = 0;
  for (;;) {
    uint64_t t = now_ms(), wrong = 0;
    for (size_t p = 0; p < npages; p++) {
      const uint64_t* q = (const uint64_t*)(buf + p * PAGE);
      for (size_t w = 0; w < WORDS; w++) {
        uint64_t got = q[w], want = word(p, w);
        if (got != want) {
          for (int b = 0; b < 8; b++) wrong += ((got ^ want) >> (8 * b)) & 0xff ? 1 : 0;
          if (wrong <= 64) say("WRONG page=%zu word=%zu got=0x%llx want=0x%llx", p, w, (unsigned long long)got, (unsigned long long)want);
        }
      }
    }
    pass++;
    wrong_total += wrong;
    sh->w[me].passes = pass;
    sh->w[me].wrong = wrong_total;
    sh->w[me].lost = nlost;
    /* hwcorrupted_kb: the guest kernel's own count of poisoned memory (its memory-failure state). */
    say("heartbeat pass=%llu pages=%zu wrong=%llu lost=%d ms=%llu worker=%d cpu=%d hwcorrupted_kb=%ld", (unsigned long long)pass,
        npages, (unsigned long long)wrong, nlost, (unsigned long long)(now_ms() - t), me, sched_getcpu(),
        meminfo_kib("HardwareCorrupted:"));
    if (stop_requested()) break;
    struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    if (stop_requested()) break;
  }
  char lost[256] = "";
  for (int i = 0, n = 0; i < nlost && i < MAX_LOST && n < 200; i++)
    n += snprintf(lost + n, sizeof lost - n, "%s0x%llx", i ? "," : "", (unsigned long long)pfns[lost_pages[i]]);
  if (me) {
    say("worker %d done passes=%llu wrong=%llu lost=%d lost_pfns=%s", me, (unsigned long long)pass, (unsigned long long)wrong_total,
        nlost, lost);
    return wrong_total ? 2 : 0;
  }
  /* Worker 0: the others' end, then one bye for them all. */
  int failed = 0, all_lost = nlost;
  uint64_t all_wrong = wrong_total;
  char cpus[200] = "";
  int cn = snprintf(cpus, sizeof cpus, "%d", sh->w[0].cpu);
  for (int w = 1; w < workers; w++) {
    int st = 0;
    if (waitpid(kids[w], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
    all_wrong += sh->w[w].wrong;
    all_lost += sh->w[w].lost;
    if (cn < (int)sizeof cpus - 8) cn += snprintf(cpus + cn, sizeof cpus - cn, ",%d", sh->w[w].cpu);
  }
  say("bye passes=%llu wrong=%llu lost=%d lost_pfns=%s workers=%d cpus=%s failed_workers=%d", (unsigned long long)pass,
      (unsigned long long)all_wrong, all_lost, lost, workers, cpus, failed);
  return all_wrong || failed ? 2 : 0;
}

/*
 * guest.c: the reference VMM's guest. Freestanding, 64-bit, no libc.
 *
 * Every vCPU enables machine checks, fills its slice of the data frames (every ncpus-th frame of
 * the ranges the VMM put in the config) with a pattern seeded per frame, then verifies its slice
 * over and over. A #MC reads the bank by rdmsr, records the lost frame, makes the verifier skip
 * it (exception-table fixup of the interrupted RIP), clears MCIP and the guest runs on. Everything
 * it sees goes to the VMM over port I/O: RAS_PORT_REPORT with a per-vCPU mailbox in guest RAM.
 */
#include "proto.h"

#define MSR_MCG_CAP 0x179
#define MSR_MCG_STATUS 0x17a
#define MSR_MCG_CTL 0x17b
#define MSR_MC_CTL(b) (0x400 + 4 * (b))
#define MSR_MC_STATUS(b) (0x401 + 4 * (b))
#define MSR_MC_ADDR(b) (0x402 + 4 * (b))
#define MSR_MC_MISC(b) (0x403 + 4 * (b))
#define MCG_CTL_P (1ull << 8)
#define MCG_STATUS_RIPV (1ull << 0)
#define MCI_STATUS_VAL (1ull << 63)
#define MCI_STATUS_UC (1ull << 61)
#define MCI_STATUS_MISCV (1ull << 59)
#define MCI_STATUS_ADDRV (1ull << 58)
#define CR4_MCE (1ull << 6)

typedef uint64_t u64;

struct mc_frame {
  u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
  u64 rip, cs, rflags, rsp, ss;
};

struct idt_gate {
  uint16_t off0, sel;
  uint8_t ist, type;
  uint16_t off1;
  uint32_t off2, zero;
};

extern u64 verify_frame(const volatile u64 *frame, u64 first);
extern char verify_frame_end[], verify_frame_fail[];
extern const u64 isr_table[32];
extern char poll_entry[];
extern void probe_lost(volatile u64 *frame);
extern char probe_load[], probe_load_next[], probe_store_next[], probe_rmw[], probe_rmw_next[];

static struct idt_gate idt[256] __attribute__((aligned(16))); /* 32..255 not present but the poll's */
static u64 lost_bitmap[RAS_GUEST_MAX_FRAMES / 64];
static u64 range_first[RAS_GUEST_MAX_RANGES + 1]; /* frame index of each range's first frame */

#define CFG ((struct ras_guest_config *)RAS_GUEST_CONFIG)

static inline u64 rdmsr(uint32_t msr) {
  uint32_t lo, hi;
  __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
  return ((u64)hi << 32) | lo;
}
static inline void wrmsr(uint32_t msr, u64 v) {
  __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}
static inline u64 read_cr4(void) {
  u64 v;
  __asm__ volatile("mov %%cr4, %0" : "=r"(v));
  return v;
}
static inline void write_cr4(u64 v) { __asm__ volatile("mov %0, %%cr4" ::"r"(v) : "memory"); }
static inline u64 read_cr2(void) {
  u64 v;
  __asm__ volatile("mov %%cr2, %0" : "=r"(v));
  return v;
}

/* The vCPU index from the stack pointer: each vCPU's stack is its own aligned slot. */
static inline unsigned this_cpu(void) {
  u64 sp = (u64)__builtin_frame_address(0);
  return (unsigned)((sp - RAS_GUEST_STACKS) / RAS_GUEST_STACK_SIZE);
}

/* Each reporter has its own mailbox (RAS_BOX_*): a #MC may interrupt the main code's report or the
 * poll's, and its own report must not overwrite theirs before their `out`. */
static void report(unsigned cpu, int box, u64 ev, u64 a, u64 b, u64 c, u64 d, u64 e, u64 f, u64 g) {
  volatile struct ras_guest_mailbox *mb = (volatile struct ras_guest_mailbox *)RAS_GUEST_MAILBOX_OF(cpu, box);
  mb->a = a;
  mb->b = b;
  mb->c = c;
  mb->d = d;
  mb->e = e;
  mb->f = f;
  mb->g = g;
  mb->event = ev;
  uint32_t v = cpu | ((uint32_t)box << 8);
  __asm__ volatile("outl %0, %w1" ::"a"(v), "Nd"(RAS_PORT_REPORT) : "memory");
}

/* Global frame index of a GPA in the config's ranges, or ~0. */
static u64 frame_index(u64 gpa) {
  for (u64 r = 0; r < CFG->nranges; r++) {
    const struct ras_guest_range *rg = &CFG->ranges[r];
    if (gpa >= rg->gpa && gpa - rg->gpa < rg->size) return range_first[r] + ((gpa - rg->gpa) >> 12);
  }
  return ~0ull;
}

static int is_lost(u64 idx) { return (((volatile u64 *)lost_bitmap)[idx >> 6] >> (idx & 63)) & 1; }

static void record_lost(u64 gpa) {
  u64 idx = frame_index(gpa);
  if (idx != ~0ull) __atomic_fetch_or(&lost_bitmap[idx >> 6], 1ull << (idx & 63), __ATOMIC_SEQ_CST);
  ras_guest_list_lost(CFG, gpa);
}

struct seen_bank {
  u64 status, addr, misc, bank;
};

/* Takes (reads, records, clears) up to 4 banks holding an error: every one for a machine check,
 * only those without UC for a poll (a UC one belongs to a machine check on its way). */
static int take_banks(struct seen_bank *seen, int poll) {
  unsigned banks = rdmsr(MSR_MCG_CAP) & 0xff;
  int n = 0;
  for (unsigned b = 0; b < banks && n < 4; b++) {
    u64 st = rdmsr(MSR_MC_STATUS(b));
    if (!(st & MCI_STATUS_VAL) || (poll && (st & MCI_STATUS_UC))) continue;
    seen[n].status = st;
    seen[n].addr = (st & MCI_STATUS_ADDRV) ? rdmsr(MSR_MC_ADDR(b)) : 0;
    seen[n].misc = (st & MCI_STATUS_MISCV) ? rdmsr(MSR_MC_MISC(b)) : 0;
    seen[n].bank = b;
    wrmsr(MSR_MC_STATUS(b), 0);
    if (st & MCI_STATUS_ADDRV) {
      unsigned lsb = (st & MCI_STATUS_MISCV) ? (seen[n].misc & 0x3f) : 12;
      if (lsb < 12 || lsb > 30) lsb = 12;
      record_lost(seen[n].addr & ~((1ull << lsb) - 1) & ~0xfffull);
    }
    n++;
  }
  return n;
}

/* Where f was interrupted (RAS_SITE_*). */
static u64 site_of(const struct mc_frame *f) {
  if (f->rip >= (u64)verify_frame && f->rip < (u64)verify_frame_end) return RAS_SITE_VERIFIER;
  if (f->rip == (u64)probe_load) return RAS_SITE_PROBE_LOAD | (f->rax == RAS_PROBE_SENTINEL ? RAS_SITE_RAX_INTACT : 0);
  if (f->rip == (u64)probe_rmw) return RAS_SITE_PROBE_RMW;
  if (f->rip == (u64)probe_store_next) return RAS_SITE_PROBE_STORE;
  return RAS_SITE_OTHER;
}

/* Past the probe's access that took a machine check (it is lost: do not run it again). */
static void skip_probe(struct mc_frame *f) {
  if (f->rip == (u64)probe_load) f->rip = (u64)probe_load_next;
  else if (f->rip == (u64)probe_rmw) f->rip = (u64)probe_rmw_next;
}

void mc_handler(struct mc_frame *f) {
  unsigned cpu = this_cpu();
  u64 mcg = rdmsr(MSR_MCG_STATUS);
  u64 site = site_of(f);
  int guarded = site == RAS_SITE_VERIFIER;
  struct seen_bank seen[4];
  int n = take_banks(seen, 0);
  /* The interrupted access was the verifier's: abandon that frame (it returns ~0). */
  u64 rip = f->rip;
  if (guarded) f->rip = (u64)verify_frame_fail;
  skip_probe(f);
  /* Tests only: touch a frame before MCIP is cleared (a second machine check inside this one). */
  if (CFG->mc_touch) (void)*(volatile u64 *)CFG->mc_touch;
  /* MCIP cleared before reporting: at that exit the VMM may inject the next machine check. */
  wrmsr(MSR_MCG_STATUS, 0);
  if (n == 0) report(cpu, RAS_BOX_MCE, RAS_EV_MCE, 0, 0, mcg, 0, ~0ull, rip, site);
  for (int i = 0; i < n; i++)
    report(cpu, RAS_BOX_MCE, RAS_EV_MCE, seen[i].addr, seen[i].status, mcg, seen[i].misc, seen[i].bank, rip, site);
  if (!(mcg & MCG_STATUS_RIPV)) {
    report(cpu, RAS_BOX_MCE, RAS_EV_FATAL, 18, rip, mcg, 0, 0, 0, 0);
    for (;;) __asm__ volatile("cli; hlt");
  }
}

/* RAS_GUEST_POLL_VECTOR: what Linux's machine_check_poll does on AMD's deferred-error interrupt.
 * Interrupts are taken between instructions, so an interrupted verifier has not finished the
 * frame it is on: when the poll found a lost frame, that one is abandoned for this pass (the next
 * pass skips a lost frame and verifies a healthy one again). */
void poll_handler(struct mc_frame *f) {
  unsigned cpu = this_cpu();
  struct seen_bank seen[4];
  int n = take_banks(seen, 1);
  if (n == 0) return;
  u64 mcg = rdmsr(MSR_MCG_STATUS);
  u64 site = site_of(f);
  u64 rip = f->rip;
  if (site == RAS_SITE_VERIFIER) f->rip = (u64)verify_frame_fail;
  for (int i = 0; i < n; i++)
    report(cpu, RAS_BOX_POLL, RAS_EV_MCE, seen[i].addr, seen[i].status, mcg, seen[i].misc, seen[i].bank, rip, site);
}

void fatal_handler(const u64 *f) {
  report(this_cpu(), RAS_BOX_MCE, RAS_EV_FATAL, f[0], f[2], f[1], read_cr2(), 0, 0, 0);
}

static void setup_idt(void) {
  for (int v = 0; v < 256; v++) {
    if (v >= 32 && v != RAS_GUEST_POLL_VECTOR) continue; /* not present */
    u64 h = v < 32 ? isr_table[v] : (u64)poll_entry;
    idt[v].off0 = h & 0xffff;
    idt[v].sel = 0x08;
    idt[v].ist = 0;
    idt[v].type = 0x8e; /* present, DPL 0, 64-bit interrupt gate */
    idt[v].off1 = (h >> 16) & 0xffff;
    idt[v].off2 = h >> 32;
    idt[v].zero = 0;
  }
  struct __attribute__((packed)) {
    uint16_t limit;
    u64 base;
  } d = {sizeof(idt) - 1, (u64)idt};
  __asm__ volatile("lidt %0" ::"m"(d));
}

static unsigned enable_mce(u64 *cap_out) {
  u64 cap = rdmsr(MSR_MCG_CAP);
  unsigned banks = cap & 0xff;
  if (cap & MCG_CTL_P) wrmsr(MSR_MCG_CTL, ~0ull);
  for (unsigned b = 0; b < banks; b++) {
    wrmsr(MSR_MC_CTL(b), ~0ull);
    wrmsr(MSR_MC_STATUS(b), 0);
  }
  write_cr4(read_cr4() | CR4_MCE);
  *cap_out = cap;
  return banks;
}

static void fill_frame(volatile u64 *p, u64 v) {
  for (int i = 0; i < 512; i++, v += RAS_PATTERN_STEP) p[i] = v;
}

/* Runs the body for every frame (gpa_var, idx_) of this vCPU's slice: every ncpus-th frame. */
#define FOR_MY_FRAMES(cpu, ncpus, gpa_var, ...)                                  \
  for (u64 r_ = 0; r_ < CFG->nranges; r_++) {                                       \
    const struct ras_guest_range *rg_ = &CFG->ranges[r_];                           \
    u64 first_ = range_first[r_];                                                   \
    u64 skip_ = (cpu + ncpus - first_ % ncpus) % ncpus;                             \
    for (u64 i_ = skip_; i_ < (rg_->size >> 12); i_ += ncpus) {                     \
      u64 gpa_var = rg_->gpa + (i_ << 12);                                          \
      u64 idx_ = first_ + i_;                                                       \
      (void)idx_;                                                                   \
      __VA_ARGS__                                                                   \
    }                                                                               \
  }

void guest_main(u64 cpu) {
  u64 ncpus = CFG->ncpus, seed = CFG->seed;
  setup_idt();
  u64 cap;
  unsigned banks = enable_mce(&cap);
  u64 acc = 0;
  for (u64 r = 0; r < CFG->nranges; r++) {
    range_first[r] = acc; /* every vCPU computes the same values */
    acc += CFG->ranges[r].size >> 12;
  }
  report(cpu, RAS_BOX_MAIN, RAS_EV_HELLO, cap, read_cr4(), banks, acc, 0, 0, 0);
  __asm__ volatile("sti" ::: "memory"); /* the only interrupt is the VMM's poll */

  u64 filled = 0;
  FOR_MY_FRAMES(cpu, ncpus, gpa, {
    fill_frame((volatile u64 *)gpa, ras_frame_seed(gpa, seed));
    filled++;
  })
  report(cpu, RAS_BOX_MAIN, RAS_EV_FILLED, filled, 0, 0, 0, 0, 0, 0);

  u64 pass = 0, verified = 0, wrong = 0;
  int probed = 0;
  for (;;) {
    /* Tests only: once the probe frame is known lost, a load, a store and an RMW on it. */
    if (cpu == 0 && CFG->probe && !probed) {
      u64 pidx = frame_index(CFG->probe);
      if (pidx != ~0ull && is_lost(pidx)) {
        probed = 1;
        probe_lost((volatile u64 *)CFG->probe);
      }
    }
    FOR_MY_FRAMES(cpu, ncpus, gpa, {
      if (CFG->stop) goto bye;
      if (is_lost(idx_)) continue;
      u64 w = verify_frame((const volatile u64 *)gpa, ras_frame_seed(gpa, seed));
      if (w == ~0ull) continue; /* a machine check: the handler recorded the frame */
      verified++;
      if (w) {
        wrong += w;
        u64 first = ras_frame_seed(gpa, seed), got = 0, want = 0;
        for (int i = 0; i < 512; i++, first += RAS_PATTERN_STEP) {
          got = ((volatile u64 *)gpa)[i];
          want = first;
          if (got != want) break;
        }
        report(cpu, RAS_BOX_MAIN, RAS_EV_WRONG, gpa, w, got, want, 0, 0, 0);
      }
    })
    pass++;
    report(cpu, RAS_BOX_MAIN, RAS_EV_PASS, pass, verified, wrong, 0, 0, 0, 0);
  }
bye:
  report(cpu, RAS_BOX_MAIN, RAS_EV_BYE, pass, verified, wrong, 0, 0, 0, 0);
}

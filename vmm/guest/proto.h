/*
 * proto.h: what the reference VMM and its guest agree on. Included by the guest (freestanding C)
 * and by the VMM's native module. Every address here is guest-physical; the guest runs with an
 * identity map, so it uses them as pointers.
 *
 * Guest RAM layout of the first region (GPA 0, the VMM writes all of it before the vCPUs start):
 *   0x1000 PML4, 0x2000 PDPT, 0x3000..0x6fff four page directories (2 MiB pages, 0..4 GiB)
 *   0x8000 GDT (null, code64 0x08, data 0x10, TSS 0x18), 0x8100 TSS
 *   0x9000..0xbfff struct ras_guest_config (the VMM's orders), then the guest's lost list, which
 *          fills the block: its capacity (RAS_GUEST_MAX_LOST) follows from this layout
 *   0xc000 mailboxes, three struct ras_guest_mailbox per vCPU (its main code's, its #MC handler's,
 *          its poll handler's: a #MC may interrupt a report of either of the others)
 *   0x10000 the guest image (guest.bin), entry at its first byte
 *   0x100000 + cpu * RAS_GUEST_STACK_SIZE: the vCPU's stack (grows down from the slot's top)
 * Data frames (filled and verified) are only where config.ranges say: never in the first 2 MiB.
 */
#ifndef RAS_VMM_PROTO_H
#define RAS_VMM_PROTO_H

#include <stdint.h>

#define RAS_GUEST_PML4 0x1000ull
#define RAS_GUEST_PDPT 0x2000ull
#define RAS_GUEST_PD 0x3000ull /* 4 pages */
#define RAS_GUEST_GDT 0x8000ull
#define RAS_GUEST_TSS 0x8100ull
#define RAS_GUEST_CONFIG 0x9000ull
#define RAS_GUEST_MAILBOX 0xc000ull /* also the end of the config block */
#define RAS_GUEST_IMAGE 0x10000ull
#define RAS_GUEST_IMAGE_MAX 0x70000ull
#define RAS_GUEST_STACKS 0x100000ull
#define RAS_GUEST_STACK_SIZE 0x10000ull
#define RAS_GUEST_SYSTEM_END 0x200000ull /* the first 2 MiB: code, tables, stacks */
#define RAS_GUEST_MAX_CPUS 16
#define RAS_GUEST_MAX_RANGES 16
#define RAS_GUEST_MAX_FRAMES (1u << 19) /* frames the guest can track: 2 GiB of data */
#define RAS_GUEST_MAPPED_END 0x100000000ull /* the identity map covers 0..4 GiB */

/* AMD's deferred-error interrupt (Linux's DEFERRED_ERROR_VECTOR). An action-optional error on AMD
 * is a deferred error in a bank, with no #MC: the guest must poll. KVM raises no interrupt for it,
 * so after injecting one the VMM raises this vector itself (KVM_INTERRUPT); the guest's handler
 * polls its banks. A vCPU stuck re-executing an access to the frame (an EFAULT with no address)
 * takes the interrupt before the instruction and learns of the frame. */
#define RAS_GUEST_POLL_VECTOR 0xf4

/* One port: the guest writes its mailbox, then `out RAS_PORT_REPORT, eax` with eax = cpu index |
 * box << 8 (RAS_BOX_*). */
#define RAS_PORT_REPORT 0x510
#define RAS_BOX_MAIN 0
#define RAS_BOX_MCE 1  /* the #MC handler's (and the fatal-exception handler's) */
#define RAS_BOX_POLL 2 /* the deferred-error poll's (RAS_GUEST_POLL_VECTOR) */
#define RAS_BOXES 3

enum ras_guest_event {
  RAS_EV_HELLO = 1,  /* a = MCG_CAP, b = CR4 after enabling MCE, c = banks enabled */
  RAS_EV_FILLED = 2, /* a = frames this vCPU filled */
  RAS_EV_PASS = 3,   /* a = pass number, b = frames verified (total), c = wrong bytes (total) */
  RAS_EV_MCE = 4,    /* a = MCi_ADDR, b = MCi_STATUS, c = MCG_STATUS, d = MCi_MISC, e = bank,
                        f = interrupted RIP, g = 1 if the verifier was interrupted (frame skipped);
                        also a bank the poll (RAS_GUEST_POLL_VECTOR) found: then no MCIP in c.
                        g is RAS_SITE_*: where the interrupted RIP was */
  RAS_EV_WRONG = 5,  /* a = GPA of the frame, b = wrong bytes in it, c = first wrong qword's value,
                        d = expected value */
  RAS_EV_FATAL = 6,  /* a = vector, b = RIP, c = error code, d = CR2: the vCPU stops */
  RAS_EV_BYE = 7     /* a = passes, b = frames verified, c = wrong bytes: stopped on config.stop */
};

/* Where a machine check or a poll interrupted the guest (RAS_EV_MCE's g). */
#define RAS_SITE_OTHER 0
#define RAS_SITE_VERIFIER 1     /* in the verifier: the frame is skipped */
#define RAS_SITE_PROBE_LOAD 2   /* exactly on the probe's load (RIP not advanced) */
#define RAS_SITE_PROBE_RMW 3    /* exactly on the probe's read-modify-write */
#define RAS_SITE_PROBE_STORE 4  /* just after the probe's store (a store cannot be rewound) */
#define RAS_SITE_RAX_INTACT 0x10 /* with PROBE_LOAD: rax still holds RAS_PROBE_SENTINEL (the load did not retire) */
#define RAS_PROBE_SENTINEL 0x5a5a5a5a5a5a5a5aull

struct ras_guest_mailbox {
  uint64_t event;
  uint64_t a, b, c, d, e, f, g;
};

struct ras_guest_range {
  uint64_t gpa;  /* 4 KiB aligned */
  uint64_t size; /* multiple of 4 KiB */
};

struct ras_guest_config {
  uint64_t magic; /* RAS_GUEST_MAGIC */
  uint64_t ncpus;
  uint64_t seed;
  volatile uint64_t stop; /* the VMM sets 1: every vCPU reports BYE and halts */
  uint64_t nranges;
  struct ras_guest_range ranges[RAS_GUEST_MAX_RANGES];
  /* Tests only: a GPA the #MC handler reads before it clears MCIP (0: none), as a guest whose
   * handler touches a second lost frame: hardware shuts down, so must the VMM's injection. */
  uint64_t mc_touch;
  /* Tests only: a GPA (0: none) vCPU 0 probes once its #MC handler has recorded that frame lost:
   * a load, a store and a read-modify-write on it (entry.S probe_lost). */
  uint64_t probe;
  /* Written by the guest: the frames its #MC handler recorded as lost (for the VMM's report).
   * nlost counts every one; lost[] holds the first RAS_GUEST_MAX_LOST (nlost beyond it: the rest
   * did not fit and are not listed; the guest's own bitmap still has them). */
  volatile uint64_t nlost;
  volatile uint64_t lost[]; /* up to the mailboxes: RAS_GUEST_MAX_LOST slots */
};

/* The list's slots: what is left of the config block after the fixed fields. */
#define RAS_GUEST_MAX_LOST \
  ((RAS_GUEST_MAILBOX - RAS_GUEST_CONFIG - __builtin_offsetof(struct ras_guest_config, lost)) / sizeof(uint64_t))
#define RAS_GUEST_MAILBOX_OF(cpu, box) (RAS_GUEST_MAILBOX + (RAS_BOXES * (uint64_t)(cpu) + (box)) * sizeof(struct ras_guest_mailbox))
#define RAS_GUEST_MAILBOX_END RAS_GUEST_MAILBOX_OF(RAS_GUEST_MAX_CPUS, 0)

#ifdef __cplusplus
#define RAS_STATIC_ASSERT static_assert
#else
#define RAS_STATIC_ASSERT _Static_assert
#endif
RAS_STATIC_ASSERT(RAS_GUEST_CONFIG >= RAS_GUEST_TSS + 0x68 && RAS_GUEST_CONFIG % 4096 == 0, "config after the TSS");
RAS_STATIC_ASSERT(RAS_GUEST_MAX_LOST >= 1024, "the config block holds at least 1024 lost frames");
RAS_STATIC_ASSERT(RAS_GUEST_MAILBOX_END <= RAS_GUEST_IMAGE, "the mailboxes end before the guest image");
RAS_STATIC_ASSERT(RAS_GUEST_IMAGE + RAS_GUEST_IMAGE_MAX <= RAS_GUEST_STACKS, "the image ends before the stacks");
RAS_STATIC_ASSERT(RAS_GUEST_STACKS + RAS_GUEST_MAX_CPUS * RAS_GUEST_STACK_SIZE <= RAS_GUEST_SYSTEM_END, "stacks in the system area");

#define RAS_GUEST_MAGIC 0x524153564d475354ull /* "RASVMGST" */

/* The guest's #MC handler appends a lost frame to config.lost (any vCPU, so atomically). A frame
 * past the list's capacity is counted in nlost and not written: the block never runs into the
 * mailboxes. */
static inline void ras_guest_list_lost(struct ras_guest_config *cfg, uint64_t gpa) {
  uint64_t n = __atomic_fetch_add(&cfg->nlost, 1, __ATOMIC_SEQ_CST);
  if (n < RAS_GUEST_MAX_LOST) cfg->lost[n] = gpa | 1; /* bit 0: published */
}

/* The pattern: qword i of the frame at GPA g holds ras_frame_seed(g, seed) + i * RAS_PATTERN_STEP.
 * A zero, stale or misplaced frame never matches (the seed mixes in the GPA). */
#define RAS_PATTERN_STEP 0x9e3779b97f4a7c15ull
static inline uint64_t ras_frame_seed(uint64_t gpa, uint64_t seed) {
  uint64_t z = gpa ^ (seed * 0xbf58476d1ce4e5b9ull) ^ 0x94d049bb133111ebull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

#endif

/*
 * proto.h: what the reference VMM and its guest agree on. Included by the guest (freestanding C)
 * and by the VMM's native module. Every address here is guest-physical; the guest runs with an
 * identity map, so it uses them as pointers.
 *
 * Guest RAM layout of the first region (GPA 0, the VMM writes all of it before the vCPUs start):
 *   0x1000 PML4, 0x2000 PDPT, 0x3000..0x6fff four page directories (2 MiB pages, 0..4 GiB)
 *   0x8000 GDT (null, code64 0x08, data 0x10, TSS 0x18), 0x8100 TSS
 *   0x9000 struct ras_guest_config (the VMM's orders)
 *   0xa000 mailboxes, one struct ras_guest_mailbox per vCPU
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
#define RAS_GUEST_MAILBOX 0xa000ull
#define RAS_GUEST_IMAGE 0x10000ull
#define RAS_GUEST_IMAGE_MAX 0x70000ull
#define RAS_GUEST_STACKS 0x100000ull
#define RAS_GUEST_STACK_SIZE 0x10000ull
#define RAS_GUEST_SYSTEM_END 0x200000ull /* the first 2 MiB: code, tables, stacks */
#define RAS_GUEST_MAX_CPUS 16
#define RAS_GUEST_MAX_RANGES 16
#define RAS_GUEST_MAX_LOST 1024
#define RAS_GUEST_MAX_FRAMES (1u << 19) /* frames the guest can track: 2 GiB of data */
#define RAS_GUEST_MAPPED_END 0x100000000ull /* the identity map covers 0..4 GiB */

/* One port: the guest writes its mailbox, then `out RAS_PORT_REPORT, eax` with eax = cpu index. */
#define RAS_PORT_REPORT 0x510

enum ras_guest_event {
  RAS_EV_HELLO = 1,  /* a = MCG_CAP, b = CR4 after enabling MCE, c = banks enabled */
  RAS_EV_FILLED = 2, /* a = frames this vCPU filled */
  RAS_EV_PASS = 3,   /* a = pass number, b = frames verified (total), c = wrong bytes (total) */
  RAS_EV_MCE = 4,    /* a = MCi_ADDR, b = MCi_STATUS, c = MCG_STATUS, d = MCi_MISC, e = bank,
                        f = interrupted RIP, g = 1 if the verifier was interrupted (frame skipped) */
  RAS_EV_WRONG = 5,  /* a = GPA of the frame, b = wrong bytes in it, c = first wrong qword's value,
                        d = expected value */
  RAS_EV_FATAL = 6,  /* a = vector, b = RIP, c = error code, d = CR2: the vCPU stops */
  RAS_EV_BYE = 7     /* a = passes, b = frames verified, c = wrong bytes: stopped on config.stop */
};

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
  /* Written by the guest: the frames its #MC handler recorded as lost (for the VMM's report). */
  volatile uint64_t nlost;
  volatile uint64_t lost[RAS_GUEST_MAX_LOST];
};

#define RAS_GUEST_MAGIC 0x524153564d475354ull /* "RASVMGST" */

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

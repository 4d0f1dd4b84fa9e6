/*
 * hugetlb_ras.h: the engine's native API for a VMM's vCPU loop. No JavaScript is involved.
 *
 * A VMM's vCPU threads sit in ioctl(KVM_RUN). When the guest touches memory the engine recovered
 * or lost, the thread learns of it in one of three ways, depending on the kernel and the guard:
 *
 *   1. KVM_RUN returns -1/EINTR after a SIGBUS (BUS_MCEERR_AR/AO) reached the thread. The engine's
 *      SIGBUS handler already stalled the thread while the huge page was recovered; only SIGBUSes
 *      for lost 4 KiB frames are passed on to the handler the VMM installed before the engine,
 *      with the original siginfo and ucontext. Note si_addr there.
 *   2. KVM_RUN returns -1/EFAULT (a fault KVM could not resolve, no signal).
 *   3. KVM_RUN returns 0 with KVM_EXIT_MMIO whose phys_addr falls inside guest RAM.
 *
 * In each case the vCPU thread asks the engine what is at that address and acts on the answer:
 *
 *   struct hugetlb_ras_status st;
 *   api->check_gpa(gpa, HUGETLB_RAS_WAIT_MS_DEFAULT, &st);     (or check_hva after a SIGBUS)
 *   switch (st.state) {
 *   case HUGETLB_RAS_HEALTHY:    re-enter KVM_RUN (the fault was stale or has been recovered)
 *   case HUGETLB_RAS_RECOVERING: re-enter KVM_RUN, or call again (the wait timed out)
 *   case HUGETLB_RAS_LOST:       inject a machine check for st.gpa (4 KiB), AR, then KVM_RUN
 *   case HUGETLB_RAS_NOT_RAM:    not guest RAM of the engine: the VMM's own MMIO / error path
 *   }
 *
 * check_* never reports HEALTHY for memory it has not read: for an address the engine has no
 * record of, it reads one byte of that 4 KiB itself (a guarded probe); a probe that faults with
 * a memory error is a new report, which the engine recovers before answering. A loss is recorded
 * (journal, events) by the engine; the VMM only injects the machine check.
 *
 * After case 2 the VMM has no address: it calls next_lost() to learn which lost frames it has not
 * yet been told of, and injects a machine check for each (a VMM should also look at
 * kvm_run->memory_fault where KVM_CAP_MEMORY_FAULT_INFO provides a gpa).
 *
 * Thread safety: every function may be called from any thread, concurrently. None may be called
 * from a signal handler (check_* may block; a probe raises a signal itself).
 *
 * How to get the table: from JavaScript, `engine.nativeApi()` returns its address as a bigint
 * (pass it to the VMM's native module); from C, dlopen() the engine's hugetlb_ras.node and call
 * hugetlb_ras_get_api(). The table stays valid for the life of the process.
 */
#ifndef HUGETLB_RAS_H
#define HUGETLB_RAS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HUGETLB_RAS_API_VERSION 2
#define HUGETLB_RAS_WAIT_MS_DEFAULT 5000

enum hugetlb_ras_state {
  HUGETLB_RAS_NOT_RAM = 0,    /* not inside any region of a live engine */
  HUGETLB_RAS_HEALTHY = 1,    /* readable: re-enter KVM_RUN */
  HUGETLB_RAS_RECOVERING = 2, /* the huge page is being recovered: retry (the wait timed out) */
  HUGETLB_RAS_LOST = 3        /* this 4 KiB frame is lost: inject a machine check for gpa */
};

/* How a lost frame is kept inaccessible, i.e. what KVM does when the guest touches it again. */
enum hugetlb_ras_guard {
  HUGETLB_RAS_GUARD_NONE = 0,     /* not lost, or the whole huge page is lost (refused) */
  HUGETLB_RAS_GUARD_UFFD = 1,     /* userfaultfd poison marker: KVM raises BUS_MCEERR_AR, lsb 12 */
  HUGETLB_RAS_GUARD_HWPOISON = 2, /* MADV_HWPOISON: same SIGBUS as a hardware error */
  HUGETLB_RAS_GUARD_FAULT = 3     /* guard marker or PROT_NONE: KVM_RUN fails with EFAULT (or
                                     an MMIO exit): the VMM must ask check_gpa / next_lost */
};

struct hugetlb_ras_status {
  uint32_t state;          /* enum hugetlb_ras_state */
  uint32_t guard;          /* enum hugetlb_ras_guard, for a lost frame */
  uint32_t region_id;      /* the engine's region id (0 for NOT_RAM) */
  uint32_t whole_huge_page;/* 1: the whole huge page is lost (refused or recovery failed) */
  uint64_t gpa;            /* guest-physical address of the 4 KiB frame (4 KiB aligned) */
  uint64_t hva;            /* host address of the 4 KiB frame (4 KiB aligned) */
  uint64_t huge_page_gpa;  /* the huge page holding it */
  uint64_t huge_page_size;
  int32_t code;            /* BUS_MCEERR_AR (4) or BUS_MCEERR_AO (5): how the loss was found */
  int32_t reserved;
};

/* One loss from next_lost(): a 4 KiB frame, or a whole huge page the engine could not recover
 * (refused: shared memory, an old kernel; size is then the huge page size). */
struct hugetlb_ras_lost {
  uint64_t gpa;            /* 4 KiB (or huge page) aligned */
  uint64_t hva;
  uint64_t size;           /* 4096, or the huge page size */
  uint32_t region_id;
  int32_t code;            /* BUS_MCEERR_AR / BUS_MCEERR_AO: how the engine learnt of it */
};

struct hugetlb_ras_api {
  uint32_t version;        /* HUGETLB_RAS_API_VERSION */
  uint32_t size;           /* sizeof(struct hugetlb_ras_api) of the engine */
  /* What is at this host / guest-physical address. Blocks up to timeout_ms while the huge page is
   * recovered. Returns 0, or -EINVAL for a null `out`. */
  int (*check_hva)(uint64_t hva, int timeout_ms, struct hugetlb_ras_status* out);
  int (*check_gpa)(uint64_t gpa, int timeout_ms, struct hugetlb_ras_status* out);
  /* Lost frames in the order the engine found them. *cursor starts at 0 and is advanced past the
   * frames returned; returns how many were written to out (at most max). The engine keeps every
   * lost frame, so each consumer (one per VMM, or one per vCPU) keeps its own cursor. */
  int (*next_lost)(uint64_t* cursor, struct hugetlb_ras_lost* out, int max);
  /* Version 2 (check `size` >= offsetof the member before calling it).
   * Copy guest memory [gpa, gpa + len) out of (copy_from_guest) or into (copy_to_guest) the VMM's
   * buffer without ever faulting, from any thread (a VMM's I/O, migration or device threads; not a
   * signal handler). `lost_bitmap` (caller-zeroed) has one bit per 4 KiB frame of the range, frame
   * 0 the one holding `gpa`, bit i in word i / 64 (bit i % 64): the engine sets the bit of each
   * lost frame (a lost 4 KiB frame, or every frame of a whole lost huge page), which reads as
   * zeros (from) or is not written (to); every other byte is copied. A huge page under recovery
   * is waited for, at most timeout_ms for the whole call (0: not at all; negative is 0). Returns:
   *   0           copied (bits set for the lost frames);
   *   -ETIMEDOUT  a huge page of the range was still being recovered (or the engine paused) at the
   *               deadline: frames before it are copied (their bits set), the rest are not; call again;
   *   -EINVAL     a null pointer (dst / src with len > 0, lost_bitmap), or a range not inside one
   *               region of a live engine (nothing copied);
   *   -EFAULT     a fault that is not a memory error (e.g. the backing file truncated): the VMM's
   *               own error path.
   * A poison found by the copy itself is recovered like any other before the copy goes on. */
  int (*copy_from_guest)(uint64_t gpa, void* dst, uint64_t len, uint64_t* lost_bitmap, int timeout_ms);
  int (*copy_to_guest)(uint64_t gpa, const void* src, uint64_t len, uint64_t* lost_bitmap, int timeout_ms);
};

/* Exported with default visibility from hugetlb_ras.node. */
const struct hugetlb_ras_api* hugetlb_ras_get_api(void);

#ifdef __cplusplus
}
#endif

#endif /* HUGETLB_RAS_H */

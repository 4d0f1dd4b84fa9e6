// ram_exit: the exits that name a guest-RAM address, handled alike by both machines (bare-metal
// and Linux): KVM_EXIT_MEMORY_FAULT after an EFAULT, and an MMIO exit inside RAM. KVM exits
// with MMIO for a GPA it has no usable mapping for; inside a slot that is a question to the engine:
// healthy RAM is completed with the RAM's own bytes (through the guarded copy), a lost frame
// becomes a machine check: a read is rewound (RewindMmioRead) and gets an AR on the instruction
// that touched the frame; a write, which KVM has already retired, is dropped and told by an AO,
// once. Outside every slot there is no device: reads see all ones.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "kvm_vm.h"
#include "mce_delivery.h"
#include "vcpu_thread.h"

namespace ras_vmm {

// What both machines answer for their vCPU i (vcpu_memory.cc, linux_memory.cc).
class GuestMemoryOwner {
 public:
  virtual ~GuestMemoryOwner() = default;
  // Asks the engine until it has an answer that is not RECOVERING; false when there is none
  // (stop requested, still recovering after wait_ms: the access re-faults).
  virtual bool Check(int i, int path, bool by_hva, uint64_t addr, hugetlb_ras_status* st) = 0;
  // A machine check for the frame this vCPU's access named (AR) or one it did not (AO).
  virtual void Lost(int i, uint64_t gpa, bool ar, int path, int code, int whole) = 0;
  virtual void Fatal(int i, int state, const std::string& why) = 0;
};

// One exit on vCPU i of `owner`, on that vCPU's thread.
struct MmioExit {
  // S: either machine's stats (mmio_outside, mmio_in_ram, mmio_rewound counted there).
  template <class S>
  MmioExit(GuestMemoryOwner* o, int vcpu, int fatal, const Vm& v, const Vcpu& c, int slot, S& s)
      : owner(o), i(vcpu), fatal_state(fatal), vm(&v), vcpu_fd(c.fd), run(c.run), sigbus_slot(slot),
        outside(&s.mmio_outside), in_ram(&s.mmio_in_ram), rewound(&s.mmio_rewound) {}
  GuestMemoryOwner* owner;
  int i;
  int fatal_state;  // the machine's run state for a vCPU that cannot go on
  const Vm* vm;
  int vcpu_fd;
  kvm_run* run;
  int sigbus_slot;
  std::atomic<uint64_t>* outside;
  std::atomic<uint64_t>* in_ram;
  std::atomic<uint64_t>* rewound;
};

// api and wait_ms: the machine's engine table and wait; mce: its delivery (an AO once per frame).
void OnMmioExit(const MmioExit& x, const hugetlb_ras_api* api, int wait_ms, Delivery* mce);

// After KVM_RUN failed with EFAULT on vCPU i: when KVM named the GPA (KVM_EXIT_MEMORY_FAULT), the
// engine's answer for it. True when that settled the exit (an AR for the named lost frame, a
// healthy frame, or no answer yet: re-enter); false when no address came with it or the engine
// calls it not-RAM (the caller then asks next_lost).
bool SettleMemoryFault(GuestMemoryOwner* owner, int i, kvm_run* run);

}  // namespace ras_vmm

// slot_hole: takes a lost 4 KiB frame out of KVM's memory slots (KVM_SET_USER_MEMORY_REGION: the
// slot holding it is deleted and put back as the pieces below and above the frame), as a VMM does
// that will not let KVM map a poisoned page again. KVM then has no memory behind that GPA: every
// guest access to it is an MMIO exit, which the VMM answers from its own RAM map (Vm::slots, left
// as it was) and the engine: a read rewound and its AR, a write dropped and an AO (ram_exit.h).
// While a slot is being replaced, accesses to its other frames are MMIO exits too: healthy RAM,
// completed through the guarded copy. A slot holding the guest's code or page tables must not be
// split (an instruction fetch cannot be emulated from MMIO): only data slots.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "kvm_vm.h"

namespace ras_vmm {

class SlotHoles {
 public:
  // Punches the frame at gpa (4 KiB aligned) out of KVM's slots. Returns 0 (done, or already out),
  // or an errno with *why. Any thread; serialised.
  int Punch(Vm* vm, uint64_t gpa, std::string* why);
  uint64_t punched() const { return punched_; }

 private:
  struct Piece {
    uint32_t id;
    uint64_t gpa, size;
    uint8_t* hva;
  };
  std::mutex mu_;
  std::vector<Piece> pieces_;  // KVM's slots as they are now (built from vm->slots at the first punch)
  uint32_t next_id_ = 0;
  uint64_t punched_ = 0;
};

}  // namespace ras_vmm

// mce: machine checks for the guest, with the bits QEMU's kvm_mce_inject (target/i386/kvm/kvm.c)
// uses, Intel or AMD by the CPUID vendor, through KVM_X86_SETUP_MCE / KVM_X86_SET_MCE.
// Inject only on the vCPU's own thread, between KVM_RUN calls.
#pragma once

#include <cstdint>

#include "kvm_vm.h"

namespace ras_vmm::mce {

constexpr int kBank = 9;   // QEMU's bank for memory errors
constexpr int kBanks = 10;

constexpr uint64_t MCG_CTL_P = 1ull << 8;
constexpr uint64_t MCG_SER_P = 1ull << 24;
constexpr uint64_t MCG_STATUS_RIPV = 1ull << 0;
constexpr uint64_t MCG_STATUS_EIPV = 1ull << 1;
constexpr uint64_t MCG_STATUS_MCIP = 1ull << 2;
constexpr uint64_t MCI_STATUS_VAL = 1ull << 63;
constexpr uint64_t MCI_STATUS_UC = 1ull << 61;
constexpr uint64_t MCI_STATUS_EN = 1ull << 60;
constexpr uint64_t MCI_STATUS_MISCV = 1ull << 59;
constexpr uint64_t MCI_STATUS_ADDRV = 1ull << 58;
constexpr uint64_t MCI_STATUS_S = 1ull << 56;
constexpr uint64_t MCI_STATUS_AR = 1ull << 55;
constexpr uint64_t MCI_STATUS_DEFERRED = 1ull << 44;  // AMD
constexpr uint64_t MCI_STATUS_POISON = 1ull << 43;    // AMD
constexpr uint64_t MCACOD_MEM_AR = 0x134;             // Intel: data load, memory error
constexpr uint64_t MCACOD_MEM_AO = 0xc0;              // Intel: memory scrubbing
constexpr uint64_t MCM_ADDR_PHYS = 2;

struct Bits {
  uint64_t mcg_status, status, misc;
};

// What QEMU would inject for a 4 KiB memory error: action-required (the guest consumed it) or
// action-optional (found asynchronously).
Bits For(bool amd, bool action_required);

// KVM's MCE capability: banks and MCG_CAP bits, kept in vm->mcg_cap.
bool Capability(Vm* vm);
// KVM_X86_SETUP_MCE with vm->mcg_cap on one vCPU.
bool Setup(Vm* vm, int vcpu_fd);
// True when the guest is still handling the previous machine check (MCG_STATUS.MCIP): KVM would
// turn another uncorrected one into a triple fault, so the caller waits for the next exit.
bool InProgress(int vcpu_fd);
// KVM_X86_SET_MCE for the frame at gpa. Returns 0 or an errno.
int Inject(int vcpu_fd, bool amd, uint64_t gpa, bool action_required, Bits* used);

}  // namespace ras_vmm::mce

// vcpu_state: a vCPU's and a VM's KVM state as Firecracker's snapshot saves it, for a migration
// stream or a snapshot file: registers, special registers, FPU/XSAVE, XCRs, MSRs (every one
// KVM_GET_MSR_INDEX_LIST names plus the machine-check MSRs MCG_STATUS, MCG_CTL, MCG_EXT_CTL and
// every bank's MCi_CTL/STATUS/ADDR/MISC), the local APIC (with an in-kernel irqchip), vCPU
// events, debug registers and the MP state; for the VM: the KVM clock, and the PIC, IOAPIC and
// PIT when the VM has them. The bytes are a list of records [u32 tag][u32 length][payload], so
// a reader skips what it does not know and says what is missing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvm_vm.h"

namespace ras_vmm::state {

enum Tag : uint32_t {
  kRegs = 1, kSregs = 2, kFpu = 3, kXsave = 4, kXcrs = 5, kMsrs = 6, kLapic = 7, kEvents = 8,
  kDebugRegs = 9, kMpState = 10,
  kClock = 32, kPicMaster = 33, kPicSlave = 34, kIoapic = 35, kPit = 36,
  // Userspace device state a VMM appends to the VM's records (the Linux mode: linux_vm.cc).
  kSerial = 64, kControl = 65, kInjectedFrames = 66,
};

// One record [u32 tag][u32 length][payload] appended to out.
void PutRecord(std::vector<uint8_t>* out, uint32_t tag, const void* p, size_t n);
// The first record with this tag: false when there is none or the records are truncated.
bool FindRecord(const uint8_t* data, size_t len, uint32_t tag, const uint8_t** p, uint32_t* n);

// The vCPU must be out of KVM_RUN (its thread joined) and its pending I/O completed (Complete).
bool SaveVcpu(const Vm& vm, int vcpu_fd, bool irqchip, std::vector<uint8_t>* out, std::string* err);
// On a vCPU created with CPUID and KVM_X86_SETUP_MCE already set (CreateVcpu without booting).
// Records are put back in QEMU's order (kvm_arch_put_registers). *msr_failed gets the MSRs KVM
// refused to take (an MCE MSR among them is an error).
bool RestoreVcpu(const Vm& vm, int vcpu_fd, bool irqchip, const uint8_t* data, size_t len, std::vector<uint32_t>* msr_failed,
                 std::string* err);
bool SaveVm(const Vm& vm, bool irqchip, bool pit, std::vector<uint8_t>* out, std::string* err);
bool RestoreVm(const Vm& vm, const uint8_t* data, size_t len, std::string* err);
// A KVM_RUN with immediate_exit set: completes an I/O or MMIO exit the vCPU thread handled but did
// not re-enter for (KVM's api.rst: state is consistent only after that re-entry).
bool Complete(int vcpu_fd, kvm_run* run, std::string* err);
// The machine-check MSRs of a VM with this MCG_CAP (what SaveVcpu adds to KVM's list).
std::vector<uint32_t> MceMsrs(uint64_t mcg_cap);

}  // namespace ras_vmm::state

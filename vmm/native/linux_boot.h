// linux_boot: Linux's x86 32-bit boot protocol (Documentation/arch/x86/boot.rst) for the reference
// VMM: a bzImage's protected-mode kernel at 1 MiB, the zero page (boot_params with the image's
// setup header, an e820 map built from the VM's memory slots), the command line, an initrd high
// in the first slot, and a vCPU either in flat 32-bit protected mode at code32_start, or in long mode
// (identity-mapped 0-4 GiB, 2 MiB pages) at the 64-bit entry, with ESI/RSI = zero page.
// Also the VM-wide pieces such a kernel needs: TSS address, in-kernel irqchip and PIT, the CPUID
// a Linux guest wants (hypervisor bit and TSC deadline for kvm-clock, MCE/MCA, no XSAVE/PKU).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvm_vm.h"

namespace ras_vmm::linux_boot {

struct Image {
  std::vector<uint8_t> kernel;  // bzImage
  std::vector<uint8_t> initrd;  // cpio (may be empty)
  std::string cmdline;
  // The 64-bit entry (startup_64, load address + 0x200, long mode with an identity map) instead
  // of the 32-bit one (code32_start, flat protected mode).
  bool entry64 = true;
};

struct Loaded {
  uint16_t protocol = 0;
  bool entry64 = false;
  uint64_t entry = 0;  // code32_start, or the 64-bit entry
  uint64_t zero_page = 0;
  uint64_t kernel_gpa = 0, kernel_size = 0;
  uint64_t initrd_gpa = 0, initrd_size = 0;
  std::vector<std::pair<uint64_t, uint64_t>> e820_ram;  // what the guest was told is RAM
};

// KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR, KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2 (before any vCPU),
// and the Linux guest's CPUID adjustments in vm->cpuid.
bool SetupVm(Vm* vm);
// Writes the kernel, zero page, command line and initrd into the slots (the first slot must start
// at GPA 0 and hold them).
bool Load(Vm* vm, const Image& img, Loaded* out);
// A vCPU (index 0) at the kernel's 32-bit entry: CPUID, MCE banks, sregs, regs.
bool CreateBootVcpu(Vm* vm, const Loaded& l, Vcpu* v);
// An application processor (index >= 1): CPUID with its APIC id and MCE banks; no registers: with
// the in-kernel LAPIC it waits in KVM_RUN for the guest's INIT/SIPI.
bool CreateApVcpu(Vm* vm, int index, Vcpu* v);
// The MP table for `vcpus` CPUs at linux_mptable.h's kMpTableGpa (in the first slot).
bool WriteMpTable(Vm* vm, int vcpus);

}  // namespace ras_vmm::linux_boot

// kvm_vm: the KVM side of the reference VMM that is not the vCPU loop: the VM, its memory slots
// (one per engine region, at the region's guestPhysAddr), the guest's CPUID, long mode (page
// tables, GDT and TSS in guest RAM, CR0/CR4/EFER), and one vCPU's fd and kvm_run.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ras_vmm {

// Debian 12's uapi headers declare kvm_cpuid2's and kvm_msrs' flexible arrays with
// __DECLARE_FLEX_ARRAY, which C++ lays out 4 bytes longer (entries at offset 12, ioctl numbers
// encoding size 12): the kernel then answers EINVAL. Fixed-size layouts and C's ioctl numbers.
constexpr int kMaxCpuid = 256;
struct CpuidBuf {
  uint32_t nent, padding;
  kvm_cpuid_entry2 entries[kMaxCpuid];
};
struct MsrBuf {
  uint32_t nmsrs, pad;
  kvm_msr_entry entries[1];
};
constexpr unsigned long kIoctlGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
constexpr unsigned long kIoctlSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);
constexpr unsigned long kIoctlGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, 8);
constexpr unsigned long kIoctlSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, 8);

struct Slot {
  uint64_t gpa, size;
  uint8_t* hva;
};

struct Vm {
  int kvm = -1;
  int fd = -1;
  int run_size = 0;
  bool amd = false;
  std::vector<Slot> slots;
  std::vector<kvm_cpuid_entry2> cpuid;  // the guest's CPUID, from KVM_GET_SUPPORTED_CPUID
  uint64_t mcg_cap = 0;                 // what KVM_X86_SETUP_MCE gets
  bool lmce = true;                     // Intel: offer LMCE where KVM can (QEMU's lmce=on)
  std::string error;                    // the last failure, with the ioctl and errno
};

struct Vcpu {
  int index = 0;
  int fd = -1;
  kvm_run* run = nullptr;
};

bool OpenVm(Vm* vm);
bool AddSlot(Vm* vm, uint64_t gpa, uint64_t size, uint8_t* hva);
// The slot holding [gpa, gpa+len), or nullptr: "is this guest RAM".
const Slot* SlotOf(const Vm& vm, uint64_t gpa, uint64_t len = 1);
// Page tables, GDT, TSS and the guest image in the first slot (it must start at GPA 0).
bool WriteSystemArea(Vm* vm, const uint8_t* image, size_t image_len);
// A vCPU in 64-bit mode at the image's entry: CPUID first (KVM refuses long mode sregs before it
// on 6.12), then MCE, sregs, regs. boot false (a migration destination): CPUID and MCE only, the
// registers come from the stream.
bool CreateVcpu(Vm* vm, int index, Vcpu* out, bool boot = true);
void CloseVcpu(Vm* vm, Vcpu* v);
void CloseVm(Vm* vm);

}  // namespace ras_vmm

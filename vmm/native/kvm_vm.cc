#include "kvm_vm.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>

#include "mce.h"
#include "proto.h"

namespace ras_vmm {

namespace {

bool Fail(Vm* vm, const char* what) {
  vm->error = std::string(what) + ": " + strerror(errno);
  return false;
}

constexpr uint32_t kCpuidLeafFeatures = 1;
constexpr uint32_t kCpuidEdxMce = 1u << 7;
constexpr uint32_t kCpuidEdxMca = 1u << 14;
constexpr uint32_t kCpuidLeafRas = 0x80000007;
constexpr uint32_t kCpuidEbxOverflowRecov = 1u << 0;  // AMD: MCA overflow recovery
constexpr uint32_t kCpuidEbxSuccor = 1u << 1;          // AMD: software uncorrectable error containment

bool LoadCpuid(Vm* vm) {
  auto c = std::make_unique<CpuidBuf>();
  c->nent = kMaxCpuid - 1;  // room for the leaf added below
  if (ioctl(vm->kvm, kIoctlGetSupportedCpuid, c.get()) != 0) return Fail(vm, "KVM_GET_SUPPORTED_CPUID");
  vm->cpuid.assign(c->entries, c->entries + c->nent);
  bool has_ras_leaf = false;
  for (auto& e : vm->cpuid) {
    if (e.function == 0) vm->amd = e.ebx == 0x68747541 && e.edx == 0x69746e65 && e.ecx == 0x444d4163;  // AuthenticAMD
    if (e.function == kCpuidLeafFeatures) e.edx |= kCpuidEdxMce | kCpuidEdxMca;
    if (e.function == kCpuidLeafRas) has_ras_leaf = true;
  }
  // An AMD guest looks for SUCCOR before it trusts MCi_ADDR (Linux panics without it); KVM
  // reports the leaf as 0.
  if (vm->amd) {
    if (!has_ras_leaf) {
      kvm_cpuid_entry2 e = {};
      e.function = kCpuidLeafRas;
      vm->cpuid.push_back(e);
    }
    for (auto& e : vm->cpuid)
      if (e.function == kCpuidLeafRas) e.ebx |= kCpuidEbxOverflowRecov | kCpuidEbxSuccor;
  }
  return true;
}

bool SetCpuid(Vm* vm, Vcpu* v) {
  auto c = std::make_unique<CpuidBuf>();
  c->nent = static_cast<uint32_t>(vm->cpuid.size());
  memcpy(c->entries, vm->cpuid.data(), vm->cpuid.size() * sizeof(kvm_cpuid_entry2));
  for (uint32_t i = 0; i < c->nent; i++) {
    kvm_cpuid_entry2& e = c->entries[i];
    if (e.function == kCpuidLeafFeatures) e.ebx = (e.ebx & 0x00ffffff) | (static_cast<uint32_t>(v->index) << 24);  // APIC id
    if (e.function == 0xb || e.function == 0x1f) e.edx = static_cast<uint32_t>(v->index);  // x2APIC id
  }
  if (ioctl(v->fd, kIoctlSetCpuid2, c.get()) != 0) return Fail(vm, "KVM_SET_CPUID2");
  return true;
}

void Segment(kvm_segment* s, uint16_t sel, uint8_t type, bool code) {
  *s = {};
  s->base = 0;
  s->limit = 0xffffffff;
  s->selector = sel;
  s->type = type;
  s->present = 1;
  s->s = 1;
  s->g = 1;
  s->l = code ? 1 : 0;
  s->db = code ? 0 : 1;
}

bool SetLongMode(Vm* vm, Vcpu* v) {
  kvm_sregs sr;
  if (ioctl(v->fd, KVM_GET_SREGS, &sr) != 0) return Fail(vm, "KVM_GET_SREGS");
  Segment(&sr.cs, 0x08, 11, true);
  Segment(&sr.ds, 0x10, 3, false);
  sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
  sr.tr = {};
  sr.tr.base = RAS_GUEST_TSS;
  sr.tr.limit = 0x67;
  sr.tr.selector = 0x18;
  sr.tr.type = 11;  // busy 64-bit TSS
  sr.tr.present = 1;
  sr.ldt = {};
  sr.ldt.type = 2;
  sr.ldt.present = 1;
  sr.ldt.limit = 0xffff;
  sr.gdt.base = RAS_GUEST_GDT;
  sr.gdt.limit = 5 * 8 - 1;
  sr.idt.base = 0;
  sr.idt.limit = 0;
  sr.cr0 = 0x80050033;  // PG | AM | WP | NE | ET | MP | PE
  sr.cr3 = RAS_GUEST_PML4;
  sr.cr4 = 0x620;  // PAE | OSFXSR | OSXMMEXCPT; the guest sets MCE itself
  sr.efer = 0x500; // LME | LMA
  if (ioctl(v->fd, KVM_SET_SREGS, &sr) != 0) return Fail(vm, "KVM_SET_SREGS (long mode)");
  kvm_regs r = {};
  r.rip = RAS_GUEST_IMAGE;
  r.rsp = RAS_GUEST_STACKS + (static_cast<uint64_t>(v->index) + 1) * RAS_GUEST_STACK_SIZE;
  r.rdi = static_cast<uint64_t>(v->index);
  r.rflags = 2;
  if (ioctl(v->fd, KVM_SET_REGS, &r) != 0) return Fail(vm, "KVM_SET_REGS");
  return true;
}

}  // namespace

bool OpenVm(Vm* vm) {
  vm->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (vm->kvm < 0) return Fail(vm, "open /dev/kvm");
  if (ioctl(vm->kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) return Fail(vm, "KVM_GET_API_VERSION");
  vm->fd = ioctl(vm->kvm, KVM_CREATE_VM, 0);
  if (vm->fd < 0) return Fail(vm, "KVM_CREATE_VM");
  vm->run_size = ioctl(vm->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (vm->run_size <= 0) return Fail(vm, "KVM_GET_VCPU_MMAP_SIZE");
  if (!LoadCpuid(vm)) return false;
  if (!mce::Capability(vm)) return false;
  return true;
}

bool AddSlot(Vm* vm, uint64_t gpa, uint64_t size, uint8_t* hva) {
  kvm_userspace_memory_region m = {};
  m.slot = static_cast<uint32_t>(vm->slots.size());
  m.guest_phys_addr = gpa;
  m.memory_size = size;
  m.userspace_addr = reinterpret_cast<uint64_t>(hva);
  if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &m) != 0) return Fail(vm, "KVM_SET_USER_MEMORY_REGION");
  vm->slots.push_back({gpa, size, hva});
  return true;
}

const Slot* SlotOf(const Vm& vm, uint64_t gpa, uint64_t len) {
  for (const Slot& s : vm.slots)
    if (gpa >= s.gpa && gpa - s.gpa < s.size && len <= s.size - (gpa - s.gpa)) return &s;
  return nullptr;
}

bool WriteSystemArea(Vm* vm, const uint8_t* image, size_t image_len) {
  const Slot* s = SlotOf(*vm, 0, RAS_GUEST_SYSTEM_END);
  if (!s || s->gpa != 0) {
    vm->error = "the first region must start at guest-physical 0 and hold at least 2 MiB";
    return false;
  }
  if (image_len > RAS_GUEST_IMAGE_MAX) {
    vm->error = "guest image too large";
    return false;
  }
  uint8_t* m = s->hva;
  memset(m, 0, RAS_GUEST_SYSTEM_END);
  auto* pml4 = reinterpret_cast<uint64_t*>(m + RAS_GUEST_PML4);
  auto* pdpt = reinterpret_cast<uint64_t*>(m + RAS_GUEST_PDPT);
  auto* pd = reinterpret_cast<uint64_t*>(m + RAS_GUEST_PD);
  pml4[0] = RAS_GUEST_PDPT | 3;
  for (int i = 0; i < 4; i++) pdpt[i] = (RAS_GUEST_PD + i * 0x1000ull) | 3;
  for (uint64_t j = 0; j < 4 * 512; j++) pd[j] = (j << 21) | 0x83;  // present, writable, 2 MiB
  auto* gdt = reinterpret_cast<uint64_t*>(m + RAS_GUEST_GDT);
  gdt[0] = 0;
  gdt[1] = 0x00af9b000000ffffull;  // 0x08: 64-bit code
  gdt[2] = 0x00cf93000000ffffull;  // 0x10: data
  uint64_t tss = RAS_GUEST_TSS;
  gdt[3] = 0x67 | ((tss & 0xffffff) << 16) | (0x89ull << 40) | (((tss >> 24) & 0xff) << 56);  // 0x18: TSS
  gdt[4] = tss >> 32;
  memcpy(m + RAS_GUEST_IMAGE, image, image_len);
  return true;
}

bool CreateVcpu(Vm* vm, int index, Vcpu* v, bool boot) {
  v->index = index;
  v->fd = ioctl(vm->fd, KVM_CREATE_VCPU, index);
  if (v->fd < 0) return Fail(vm, "KVM_CREATE_VCPU");
  void* run = mmap(nullptr, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
  if (run == MAP_FAILED) return Fail(vm, "mmap kvm_run");
  v->run = static_cast<kvm_run*>(run);
  if (!SetCpuid(vm, v)) return false;
  if (!mce::Setup(vm, v->fd)) return false;
  return boot ? SetLongMode(vm, v) : true;
}

void CloseVcpu(Vm* vm, Vcpu* v) {
  if (v->run) munmap(v->run, vm->run_size);
  if (v->fd >= 0) close(v->fd);
  v->run = nullptr;
  v->fd = -1;
}

void CloseVm(Vm* vm) {
  if (vm->fd >= 0) close(vm->fd);
  if (vm->kvm >= 0) close(vm->kvm);
  vm->fd = vm->kvm = -1;
}

}  // namespace ras_vmm

#include "linux_boot.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <memory>

#include "linux_mptable.h"
#include "mce.h"

namespace ras_vmm::linux_boot {

namespace {

bool Fail(Vm* vm, const std::string& what, bool with_errno = true) {
  vm->error = with_errno ? what + ": " + strerror(errno) : what;
  return false;
}

// Guest-physical layout below 1 MiB (the kernel reserves the first MiB for itself).
constexpr uint64_t kGdt = 0x500;
constexpr uint64_t kZeroPage = 0x7000;
constexpr uint64_t kCmdline = 0x20000;
constexpr uint64_t kCmdlineMax = 0x10000;
constexpr uint64_t kKernel = 0x100000;
constexpr uint64_t kPml4 = 0x9000, kPdpt = 0xa000, kPd = 0xb000;  // 0xb000-0xefff: 4 page directories
constexpr uint64_t kTssAddr = 0xfffbd000;     // 3 pages KVM (VMX) needs below 4 GiB, outside RAM
constexpr uint64_t kIdentityMap = 0xfffbc000;  // one page, VMX real-mode identity map

// boot_params / setup header offsets (arch/x86/include/uapi/asm/bootparam.h).
constexpr size_t kE820Entries = 0x1e8;
constexpr size_t kSetupSects = 0x1f1;
constexpr size_t kVidMode = 0x1fa;
constexpr size_t kJump = 0x200;
constexpr size_t kHeaderMagic = 0x202;
constexpr size_t kVersion = 0x206;
constexpr size_t kTypeOfLoader = 0x210;
constexpr size_t kLoadflags = 0x211;
constexpr size_t kCode32Start = 0x214;
constexpr size_t kRamdiskImage = 0x218;
constexpr size_t kRamdiskSize = 0x21c;
constexpr size_t kHeapEndPtr = 0x224;
constexpr size_t kCmdLinePtr = 0x228;
constexpr size_t kInitrdAddrMax = 0x22c;
constexpr size_t kXloadflags = 0x236;
constexpr size_t kCmdlineSize = 0x238;
constexpr size_t kInitSize = 0x260;
constexpr size_t kE820Table = 0x2d0;
constexpr int kE820Max = 128;
constexpr uint8_t kLoadedHigh = 0x01, kCanUseHeap = 0x80;
constexpr uint32_t kE820Ram = 1, kE820Reserved = 2;

template <typename T>
T Get(const uint8_t* p, size_t off) {
  T v;
  memcpy(&v, p + off, sizeof v);
  return v;
}
template <typename T>
void Put(uint8_t* p, size_t off, T v) {
  memcpy(p + off, &v, sizeof v);
}

uint8_t* Hva(Vm* vm, uint64_t gpa, uint64_t len) {
  const Slot* s = SlotOf(*vm, gpa, len);
  return s ? s->hva + (gpa - s->gpa) : nullptr;
}

// CPUID leaf 1 / leaf 7 bits.
constexpr uint32_t kEcxTscDeadline = 1u << 24, kEcxXsave = 1u << 26, kEcxOsxsave = 1u << 27, kEcxHypervisor = 1u << 31;
constexpr uint32_t kLeaf7EcxPku = 1u << 3, kLeaf7EcxOspke = 1u << 4;

void Segment(kvm_segment* s, uint16_t sel, uint8_t type) {
  *s = {};
  s->base = 0;
  s->limit = 0xffffffff;
  s->selector = sel;
  s->type = type;
  s->present = 1;
  s->s = 1;
  s->db = 1;
  s->g = 1;
}

}  // namespace

bool SetupVm(Vm* vm) {
  if (ioctl(vm->fd, KVM_SET_TSS_ADDR, static_cast<unsigned long>(kTssAddr)) != 0) return Fail(vm, "KVM_SET_TSS_ADDR");
  uint64_t idmap = kIdentityMap;
  if (ioctl(vm->kvm, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0 &&
      ioctl(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) != 0)
    return Fail(vm, "KVM_SET_IDENTITY_MAP_ADDR");
  if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) != 0) return Fail(vm, "KVM_CREATE_IRQCHIP");
  kvm_pit_config pit = {};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  if (ioctl(vm->fd, KVM_CREATE_PIT2, &pit) != 0) return Fail(vm, "KVM_CREATE_PIT2");
  for (auto& e : vm->cpuid) {
    if (e.function == 1) {
      // kvm-clock needs the hypervisor bit; the in-kernel LAPIC emulates the TSC deadline timer
      // (KVM does not report it as supported: every VMM sets it). Without them the guest hung
      // after "Unable to calibrate against PIT". XSAVE off: the xstate layout nested KVM passes
      // on makes the guest WARN at boot.
      e.ecx |= kEcxHypervisor | kEcxTscDeadline;
      e.ecx &= ~(kEcxXsave | kEcxOsxsave);
    }
    if (e.function == 7 && e.index == 0) e.ecx &= ~(kLeaf7EcxPku | kLeaf7EcxOspke);
  }
  return true;
}

bool Load(Vm* vm, const Image& img, Loaded* out) {
  const std::vector<uint8_t>& k = img.kernel;
  if (k.size() < 0x1000 || Get<uint32_t>(k.data(), kHeaderMagic) != 0x53726448)  // "HdrS"
    return Fail(vm, "not a bzImage (no HdrS setup header)", false);
  uint16_t version = Get<uint16_t>(k.data(), kVersion);
  if (version < 0x20a) return Fail(vm, "boot protocol older than 2.10", false);
  if (!(k[kLoadflags] & kLoadedHigh)) return Fail(vm, "not a bzImage (zImage loads low)", false);
  unsigned setup_sects = k[kSetupSects] ? k[kSetupSects] : 4;
  size_t setup_size = (setup_sects + 1) * 512ul;
  if (setup_size >= k.size()) return Fail(vm, "bzImage truncated", false);
  size_t pm_size = k.size() - setup_size;

  const Slot* low = SlotOf(*vm, 0, kKernel + pm_size);
  if (!low || low->gpa != 0) return Fail(vm, "the first region must start at GPA 0 and hold the kernel", false);
  uint32_t init_size = Get<uint32_t>(k.data(), kInitSize);
  // The decompressor runs at 16 MiB (LOAD_PHYSICAL_ADDR) and needs init_size from there.
  if (low->size < 0x1000000ull + init_size + img.initrd.size() + (2 << 20))
    return Fail(vm, "the first region is too small for this kernel (16 MiB + init_size + initrd)", false);

  // The kernel proper.
  memcpy(low->hva + kKernel, k.data() + setup_size, pm_size);

  // The zero page: the image's setup header, then what the loader fills in.
  uint8_t* zp = low->hva + kZeroPage;
  memset(zp, 0, 4096);
  size_t hdr_end = 0x202 + k[kJump + 1];
  memcpy(zp + kSetupSects, k.data() + kSetupSects, hdr_end - kSetupSects);
  Put<uint16_t>(zp, kVidMode, 0xffff);  // "normal"
  zp[kTypeOfLoader] = 0xff;              // undefined boot loader
  zp[kLoadflags] = static_cast<uint8_t>(zp[kLoadflags] | kCanUseHeap);
  Put<uint16_t>(zp, kHeapEndPtr, 0xfe00);

  // Command line.
  uint32_t cmax = Get<uint32_t>(k.data(), kCmdlineSize);
  if (img.cmdline.size() + 1 > std::min<uint64_t>(cmax ? cmax : 255, kCmdlineMax))
    return Fail(vm, "kernel command line too long", false);
  memset(low->hva + kCmdline, 0, img.cmdline.size() + 1);
  memcpy(low->hva + kCmdline, img.cmdline.data(), img.cmdline.size());
  Put<uint32_t>(zp, kCmdLinePtr, static_cast<uint32_t>(kCmdline));

  // Initrd: high in the first slot, below initrd_addr_max, 2 MiB aligned.
  uint64_t initrd_gpa = 0;
  if (!img.initrd.empty()) {
    uint64_t top = std::min<uint64_t>(low->size, static_cast<uint64_t>(Get<uint32_t>(k.data(), kInitrdAddrMax)) + 1);
    initrd_gpa = (top - img.initrd.size()) & ~((2ull << 20) - 1);
    if (initrd_gpa < 0x1000000ull + init_size) return Fail(vm, "no room for the initrd above the kernel", false);
    memcpy(low->hva + initrd_gpa, img.initrd.data(), img.initrd.size());
    Put<uint32_t>(zp, kRamdiskImage, static_cast<uint32_t>(initrd_gpa));
    Put<uint32_t>(zp, kRamdiskSize, static_cast<uint32_t>(img.initrd.size()));
  }

  // e820 from the slots: the first MiB as a PC has it (640 KiB, a BIOS area), the rest RAM.
  struct E820 {
    uint64_t addr, size;
    uint32_t type;
  } __attribute__((packed));
  std::vector<E820> map;
  std::vector<Slot> slots = vm->slots;
  std::sort(slots.begin(), slots.end(), [](const Slot& a, const Slot& b) { return a.gpa < b.gpa; });
  out->e820_ram.clear();
  for (const Slot& s : slots) {
    if (s.gpa == 0) {
      map.push_back({0, 0x9fc00, kE820Ram});
      map.push_back({0x9fc00, 0x400, kE820Reserved});
      map.push_back({0xf0000, 0x10000, kE820Reserved});
      map.push_back({kKernel, s.size - kKernel, kE820Ram});
      out->e820_ram.push_back({0, 0x9fc00});
      out->e820_ram.push_back({kKernel, s.size - kKernel});
    } else {
      map.push_back({s.gpa, s.size, kE820Ram});
      out->e820_ram.push_back({s.gpa, s.size});
    }
  }
  if (map.size() > static_cast<size_t>(kE820Max)) return Fail(vm, "too many e820 entries", false);
  zp[kE820Entries] = static_cast<uint8_t>(map.size());
  memcpy(zp + kE820Table, map.data(), map.size() * sizeof(E820));

  // A flat GDT (the boot protocol's __BOOT_CS 0x10 and __BOOT_DS 0x18).
  uint64_t* gdt = reinterpret_cast<uint64_t*>(Hva(vm, kGdt, 32));
  gdt[0] = gdt[1] = 0;
  gdt[2] = 0x00cf9b000000ffffull;
  gdt[3] = 0x00cf93000000ffffull;

  out->protocol = version;
  out->entry64 = img.entry64;
  out->entry = Get<uint32_t>(zp, kCode32Start);
  if (img.entry64) {
    if (!(Get<uint16_t>(k.data(), kXloadflags) & 1)) return Fail(vm, "the kernel has no 64-bit entry (XLF_KERNEL_64)", false);
    // The boot protocol wants the kernel, zero page and command line identity-mapped: all of 0-4 GiB.
    auto* pml4 = reinterpret_cast<uint64_t*>(low->hva + kPml4);
    auto* pdpt = reinterpret_cast<uint64_t*>(low->hva + kPdpt);
    auto* pd = reinterpret_cast<uint64_t*>(low->hva + kPd);
    memset(pml4, 0, 4096);
    memset(pdpt, 0, 4096);
    pml4[0] = kPdpt | 3;
    for (int i = 0; i < 4; i++) pdpt[i] = (kPd + i * 0x1000ull) | 3;
    for (uint64_t j = 0; j < 4 * 512; j++) pd[j] = (j << 21) | 0x83;  // present, writable, 2 MiB
    out->entry = kKernel + 0x200;
  }
  out->zero_page = kZeroPage;
  out->kernel_gpa = kKernel;
  out->kernel_size = pm_size;
  out->initrd_gpa = initrd_gpa;
  out->initrd_size = img.initrd.size();
  return true;
}

namespace {

// KVM_CREATE_VCPU, kvm_run, CPUID (with this vCPU's APIC id) and the MCE banks.
bool NewVcpu(Vm* vm, int index, Vcpu* v) {
  v->index = index;
  v->fd = ioctl(vm->fd, KVM_CREATE_VCPU, index);
  if (v->fd < 0) return Fail(vm, "KVM_CREATE_VCPU");
  void* run = mmap(nullptr, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
  if (run == MAP_FAILED) return Fail(vm, "mmap kvm_run");
  v->run = static_cast<kvm_run*>(run);
  // CPUID before any register state (KVM 6.12 refuses some sregs otherwise).
  auto c = std::make_unique<CpuidBuf>();
  c->nent = static_cast<uint32_t>(vm->cpuid.size());
  memcpy(c->entries, vm->cpuid.data(), vm->cpuid.size() * sizeof(kvm_cpuid_entry2));
  for (uint32_t i = 0; i < c->nent; i++) {
    kvm_cpuid_entry2& e = c->entries[i];
    // The APIC id the in-kernel LAPIC of this vCPU has (its index; "APIC ID mismatch" otherwise).
    if (e.function == 1) e.ebx = (e.ebx & 0x00ffffff) | (static_cast<uint32_t>(index) << 24);
    if (e.function == 0xb || e.function == 0x1f) e.edx = static_cast<uint32_t>(index);
  }
  if (ioctl(v->fd, kIoctlSetCpuid2, c.get()) != 0) return Fail(vm, "KVM_SET_CPUID2");
  return mce::Setup(vm, v->fd);
}

}  // namespace

bool CreateApVcpu(Vm* vm, int index, Vcpu* v) { return NewVcpu(vm, index, v); }

bool WriteMpTable(Vm* vm, int vcpus) {
  uint8_t* at = Hva(vm, kMpTableGpa, kMpTableMax);
  if (!at) return Fail(vm, "the MP table's place (GPA 0x9fc00) is not guest RAM", false);
  if (WriteMpTable(at, vcpus) == 0) return Fail(vm, "too many vCPUs for the MP table", false);
  return true;
}

bool CreateBootVcpu(Vm* vm, const Loaded& l, Vcpu* v) {
  if (!NewVcpu(vm, 0, v)) return false;

  kvm_sregs sr;
  if (ioctl(v->fd, KVM_GET_SREGS, &sr) != 0) return Fail(vm, "KVM_GET_SREGS");
  Segment(&sr.cs, 0x10, 0xb);
  Segment(&sr.ds, 0x18, 0x3);
  if (l.entry64) {
    sr.cs.l = 1;
    sr.cs.db = 0;
  }
  sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
  sr.gdt.base = kGdt;
  sr.gdt.limit = 4 * 8 - 1;
  sr.idt.base = 0;
  sr.idt.limit = 0;
  sr.tr = {};
  sr.tr.limit = 0xffff;
  sr.tr.type = 11;
  sr.tr.present = 1;
  sr.ldt = {};
  sr.ldt.limit = 0xffff;
  sr.ldt.type = 2;
  sr.ldt.present = 1;
  sr.cr0 = (sr.cr0 | 0x1) & ~((1ull << 29) | (1ull << 30));  // PE; caches on (NW, CD clear)
  sr.cr4 = 0;
  sr.efer = 0;
  if (l.entry64) {
    sr.cr0 |= 0x80000000ull;  // PG
    sr.cr3 = kPml4;
    sr.cr4 = 0x20;            // PAE
    sr.efer = 0x500;          // LME | LMA
  }
  if (ioctl(v->fd, KVM_SET_SREGS, &sr) != 0)
    return Fail(vm, l.entry64 ? "KVM_SET_SREGS (long mode)" : "KVM_SET_SREGS (32-bit protected mode)");
  kvm_regs r = {};
  r.rip = l.entry;
  r.rsi = l.zero_page;
  r.rflags = 2;
  if (ioctl(v->fd, KVM_SET_REGS, &r) != 0) return Fail(vm, "KVM_SET_REGS");
  return true;
}

}  // namespace ras_vmm::linux_boot

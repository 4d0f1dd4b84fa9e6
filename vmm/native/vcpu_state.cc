#include "vcpu_state.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <memory>
#include <set>

#include "mce.h"

namespace ras_vmm::state {

namespace {

// KVM_GET_MSR_INDEX_LIST's struct kvm_msr_list has a flexible array (the C++ layout problem of
// kvm_vm.h): a fixed layout and C's ioctl number (size 4).
struct MsrList {
  uint32_t nmsrs;
  uint32_t indices[1024];
};
constexpr unsigned long kIoctlGetMsrIndexList = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x02, 4);
// struct kvm_xsave ends in a flexible array too: C++ makes it 4100 bytes, and KVM answers EINVAL to
// the ioctl numbers that encode that size (seen in the lab). The XSAVE area is 4096 bytes in C.
constexpr size_t kXsaveSize = 4096;
constexpr unsigned long kIoctlGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, kXsaveSize);
constexpr unsigned long kIoctlSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, kXsaveSize);
constexpr unsigned long kIoctlGetXsave2 = _IOC(_IOC_READ, KVMIO, 0xcf, kXsaveSize);

bool Fail(std::string* err, const char* what) {
  *err = std::string(what) + ": " + strerror(errno);
  return false;
}

void Put(std::vector<uint8_t>* out, uint32_t tag, const void* p, size_t n) {
  uint32_t h[2] = {tag, static_cast<uint32_t>(n)};
  const auto* b = reinterpret_cast<const uint8_t*>(h);
  out->insert(out->end(), b, b + sizeof h);
  const auto* d = static_cast<const uint8_t*>(p);
  out->insert(out->end(), d, d + n);
}

template <class T>
bool Get(int fd, unsigned long req, uint32_t tag, std::vector<uint8_t>* out, std::string* err, const char* what) {
  T v;
  memset(&v, 0, sizeof v);
  if (ioctl(fd, req, &v) != 0) return Fail(err, what);
  Put(out, tag, &v, sizeof v);
  return true;
}

struct Rec {
  uint32_t tag;
  const uint8_t* p;
  uint32_t n;
};

bool Parse(const uint8_t* data, size_t len, std::vector<Rec>* out, std::string* err) {
  size_t o = 0;
  while (o < len) {
    uint32_t h[2];
    if (len - o < sizeof h) break;
    memcpy(h, data + o, sizeof h);
    o += sizeof h;
    if (h[1] > len - o) break;
    out->push_back({h[0], data + o, h[1]});
    o += h[1];
  }
  if (o != len) {
    *err = "state: a truncated record";
    return false;
  }
  return true;
}

const Rec* Find(const std::vector<Rec>& r, uint32_t tag) {
  for (const Rec& x : r)
    if (x.tag == tag) return &x;
  return nullptr;
}

template <class T>
bool Set(int fd, unsigned long req, const std::vector<Rec>& recs, uint32_t tag, bool required, std::string* err, const char* what) {
  const Rec* r = Find(recs, tag);
  if (!r) {
    if (required) *err = std::string("state: no ") + what + " record";
    return !required;
  }
  if (r->n != sizeof(T)) {
    *err = std::string("state: ") + what + " record of " + std::to_string(r->n) + " bytes, this KVM's is " + std::to_string(sizeof(T));
    return false;
  }
  T v;
  memcpy(&v, r->p, sizeof v);
  if (ioctl(fd, req, &v) != 0) return Fail(err, what);
  return true;
}

// KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM: the bytes KVM_GET_XSAVE2 / KVM_SET_XSAVE move.
int XsaveSize(const Vm& vm) {
  int n = ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
  return n > static_cast<int>(kXsaveSize) ? n : static_cast<int>(kXsaveSize);
}

bool ReadMsr(int fd, uint32_t index, uint64_t* value) {
  MsrBuf b = {};
  b.nmsrs = 1;
  b.entries[0].index = index;
  if (ioctl(fd, kIoctlGetMsrs, &b) != 1) return false;
  *value = b.entries[0].data;
  return true;
}

bool WriteMsr(int fd, uint32_t index, uint64_t value) {
  MsrBuf b = {};
  b.nmsrs = 1;
  b.entries[0].index = index;
  b.entries[0].data = value;
  return ioctl(fd, kIoctlSetMsrs, &b) == 1;
}

constexpr uint32_t kMsrTscDeadline = 0x6e0;

}  // namespace

void PutRecord(std::vector<uint8_t>* out, uint32_t tag, const void* p, size_t n) { Put(out, tag, p, n); }

bool FindRecord(const uint8_t* data, size_t len, uint32_t tag, const uint8_t** p, uint32_t* n) {
  std::vector<Rec> recs;
  std::string err;
  if (!Parse(data, len, &recs, &err)) return false;
  const Rec* r = Find(recs, tag);
  if (!r) return false;
  *p = r->p;
  *n = r->n;
  return true;
}

std::vector<uint32_t> MceMsrs(uint64_t mcg_cap) {
  std::vector<uint32_t> v = {mce::MSR_MCG_STATUS};
  if (mcg_cap & mce::MCG_CTL_P) v.push_back(mce::MSR_MCG_CTL);
  if (mcg_cap & mce::MCG_LMCE_P) v.push_back(mce::MSR_MCG_EXT_CTL);
  int banks = static_cast<int>(mcg_cap & 0xff);
  for (int b = 0; b < banks; b++)
    for (int k = 0; k < 4; k++) v.push_back(0x400 + 4 * b + k);  // MCi_CTL, STATUS, ADDR, MISC
  return v;
}

bool SaveVcpu(const Vm& vm, int fd, bool irqchip, std::vector<uint8_t>* out, std::string* err) {
  if (!Get<kvm_regs>(fd, KVM_GET_REGS, kRegs, out, err, "KVM_GET_REGS")) return false;
  if (!Get<kvm_sregs>(fd, KVM_GET_SREGS, kSregs, out, err, "KVM_GET_SREGS")) return false;
  if (ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
    int n = XsaveSize(vm);
    std::vector<uint8_t> x(static_cast<size_t>(n), 0);
    unsigned long req = n > static_cast<int>(kXsaveSize) ? kIoctlGetXsave2 : kIoctlGetXsave;
    if (ioctl(fd, req, x.data()) != 0) return Fail(err, "KVM_GET_XSAVE");
    Put(out, kXsave, x.data(), x.size());
  } else if (!Get<kvm_fpu>(fd, KVM_GET_FPU, kFpu, out, err, "KVM_GET_FPU")) {
    return false;
  }
  if (ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0 && !Get<kvm_xcrs>(fd, KVM_GET_XCRS, kXcrs, out, err, "KVM_GET_XCRS"))
    return false;
  // MSRs: KVM's list (saved and emulated) plus the machine-check banks, each read on its own (a
  // batch stops at the first MSR this vCPU does not have).
  auto list = std::make_unique<MsrList>();
  list->nmsrs = 1024;
  if (ioctl(vm.kvm, kIoctlGetMsrIndexList, list.get()) != 0) return Fail(err, "KVM_GET_MSR_INDEX_LIST");
  std::set<uint32_t> want(list->indices, list->indices + std::min<uint32_t>(list->nmsrs, 1024));
  for (uint32_t m : MceMsrs(vm.mcg_cap)) want.insert(m);
  std::vector<kvm_msr_entry> msrs;
  for (uint32_t idx : want) {
    uint64_t v;
    if (!ReadMsr(fd, idx, &v)) continue;
    kvm_msr_entry e = {};
    e.index = idx;
    e.data = v;
    msrs.push_back(e);
  }
  for (uint32_t m : MceMsrs(vm.mcg_cap))
    if (std::none_of(msrs.begin(), msrs.end(), [m](const kvm_msr_entry& e) { return e.index == m; })) {
      *err = "KVM_GET_MSRS: machine-check MSR 0x" + std::to_string(m) + " unreadable";
      return false;
    }
  Put(out, kMsrs, msrs.data(), msrs.size() * sizeof(kvm_msr_entry));
  if (irqchip && !Get<kvm_lapic_state>(fd, KVM_GET_LAPIC, kLapic, out, err, "KVM_GET_LAPIC")) return false;
  if (!Get<kvm_vcpu_events>(fd, KVM_GET_VCPU_EVENTS, kEvents, out, err, "KVM_GET_VCPU_EVENTS")) return false;
  if (!Get<kvm_debugregs>(fd, KVM_GET_DEBUGREGS, kDebugRegs, out, err, "KVM_GET_DEBUGREGS")) return false;
  if (!Get<kvm_mp_state>(fd, KVM_GET_MP_STATE, kMpState, out, err, "KVM_GET_MP_STATE")) return false;
  return true;
}

bool RestoreVcpu(const Vm& vm, int fd, bool irqchip, const uint8_t* data, size_t len, std::vector<uint32_t>* msr_failed,
                 std::string* err) {
  std::vector<Rec> recs;
  if (!Parse(data, len, &recs, err)) return false;
  if (!Set<kvm_regs>(fd, KVM_SET_REGS, recs, kRegs, true, err, "KVM_SET_REGS")) return false;
  if (const Rec* x = Find(recs, kXsave)) {
    int n = XsaveSize(vm);
    if (x->n > static_cast<uint32_t>(n) || x->n < kXsaveSize) {
      *err = "state: an XSAVE area of " + std::to_string(x->n) + " bytes, this KVM's is " + std::to_string(n);
      return false;
    }
    std::vector<uint8_t> b(static_cast<size_t>(n), 0);
    memcpy(b.data(), x->p, x->n);
    if (ioctl(fd, kIoctlSetXsave, b.data()) != 0) return Fail(err, "KVM_SET_XSAVE");
  } else if (!Set<kvm_fpu>(fd, KVM_SET_FPU, recs, kFpu, true, err, "KVM_SET_FPU")) {
    return false;
  }
  if (!Set<kvm_xcrs>(fd, KVM_SET_XCRS, recs, kXcrs, false, err, "KVM_SET_XCRS")) return false;
  {
    // TR as the VMCB had it on AMD: KVM's svm_get_segment always ORs the busy bit into TR's type
    // ("the busy flag in the tr selector isn't exposed"), so a VMCB with an available 64-bit TSS
    // (type 9) comes back as busy (11). In long mode the processor ignores the difference; QEMU's
    // TCG SVM (the lab's nested KVM) does not: its I/O permission check wants type 9 and answers a
    // user-space IN/OUT with #GP, which killed the Linux guest's walker after a move. Intel's VM
    // entry needs the busy type: left as it is there.
    const Rec* r = Find(recs, kSregs);
    if (!r || r->n != sizeof(kvm_sregs)) {
      *err = "state: no KVM_SET_SREGS record of this KVM's size";
      return false;
    }
    kvm_sregs sr;
    memcpy(&sr, r->p, sizeof sr);
    if (vm.amd && sr.tr.type == 11) sr.tr.type = 9;
    if (ioctl(fd, KVM_SET_SREGS, &sr) != 0) return Fail(err, "KVM_SET_SREGS");
  }
  const Rec* m = Find(recs, kMsrs);
  if (!m || m->n % sizeof(kvm_msr_entry)) {
    *err = "state: no MSR record";
    return false;
  }
  std::vector<uint32_t> mce_msrs = MceMsrs(vm.mcg_cap);
  for (size_t k = 0; k < m->n / sizeof(kvm_msr_entry); k++) {
    kvm_msr_entry e;
    memcpy(&e, m->p + k * sizeof e, sizeof e);
    if (WriteMsr(fd, e.index, e.data)) continue;
    msr_failed->push_back(e.index);
    if (std::find(mce_msrs.begin(), mce_msrs.end(), e.index) != mce_msrs.end()) {
      *err = "KVM_SET_MSRS refused machine-check MSR 0x" + std::to_string(e.index);
      return false;
    }
  }
  if (!Set<kvm_mp_state>(fd, KVM_SET_MP_STATE, recs, kMpState, false, err, "KVM_SET_MP_STATE")) return false;
  if (irqchip && !Set<kvm_lapic_state>(fd, KVM_SET_LAPIC, recs, kLapic, true, err, "KVM_SET_LAPIC")) return false;
  // IA32_TSC_DEADLINE again, now that the LAPIC is in TSC-deadline mode: KVM drops the MSR write
  // while the LVT timer is not in that mode (the fresh LAPIC above), and a Linux guest whose armed
  // deadline is lost never gets its next timer tick (QEMU's kvm_put_tscdeadline_msr, same reason).
  if (irqchip)
    for (size_t k = 0; k < m->n / sizeof(kvm_msr_entry); k++) {
      kvm_msr_entry e;
      memcpy(&e, m->p + k * sizeof e, sizeof e);
      if (e.index == kMsrTscDeadline && !WriteMsr(fd, e.index, e.data)) return Fail(err, "KVM_SET_MSRS (IA32_TSC_DEADLINE)");
    }
  if (!Set<kvm_vcpu_events>(fd, KVM_SET_VCPU_EVENTS, recs, kEvents, true, err, "KVM_SET_VCPU_EVENTS")) return false;
  return Set<kvm_debugregs>(fd, KVM_SET_DEBUGREGS, recs, kDebugRegs, false, err, "KVM_SET_DEBUGREGS");
}

bool SaveVm(const Vm& vm, bool irqchip, bool pit, std::vector<uint8_t>* out, std::string* err) {
  if (!Get<kvm_clock_data>(vm.fd, KVM_GET_CLOCK, kClock, out, err, "KVM_GET_CLOCK")) return false;
  if (irqchip) {
    const uint32_t chips[3] = {KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC};
    const uint32_t tags[3] = {kPicMaster, kPicSlave, kIoapic};
    for (int k = 0; k < 3; k++) {
      kvm_irqchip c = {};
      c.chip_id = chips[k];
      if (ioctl(vm.fd, KVM_GET_IRQCHIP, &c) != 0) return Fail(err, "KVM_GET_IRQCHIP");
      Put(out, tags[k], &c, sizeof c);
    }
  }
  if (pit && !Get<kvm_pit_state2>(vm.fd, KVM_GET_PIT2, kPit, out, err, "KVM_GET_PIT2")) return false;
  return true;
}

bool RestoreVm(const Vm& vm, const uint8_t* data, size_t len, std::string* err) {
  std::vector<Rec> recs;
  if (!Parse(data, len, &recs, err)) return false;
  for (uint32_t tag : {kPicMaster, kPicSlave, kIoapic})
    if (!Set<kvm_irqchip>(vm.fd, KVM_SET_IRQCHIP, recs, tag, false, err, "KVM_SET_IRQCHIP")) return false;
  if (!Set<kvm_pit_state2>(vm.fd, KVM_SET_PIT2, recs, kPit, false, err, "KVM_SET_PIT2")) return false;
  const Rec* c = Find(recs, kClock);
  if (!c || c->n != sizeof(kvm_clock_data)) {
    *err = "state: no KVM clock record";
    return false;
  }
  kvm_clock_data d;
  memcpy(&d, c->p, sizeof d);
  d.flags = 0;  // only the clock value: the flags KVM_GET_CLOCK reports are not inputs
  if (ioctl(vm.fd, KVM_SET_CLOCK, &d) != 0) return Fail(err, "KVM_SET_CLOCK");
  return true;
}

bool Complete(int fd, kvm_run* run, std::string* err) {
  __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
  int r = ioctl(fd, KVM_RUN, 0);
  int e = errno;
  __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
  if (r < 0 && (e == EINTR || e == EAGAIN)) return true;
  errno = e;
  if (r < 0) return Fail(err, "KVM_RUN (immediate_exit, completing the last exit)");
  *err = "KVM_RUN (immediate_exit) entered the guest: exit " + std::to_string(run->exit_reason);
  return false;
}

}  // namespace ras_vmm::state

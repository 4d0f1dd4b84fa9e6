#include "mce.h"

#include <errno.h>
#include <string.h>

#include <string>
#include <sys/ioctl.h>

namespace ras_vmm::mce {

Bits For(bool amd, bool ar) {
  Bits b;
  b.status = MCI_STATUS_VAL | MCI_STATUS_EN | MCI_STATUS_ADDRV | MCI_STATUS_MISCV;
  b.mcg_status = MCG_STATUS_MCIP | MCG_STATUS_RIPV;
  if (!amd) {
    b.status |= MCI_STATUS_S | MCI_STATUS_UC;
    if (ar) {
      b.status |= MCI_STATUS_AR | MCACOD_MEM_AR;
      b.mcg_status |= MCG_STATUS_EIPV;
    } else {
      b.status |= MCACOD_MEM_AO;
    }
  } else if (ar) {
    b.status |= MCI_STATUS_UC | MCI_STATUS_POISON;
    b.mcg_status |= MCG_STATUS_EIPV;
  } else {
    // No UC: KVM records a deferred error in the bank without raising #MC (the guest polls).
    b.status |= MCI_STATUS_DEFERRED | MCI_STATUS_POISON;
  }
  b.misc = (MCM_ADDR_PHYS << 6) | 12;  // a physical address, valid from bit 12: one 4 KiB frame
  return b;
}

bool Capability(Vm* vm) {
  int banks = ioctl(vm->kvm, KVM_CHECK_EXTENSION, KVM_CAP_MCE);
  if (banks <= 0) {
    vm->error = "KVM has no KVM_CAP_MCE";
    return false;
  }
  uint64_t supported = 0;
  if (ioctl(vm->kvm, KVM_X86_GET_MCE_CAP_SUPPORTED, &supported) != 0) {
    vm->error = std::string("KVM_X86_GET_MCE_CAP_SUPPORTED: ") + strerror(errno);
    return false;
  }
  if (banks < kBanks) {
    vm->error = "KVM offers fewer than 10 MCE banks";
    return false;
  }
  uint64_t want = MCG_CTL_P | MCG_SER_P;
  // LMCE depends on SER_P (Linux's lmce_supported wants both); Intel only.
  if (!vm->amd && vm->lmce && (supported & (MCG_SER_P | MCG_LMCE_P)) == (MCG_SER_P | MCG_LMCE_P)) want |= MCG_LMCE_P;
  vm->mcg_cap = (want & supported) | kBanks;
  return true;
}

namespace {

// kvm_msrs with room (C's layout: kvm_vm.h says why not the header's struct and ioctl numbers).
struct MsrList {
  uint32_t nmsrs, pad;
  kvm_msr_entry entries[4 + 2 * kBanks];
};

}  // namespace

bool Setup(Vm* vm, int vcpu_fd) {
  uint64_t cap = vm->mcg_cap;
  if (ioctl(vcpu_fd, KVM_X86_SETUP_MCE, &cap) != 0) {
    vm->error = std::string("KVM_X86_SETUP_MCE: ") + strerror(errno);
    return false;
  }
  if (cap & MCG_LMCE_P) {
    MsrList l = {};
    l.nmsrs = 1;
    l.entries[0].index = MSR_IA32_FEAT_CTL;
    l.entries[0].data = FEAT_CTL_LOCKED | FEAT_CTL_LMCE_ENABLED;
    if (ioctl(vcpu_fd, kIoctlSetMsrs, &l) != 1) {
      vm->error = std::string("KVM_SET_MSRS IA32_FEATURE_CONTROL (LMCE): ") + strerror(errno);
      return false;
    }
  }
  return true;
}

Msrs Read(int vcpu_fd, uint64_t mcg_cap) {
  Msrs m;
  MsrList l = {};
  uint32_t n = 0;
  l.entries[n++].index = MSR_MCG_STATUS;
  if (mcg_cap & MCG_CTL_P) l.entries[n++].index = MSR_MCG_CTL;
  if (mcg_cap & MCG_LMCE_P) l.entries[n++].index = MSR_MCG_EXT_CTL;
  uint32_t first_bank = n;
  for (int b = 0; b < kBanks; b++) {
    l.entries[n++].index = MsrMcCtl(b);
    l.entries[n++].index = MsrMcStatus(b);
  }
  l.nmsrs = n;
  if (ioctl(vcpu_fd, kIoctlGetMsrs, &l) != static_cast<int>(n)) return m;
  uint32_t k = 0;
  m.mcg_status = l.entries[k++].data;
  m.mcg_ctl = (mcg_cap & MCG_CTL_P) ? l.entries[k++].data : ~0ull;
  m.ext_ctl = (mcg_cap & MCG_LMCE_P) ? l.entries[k++].data : 0;
  for (int b = 0; b < kBanks; b++) {
    m.ctl[b] = l.entries[first_bank + 2 * b].data;
    m.status[b] = l.entries[first_bank + 2 * b + 1].data;
  }
  m.ok = true;
  return m;
}

Model ModelOf(const Vm& vm) {
  Model md;
  md.amd = vm.amd;
  for (const auto& e : vm.cpuid) {
    if (e.function != 1) continue;
    // CPUID.1 EAX: family 11:8 (+ extended 27:20 when 0xf), model 7:4 (+ extended 19:16 << 4 for family 6 / 0xf).
    uint32_t fam = (e.eax >> 8) & 0xf, model = (e.eax >> 4) & 0xf;
    if (fam == 0xf) fam += (e.eax >> 20) & 0xff;
    if (fam == 6 || fam >= 0xf) model |= ((e.eax >> 16) & 0xf) << 4;
    md.broadcast = !vm.amd && ((fam == 6 && model >= 14) || fam > 6);
  }
  return md;
}

Decision Plan(const Model& model, uint64_t mcg_cap, const Msrs& m, bool ar, uint64_t gpa) {
  Decision d;
  Bits b = For(model.amd, ar);
  d.inj.status = b.status;
  d.inj.mcg_status = b.mcg_status;
  d.inj.misc = b.misc;
  d.inj.addr = gpa & ~0xfffull;
  d.inj.bank = kBank;
  d.broadcast = model.broadcast && !model.amd;
  if (!m.ok) {
    // Nothing known: an AR as QEMU injects it (KVM itself refuses a second one under MCIP with a
    // triple fault); an AO waits for the next exit.
    d.verdict = ar ? kInject : kDefer;
    return d;
  }
  bool uc = (d.inj.status & MCI_STATUS_UC) != 0;
  if (m.ext_ctl & MCG_EXT_CTL_LMCE_EN) {  // QEMU: env->mcg_ext_ctl & MCG_EXT_CTL_LMCE_EN
    d.inj.mcg_status |= MCG_STATUS_LMCES;
    d.lmce = true;
    d.broadcast = false;
  }
  if (m.mcg_status & MCG_STATUS_MCIP) {
    d.verdict = ar ? kShutdown : kDefer;
    return d;
  }
  if (uc && (mcg_cap & MCG_CTL_P) && m.mcg_ctl != ~0ull) {
    d.verdict = kDisabled;
    return d;
  }
  // A bank the guest has read (no VAL) and left enabled: 9 as QEMU, else the highest free one
  // above bank 1 (bank 1 carries the broadcast pieces).
  int bank = -1;
  for (int k = kBank; k >= 2 && bank < 0; k--)
    if (!(m.status[k] & MCI_STATUS_VAL) && (!uc || m.ctl[k] == ~0ull)) bank = k;
  if (bank < 0) {
    if (!ar) {
      d.verdict = kDefer;  // the guest reads its banks: an AO can wait for one
      return d;
    }
    if (uc && m.ctl[kBank] != ~0ull) {
      d.verdict = kDisabled;
      return d;
    }
    d.over = true;  // every bank full: hardware would set OVER too
    bank = kBank;
  }
  d.inj.bank = bank;
  d.verdict = kInject;
  return d;
}

Decision PlanBroadcastPiece(uint64_t mcg_cap, const Msrs& t) {
  Decision d;
  d.inj.bank = 1;
  d.inj.status = MCI_STATUS_VAL | MCI_STATUS_UC;
  d.inj.mcg_status = MCG_STATUS_MCIP | MCG_STATUS_RIPV;
  d.inj.addr = 0;
  d.inj.misc = 0;
  if (!t.ok) return d;  // as QEMU: inject (KVM refuses it itself under MCIP)
  if (t.mcg_status & MCG_STATUS_MCIP) d.verdict = kMerged;
  else if (((mcg_cap & MCG_CTL_P) && t.mcg_ctl != ~0ull) || t.ctl[1] != ~0ull) d.verdict = kDisabled;
  return d;
}

int Put(int vcpu_fd, const Injection& inj) {
  kvm_x86_mce m = {};
  m.status = inj.status;
  m.addr = inj.addr;
  m.misc = inj.misc;
  m.mcg_status = inj.mcg_status;
  m.bank = static_cast<uint8_t>(inj.bank);
  if (ioctl(vcpu_fd, KVM_X86_SET_MCE, &m) != 0) return errno;
  return 0;
}

}  // namespace ras_vmm::mce

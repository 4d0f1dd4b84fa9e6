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
  vm->mcg_cap = ((MCG_CTL_P | MCG_SER_P) & supported) | kBanks;
  return true;
}

bool Setup(Vm* vm, int vcpu_fd) {
  uint64_t cap = vm->mcg_cap;
  if (ioctl(vcpu_fd, KVM_X86_SETUP_MCE, &cap) != 0) {
    vm->error = std::string("KVM_X86_SETUP_MCE: ") + strerror(errno);
    return false;
  }
  return true;
}

bool InProgress(int vcpu_fd) {
  MsrBuf m = {};
  m.nmsrs = 1;
  m.entries[0].index = 0x17a;  // MCG_STATUS
  if (ioctl(vcpu_fd, kIoctlGetMsrs, &m) != 1) return false;
  return (m.entries[0].data & MCG_STATUS_MCIP) != 0;
}

int Inject(int vcpu_fd, bool amd, uint64_t gpa, bool ar, Bits* used) {
  Bits b = For(amd, ar);
  kvm_x86_mce m = {};
  m.status = b.status;
  m.addr = gpa & ~0xfffull;
  m.misc = b.misc;
  m.mcg_status = b.mcg_status;
  m.bank = kBank;
  if (used) *used = b;
  if (ioctl(vcpu_fd, KVM_X86_SET_MCE, &m) != 0) return errno;
  return 0;
}

}  // namespace ras_vmm::mce

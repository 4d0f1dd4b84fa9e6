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
constexpr uint64_t MCG_LMCE_P = 1ull << 27;           // Intel: local machine checks offered
constexpr uint64_t MCG_STATUS_LMCES = 1ull << 3;      // Intel: this machine check is local
constexpr uint64_t MCG_EXT_CTL_LMCE_EN = 1ull << 0;   // Intel: the guest turned local machine checks on
constexpr uint64_t FEAT_CTL_LOCKED = 1ull << 0;
constexpr uint64_t FEAT_CTL_LMCE_ENABLED = 1ull << 20;
constexpr uint32_t MSR_IA32_FEAT_CTL = 0x3a;
constexpr uint32_t MSR_MCG_CAP = 0x179;
constexpr uint32_t MSR_MCG_STATUS = 0x17a;
constexpr uint32_t MSR_MCG_CTL = 0x17b;
constexpr uint32_t MSR_MCG_EXT_CTL = 0x4d0;
constexpr uint32_t MsrMcCtl(int bank) { return 0x400 + 4 * bank; }
constexpr uint32_t MsrMcStatus(int bank) { return 0x401 + 4 * bank; }
constexpr uint64_t MCI_STATUS_OVER = 1ull << 62;
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

// KVM's MCE capability: banks and MCG_CAP bits, kept in vm->mcg_cap. On Intel, where KVM offers it
// (VMX), MCG_LMCE_P too (QEMU's lmce=on): the guest may then ask for local machine checks.
bool Capability(Vm* vm);
// KVM_X86_SETUP_MCE with vm->mcg_cap on one vCPU; with MCG_LMCE_P also IA32_FEATURE_CONTROL
// LOCKED|LMCE_ENABLED, as QEMU's firmware leaves it (Linux enables LMCE only then).
bool Setup(Vm* vm, int vcpu_fd);

// The guest's machine-check MSRs on one vCPU (KVM_GET_MSRS), read before every injection.
struct Msrs {
  bool ok = false;  // false: KVM_GET_MSRS failed; nothing below is known
  uint64_t mcg_status = 0, mcg_ctl = 0, ext_ctl = 0;
  uint64_t ctl[kBanks] = {}, status[kBanks] = {};
};
// Reads them on the vCPU's own thread. mcg_cap tells which exist (MCG_CTL_P, MCG_LMCE_P).
Msrs Read(int vcpu_fd, uint64_t mcg_cap);

// The CPU the guest is told it runs on, as far as machine checks go.
struct Model {
  bool amd = false;
  // QEMU's cpu_x86_support_mca_broadcast: Intel family 6 model >= 14, or family > 6. Linux then
  // waits in mce_start() for every CPU to enter its handler (it panics when one never comes).
  bool broadcast = false;
};
Model ModelOf(const Vm& vm);

// One KVM_X86_SET_MCE.
struct Injection {
  int bank = kBank;
  uint64_t status = 0, addr = 0, misc = 0, mcg_status = 0;
};

enum Verdict {
  kInject = 0,    // inject `inj` now (and, with `broadcast`, BroadcastPiece() into every other vCPU)
  kDefer = 1,     // AO only: the guest is in a machine check, or the bank still holds one; later
  kDisabled = 2,  // the guest turned uncorrected reporting off (MCG_CTL / MCi_CTL not all ones):
                  // KVM would drop it silently, so it is not counted as delivered
  kShutdown = 3,  // AR while the guest is still in a machine check (MCIP): hardware shuts down;
                  // KVM_X86_SET_MCE does (a triple fault), as QEMU's do_inject_x86_mce does
  kMerged = 4,    // a broadcast piece for a vCPU already in a machine check: it is in the handler
                  // the broadcast would bring it to, a second one would triple-fault it
};

struct Decision {
  int verdict = kInject;
  Injection inj;
  bool broadcast = false;  // Intel without LMCE: every other vCPU gets BroadcastPiece()
  bool lmce = false;       // the guest enabled LMCE: MCG_STATUS.LMCES, no broadcast
  bool over = false;       // every usable bank held an error: KVM sets MCi_STATUS.OVER
};

// What to inject on the vCPU whose MSRs are `m`, for the 4 KiB frame at gpa: QEMU's
// kvm_mce_inject bits; AR never waits (the access re-executes, hardware would not wait either);
// AO waits while MCIP is set or the bank holds an unread error; a free bank (9, else 8..2) so
// KVM never sets OVER over an error the guest has not read (Intel Linux panics on "Action
// required with lost events"). Without readable MSRs: AR as QEMU would, AO deferred.
Decision Plan(const Model& model, uint64_t mcg_cap, const Msrs& m, bool action_required, uint64_t gpa);
// QEMU's MCE_INJECT_BROADCAST piece for the other vCPUs: bank 1, MCi_STATUS VAL|UC (no EN: Linux
// rates it "not enabled" and only joins the rendezvous), MCG_STATUS MCIP|RIPV, no address.
Decision PlanBroadcastPiece(uint64_t mcg_cap, const Msrs& target);

// KVM_X86_SET_MCE. Returns 0 or an errno.
int Put(int vcpu_fd, const Injection& inj);

}  // namespace ras_vmm::mce

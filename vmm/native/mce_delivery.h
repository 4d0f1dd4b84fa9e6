// mce_delivery: how a lost 4 KiB frame becomes machine checks in a VM of N vCPUs, shared by the
// bare-metal machine (vcpu_loop) and the Linux machine (linux_vm). Every KVM_X86_SET_MCE runs on
// the target vCPU's own thread, between KVM_RUN calls (a vCPU ioctl from another thread waits for
// the vCPU's mutex, i.e. for it to leave KVM_RUN).
//
// - AR (the vCPU touched the frame: a SIGBUS, an MMIO exit or KVM_EXIT_MEMORY_FAULT naming it) goes
//   to that vCPU now, every time it touches it (each access gets its own machine check); while the
//   guest is still in a machine check (MCIP) it is what hardware does: a shutdown.
// - AO (a frame the engine lost that no access of this vCPU named: next_lost) goes once per VM,
//   and waits (per vCPU, deduplicated) while MCIP is set or the bank still holds an unread error.
// - Intel without LMCE: every other vCPU gets QEMU's broadcast piece (bank 1, VAL|UC, MCIP|RIPV),
//   so Linux's mce_start() rendezvous completes. With LMCE enabled by the guest: MCG_STATUS.LMCES,
//   no broadcast. AMD: neither (the AMD path is what it was: QEMU's bits, bank 9).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "kvm_vm.h"
#include "mce.h"

namespace ras_vmm {

struct Outcome {
  uint64_t gpa = 0;
  int path = 0, code = 0, whole = 0;
  bool ar = false, piece = false;
  mce::Decision d;
  int err = 0;  // KVM_X86_SET_MCE's errno
};

// What both machines count and post for an outcome: one place for the verdict's bookkeeping.
template <class Stats>
void CountOutcome(Stats& s, const Outcome& o) {
  const mce::Decision& d = o.d;
  if (o.piece) {
    if (d.verdict == mce::kMerged) s.merged++;
    else if (d.verdict == mce::kDisabled) s.disabled++;
    else if (o.err) s.inject_failed++;
    else s.pieces++;
    return;
  }
  switch (d.verdict) {
    case mce::kInject:
      if (o.err) s.inject_failed++;
      else {
        s.injected++;
        if (!o.ar) s.injected_ao++;
      }
      break;
    case mce::kDefer: s.deferred++; break;
    case mce::kDisabled: s.disabled++; break;
    case mce::kShutdown: s.shutdown++; break;
    default: break;
  }
}

// The injected event's flags word (whole, bank, verdict, LMCE, broadcast, piece, OVER) and its kind.
inline uint64_t OutcomeFlags(const Outcome& o) {
  const mce::Decision& d = o.d;
  return static_cast<uint64_t>(o.whole & 1) | (static_cast<uint64_t>(d.inj.bank) << 8) |
         (static_cast<uint64_t>(d.verdict) << 16) | (d.lmce ? 1ull << 24 : 0) | (d.broadcast ? 2ull << 24 : 0) |
         (o.piece ? 4ull << 24 : 0) | (d.over ? 8ull << 24 : 0);
}
inline const char* OutcomeKind(const Outcome& o) { return o.piece ? "piece" : (o.ar ? "AR" : "AO"); }

// KVM_GET_MSRS / KVM_X86_SET_MCE on a vCPU fd; replaced by a model of KVM in the host tests.
struct MceOps {
  std::function<mce::Msrs(int fd, uint64_t mcg_cap)> read = mce::Read;
  std::function<int(int fd, const mce::Injection&)> put = mce::Put;
};

class Delivery {
 public:
  using Kick = std::function<void(int vcpu)>;
  using Sink = std::function<void(int vcpu, const Outcome&)>;
  using Ops = MceOps;

  // model/mcg_cap of the VM; kick(i) takes vCPU i out of KVM_RUN; sink gets every outcome
  // (injected, deferred, merged, disabled, shutdown) on the thread that decided it.
  void Init(const mce::Model& model, uint64_t mcg_cap, int vcpus, Kick kick, Sink sink, Ops ops = Ops());

  // On vCPU i's thread (fd its vCPU fd): a machine check for the frame at gpa.
  void Deliver(int i, int fd, uint64_t gpa, bool ar, int path, int code, int whole);
  // On vCPU i's thread before each KVM_RUN: broadcast pieces other vCPUs asked for, then the AOs
  // that waited. Bounded: one pass over what is queued.
  void BeforeRun(int i, int fd);
  // True the first time the VM is told of this frame by an AO (next_lost frames: once per VM).
  bool FirstAo(uint64_t gpa);
  // vCPU i's own next_lost cursor.
  uint64_t* Cursor(int i) { return &vcpu_[i]->cursor; }
  size_t Deferred(int i) const;
  // The frames of vCPU i's AOs still waiting; only while its thread is stopped (a migration's pause).
  std::vector<uint64_t> DeferredFrames(int i) const;

 private:
  struct Pending {
    uint64_t gpa;
    int path, code, whole;
  };
  struct PerVcpu {
    std::atomic<uint32_t> pieces{0};
    std::vector<Pending> deferred;  // AO only, one per frame; the vCPU's own thread only
    uint64_t cursor = 0;
  };
  bool Attempt(int i, int fd, const Pending& p, bool ar, bool queue_if_deferred);

  mce::Model model_;
  uint64_t mcg_cap_ = 0;
  Kick kick_;
  Ops ops_;
  Sink sink_;
  std::vector<std::unique_ptr<PerVcpu>> vcpu_;
  std::mutex mu_;
  std::set<uint64_t> told_ao_;
};

}  // namespace ras_vmm

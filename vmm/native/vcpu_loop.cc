// vcpu_loop: the bare-metal Machine's vCPU thread: KVM_RUN, its exits, and the guest's reports on
// the report port. What a SIGBUS, an EFAULT or an MMIO exit inside RAM leads to is in vcpu_memory.cc.
#include "vcpu_loop.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "sigbus.h"

namespace ras_vmm {

namespace {

// Registers for a post-mortem of a vCPU that died.
std::string DescribeVcpu(int fd) {
  kvm_regs r = {};
  kvm_sregs sr = {};
  char buf[256];
  if (ioctl(fd, KVM_GET_REGS, &r) != 0 || ioctl(fd, KVM_GET_SREGS, &sr) != 0) return "registers unavailable";
  snprintf(buf, sizeof buf, "rip 0x%llx rsp 0x%llx rflags 0x%llx cr0 0x%llx cr2 0x%llx cr3 0x%llx cr4 0x%llx efer 0x%llx",
           (unsigned long long)r.rip, (unsigned long long)r.rsp, (unsigned long long)r.rflags, (unsigned long long)sr.cr0,
           (unsigned long long)sr.cr2, (unsigned long long)sr.cr3, (unsigned long long)sr.cr4, (unsigned long long)sr.efer);
  return buf;
}

}  // namespace

void Machine::Loop(int i) {
  BlockAsyncSignals(KickSignal());
  while (!go_.load(std::memory_order_acquire)) sched_yield();
  int slot = sigbus::RegisterThread();
  slot_[i] = slot;
  Vcpu& v = vcpus_[i];
  VcpuStats& s = *stats_[i];
  uint64_t unresolved_in_a_row = 0;
  if (slot < 0) Fatal(i, kError, "no free SIGBUS slot for this vCPU thread");
  while (s.state.load() == kRunning && EnterGate(v.run, &quit_)) {
    // Broadcast pieces other vCPUs asked for, then the AOs that waited (MCIP, a full bank).
    mce_.BeforeRun(i, v.fd);
    if (poll_wanted_[i].load()) RaisePoll(i);
    s.runs++;
    int r = RunVcpu(v.fd, v.run, slot);
    if (r < 0) {
      int e = errno;
      if (e == EINTR || e == EAGAIN || e == EHWPOISON) {
        // No SIGBUS: the engine stalled this thread for a recoverable report, a kick, or a nudge.
        if (e == EHWPOISON) s.hwpoison++;
        uint64_t hva;
        if (TookSigbus(slot, &s, &hva)) OnSigbus(i, hva);
        continue;
      }
      if (e == EFAULT) {
        s.efault++;
        if (!OnEfault(i)) {
          if (!EfaultUnresolved(&s.efault_unresolved, &unresolved_in_a_row)) {
            Fatal(i, kError, "KVM_RUN keeps failing with EFAULT and the engine names no lost frame");
            break;
          }
        } else {
          unresolved_in_a_row = 0;
        }
        continue;
      }
      Fatal(i, kError, std::string("KVM_RUN: ") + strerror(e));
      break;
    }
    unresolved_in_a_row = 0;
    switch (v.run->exit_reason) {
      case KVM_EXIT_IO:
        s.pio++;
        if (!OnPio(i)) goto out;
        break;
      case KVM_EXIT_MMIO:
        OnMmio(i);
        break;
      case KVM_EXIT_HLT:
        if (s.state == kRunning) s.state = kHalted;
        goto out;
      case KVM_EXIT_INTR:
        s.eintr++;
        break;
      case KVM_EXIT_IRQ_WINDOW_OPEN:  // asked for by RaisePoll: the poll goes in before the next run
        break;
      case KVM_EXIT_SHUTDOWN:
        Fatal(i, kFatal, "guest triple fault (KVM_EXIT_SHUTDOWN): " + DescribeVcpu(v.fd));
        goto out;
      case KVM_EXIT_FAIL_ENTRY:
        Fatal(i, kError, "KVM_EXIT_FAIL_ENTRY, reason 0x" + std::to_string(v.run->fail_entry.hardware_entry_failure_reason));
        goto out;
      case KVM_EXIT_INTERNAL_ERROR:
        Fatal(i, kError, "KVM_EXIT_INTERNAL_ERROR, suberror " + std::to_string(v.run->internal.suberror));
        goto out;
      default:
        Fatal(i, kError, "unexpected KVM exit " + std::to_string(v.run->exit_reason));
        goto out;
    }
  }
out:
  if (quit_.load() && s.state.load() == kRunning) s.state = kKicked;
  sigbus::UnregisterThread(slot);
  s.done = true;
}

bool Machine::OnPio(int i) {
  Vcpu& v = vcpus_[i];
  VcpuStats& s = *stats_[i];
  auto& io = v.run->io;
  uint8_t* data = reinterpret_cast<uint8_t*>(v.run) + io.data_offset;
  if (io.port != RAS_PORT_REPORT || io.direction != KVM_EXIT_IO_OUT || io.size != 4) {
    if (io.direction == KVM_EXIT_IO_IN) memset(data, 0xff, static_cast<size_t>(io.size) * io.count);
    return true;  // no such device
  }
  uint32_t val;
  memcpy(&val, data, 4);
  unsigned cpu = val & 0xff, box = (val >> 8) & 0xff;
  if (cpu != static_cast<unsigned>(i) || box >= RAS_BOXES) return true;
  // The mailbox is guest RAM: read through the engine's guarded copy where it has one (a lost
  // frame is then a bit, not a fault), else directly (a lost frame ends the VMM cleanly: sigbus.h).
  ras_guest_mailbox m;
  uint64_t mb_gpa = RAS_GUEST_MAILBOX_OF(cpu, box);
  int rc = GuestCopy(cfg_.api, SlotOf(vm_, 0)->gpa + mb_gpa, &m, sizeof m, false, cfg_.wait_ms);
  if (rc == -ENOSYS) {
    volatile auto* mb = reinterpret_cast<volatile ras_guest_mailbox*>(SlotOf(vm_, 0)->hva + mb_gpa);
    m = {mb->event, mb->a, mb->b, mb->c, mb->d, mb->e, mb->f, mb->g};
  } else if (rc != 0) {
    Fatal(i, kError, rc == 1 ? "the guest's mailbox frame is lost" : "copy_from_guest of the mailbox: " + std::to_string(rc));
    return false;
  }
  Event e{kEvGuest, i, {m.event, m.a, m.b, m.c, m.d, m.e, m.f, m.g}, {}};
  bool go_on = true;
  switch (e.v[0]) {
    case RAS_EV_FILLED:
      s.filled = e.v[1];
      break;
    case RAS_EV_PASS: {
      s.passes = e.v[1];
      s.verified = e.v[2];
      s.wrong_bytes = e.v[3];
      uint64_t now = NowNs();
      if (now - last_pass_event_ns_[i] < static_cast<uint64_t>(cfg_.pass_event_ms) * 1000000ull) return true;
      last_pass_event_ns_[i] = now;
      break;
    }
    case RAS_EV_MCE:
      s.guest_mces++;
      break;
    case RAS_EV_WRONG:
      break;
    case RAS_EV_FATAL:
      s.state = kFatal;
      {
        std::lock_guard<std::mutex> lock(s.mu);
        s.error = "guest exception " + std::to_string(e.v[1]) + " at rip 0x" + std::to_string(e.v[2]);
      }
      go_on = false;
      break;
    case RAS_EV_BYE:
      s.passes = e.v[1];
      s.verified = e.v[2];
      s.wrong_bytes = e.v[3];
      s.state = kBye;
      go_on = false;
      break;
    default:
      break;
  }
  Post(std::move(e));
  return go_on;
}

}  // namespace ras_vmm

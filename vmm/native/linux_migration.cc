// linux_migration: the Linux machine's side of a migration (vmm/src/migration): its userspace
// devices in the stream (the UART, the control port, the frames the guest was told of) and, once
// restored, the machine checks its guest was owed (TellUntold). The vCPU, LAPIC, irqchip, PIT and
// clock state is vcpu_state.cc's.
#include <string.h>

#include "linux_vm.h"
#include "vcpu_state.h"
#include "vcpu_thread.h"

namespace ras_vmm {

void LinuxMachine::SaveDevices(std::vector<uint8_t>* out) {
  std::string uart;
  {
    std::lock_guard<std::mutex> lock(serial_mu_);
    uart = serial_->Save();
  }
  state::PutRecord(out, state::kSerial, uart.data(), uart.size());
  uint8_t control = control_.load();
  state::PutRecord(out, state::kControl, &control, 1);
  std::set<uint64_t> told;
  {
    std::lock_guard<std::mutex> lock(lost_mu_);
    told = injected_frames_;
  }
  {
    std::lock_guard<std::mutex> lock(req_mu_);
    for (const Request& q : requests_) told.erase(q.gpa);
  }
  for (int i = 0; i < vcpus(); i++)
    for (uint64_t g : mce_.DeferredFrames(i)) told.erase(g);
  std::vector<uint64_t> frames(told.begin(), told.end());
  state::PutRecord(out, state::kInjectedFrames, frames.data(), frames.size() * sizeof(uint64_t));
}

bool LinuxMachine::RestoreDevices(const uint8_t* data, size_t len, std::string* err) {
  const uint8_t* p;
  uint32_t n;
  if (!state::FindRecord(data, len, state::kSerial, &p, &n)) {
    *err = "state: no serial UART record (not a Linux VM's state)";
    return false;
  }
  std::string uart(reinterpret_cast<const char*>(p), n);
  const uint8_t* c;
  uint32_t cn;
  const uint8_t* f;
  uint32_t fn;
  if (!state::FindRecord(data, len, state::kControl, &c, &cn) || cn != 1 ||
      !state::FindRecord(data, len, state::kInjectedFrames, &f, &fn) || fn % sizeof(uint64_t)) {
    *err = "state: no valid control-port or injected-frames record";
    return false;
  }
  {
    std::lock_guard<std::mutex> lock(serial_mu_);
    if (!serial_->Restore(uart)) {
      *err = "state: a serial UART record of " + std::to_string(n) + " bytes";
      return false;
    }
  }
  control_ = c[0];
  std::lock_guard<std::mutex> lock(lost_mu_);
  for (uint32_t k = 0; k < fn / sizeof(uint64_t); k++) {
    uint64_t g;
    memcpy(&g, f + k * sizeof g, sizeof g);
    injected_frames_.insert(g);
  }
  return true;
}

// A restored VM (a migration destination, a snapshot): each 4 KiB frame lost before it runs here
// (imported from the source's manifest) that its guest was never told of gets one action-optional
// machine check on vCPU 0's first exit: a loss while the source was stopped, or one whose AO was
// still queued or deferred at the pause. Once only: a resume after a failed hand-over finds them
// told. (A whole lost huge page has no 4 KiB frame to name, as in OnEfault.)
void LinuxMachine::TellUntold() {
  if (!cfg_.api) return;
  uint64_t cursor = 0;
  hugetlb_ras_lost buf[64];
  int n;
  std::vector<Request> untold;
  {
    std::lock_guard<std::mutex> lock(lost_mu_);
    while ((n = cfg_.api->next_lost(&cursor, buf, 64)) > 0)
      for (int k = 0; k < n; k++)
        if (buf[k].size <= 4096 && !injected_frames_.count(buf[k].gpa & ~0xfffull)) untold.push_back({buf[k].gpa & ~0xfffull, false, kPathNextLost});
  }
  std::lock_guard<std::mutex> lock(req_mu_);
  requests_.insert(requests_.end(), untold.begin(), untold.end());
}

}  // namespace ras_vmm

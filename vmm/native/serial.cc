#include "serial.h"

namespace ras_vmm {

namespace {
constexpr uint16_t kThr = 0, kLcr = 3, kLsr = 5;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kLsrIdle = 0x60;  // THRE | TEMT
constexpr size_t kMaxLine = 4096;
}  // namespace

void Serial8250::Out(uint16_t port, uint8_t v) {
  uint16_t reg = port - kBase;
  if (reg == kLcr) {
    lcr_ = v;
    return;
  }
  if (reg != kThr || (lcr_ & kLcrDlab)) return;  // divisor latch, IER, FCR, MCR, scratch
  bytes_++;
  if (v == '\n') {
    Flush();
    return;
  }
  if (v == '\r') return;
  line_.push_back(static_cast<char>(v));
  if (line_.size() >= kMaxLine) Flush();
}

uint8_t Serial8250::In(uint16_t port) const {
  uint16_t reg = port - kBase;
  if (reg == kLsr) return kLsrIdle;
  if (reg == kLcr) return lcr_;
  return 0;
}

void Serial8250::Flush() {
  if (line_.empty()) return;
  std::string l;
  l.swap(line_);
  sink_(std::move(l));
}

}  // namespace ras_vmm

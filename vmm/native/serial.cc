#include "serial.h"

#include <string.h>

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

std::string Serial8250::Save() const {
  std::string b(1 + sizeof bytes_, '\0');
  b[0] = static_cast<char>(lcr_);
  memcpy(&b[1], &bytes_, sizeof bytes_);
  return b + line_;
}

bool Serial8250::Restore(const std::string& b) {
  if (b.size() < 1 + sizeof bytes_ || b.size() > 1 + sizeof bytes_ + kMaxLine) return false;
  lcr_ = static_cast<uint8_t>(b[0]);
  memcpy(&bytes_, &b[1], sizeof bytes_);
  line_ = b.substr(1 + sizeof bytes_);
  return true;
}

void Serial8250::Flush() {
  if (line_.empty()) return;
  std::string l;
  l.swap(line_);
  sink_(std::move(l));
}

}  // namespace ras_vmm

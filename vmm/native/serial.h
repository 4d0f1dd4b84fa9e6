// serial: the smallest 8250 UART at 0x3f8 a Linux guest's early console needs. Transmit only:
// every byte written to THR (with DLAB clear) ends up in a line handed to the sink; LSR always
// reads "transmitter empty" (0x60); the other registers read 0, so the kernel's 8250 driver finds
// no UART and keeps the boot console (earlyprintk=serial,ttyS0,115200 keep_bootcon).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace ras_vmm {

class Serial8250 {
 public:
  static constexpr uint16_t kBase = 0x3f8;
  using LineSink = std::function<void(std::string&&)>;
  explicit Serial8250(LineSink sink) : sink_(std::move(sink)) {}
  static bool Claims(uint16_t port) { return port >= kBase && port < kBase + 8; }
  void Out(uint16_t port, uint8_t v);
  uint8_t In(uint16_t port) const;
  void Flush();  // hands a partial last line to the sink
  uint64_t bytes() const { return bytes_; }
  // The UART's state for a migration stream: LCR, the byte count and the line not yet handed over.
  std::string Save() const;
  bool Restore(const std::string& b);

 private:
  LineSink sink_;
  std::string line_;
  uint8_t lcr_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace ras_vmm

#include "linux_mptable.h"

#include <string.h>

namespace ras_vmm::linux_boot {

namespace {

constexpr uint32_t kLapic = 0xfee00000, kIoapic = 0xfec00000;
constexpr int kIrqMax = 23;

uint8_t Checksum(const uint8_t* p, size_t n) {
  uint8_t sum = 0;
  for (size_t k = 0; k < n; k++) sum = static_cast<uint8_t>(sum + p[k]);
  return static_cast<uint8_t>(-sum);
}

template <typename T>
void Put(uint8_t* p, size_t off, T v) {
  memcpy(p + off, &v, sizeof v);
}

}  // namespace

size_t WriteMpTable(uint8_t* out, int vcpus) {
  constexpr size_t kMpf = 16, kHeader = 44, kCpu = 20, kSmall = 8;
  size_t table = kHeader + vcpus * kCpu + kSmall /*bus*/ + kSmall /*ioapic*/ + (kIrqMax + 1) * kSmall + 2 * kSmall;
  if (vcpus < 1 || vcpus > 254 || kMpf + table > kMpTableMax) return 0;
  memset(out, 0, kMpf + table);
  // Floating pointer: "_MP_", physical address of the config table, length 1 (16 bytes), spec 1.4.
  uint8_t* mpf = out;
  memcpy(mpf, "_MP_", 4);
  Put<uint32_t>(mpf, 4, static_cast<uint32_t>(kMpTableGpa + kMpf));
  mpf[8] = 1;
  mpf[9] = 4;
  mpf[10] = Checksum(mpf, kMpf);
  // Config table header.
  uint8_t* h = out + kMpf;
  memcpy(h, "PCMP", 4);
  Put<uint16_t>(h, 4, static_cast<uint16_t>(table));
  h[6] = 4;
  memcpy(h + 8, "RAS-VMM ", 8);
  memcpy(h + 16, "000000000000", 12);
  uint16_t entries = 0;
  Put<uint32_t>(h, 36, kLapic);
  uint8_t* e = h + kHeader;
  for (int c = 0; c < vcpus; c++, e += kCpu, entries++) {
    e[0] = 0;                                        // processor
    e[1] = static_cast<uint8_t>(c);                  // local APIC id
    e[2] = 0x14;                                     // local APIC version
    e[3] = static_cast<uint8_t>(1 | (c == 0 ? 2 : 0));  // enabled, BSP
    Put<uint32_t>(e, 4, 0x600);                      // signature: family 6
    Put<uint32_t>(e, 8, 0x201);                      // features: FPU, APIC
  }
  e[0] = 1;  // bus 0: ISA
  e[1] = 0;
  memcpy(e + 2, "ISA   ", 6);
  e += kSmall, entries++;
  uint8_t ioapic_id = static_cast<uint8_t>(vcpus);
  e[0] = 2;  // IOAPIC
  e[1] = ioapic_id;
  e[2] = 0x11;
  e[3] = 1;  // enabled
  Put<uint32_t>(e, 4, kIoapic);
  e += kSmall, entries++;
  for (int irq = 0; irq <= kIrqMax; irq++, e += kSmall, entries++) {
    e[0] = 3;  // I/O interrupt: mp_INT, conforming polarity and trigger
    e[1] = 0;
    e[4] = 0;  // bus ISA
    e[5] = static_cast<uint8_t>(irq);
    e[6] = ioapic_id;
    e[7] = static_cast<uint8_t>(irq);
  }
  e[0] = 4;  // local interrupt: ExtINT to LINT0 of the BSP
  e[1] = 3;
  e[6] = 0;
  e[7] = 0;
  e += kSmall, entries++;
  e[0] = 4;  // NMI to LINT1 of every local APIC
  e[1] = 1;
  e[6] = 0xff;
  e[7] = 1;
  entries++;
  Put<uint16_t>(h, 34, entries);
  h[7] = Checksum(h, table);
  return kMpf + table;
}

}  // namespace ras_vmm::linux_boot

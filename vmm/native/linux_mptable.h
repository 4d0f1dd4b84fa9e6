// linux_mptable: the Intel MultiProcessor Specification 1.4 table a Linux guest booted with
// acpi=off reads to find its CPUs, IOAPIC and ISA interrupt routing (Firecracker's mptable.rs
// layout): a floating pointer and a config table with one processor entry per vCPU (APIC id = the
// vCPU index, vCPU 0 the BSP), the ISA bus, the in-kernel IOAPIC (id = vcpus, at 0xfec00000),
// ISA IRQ i -> IOAPIC pin i for 0..23, LINT0 ExtINT and LINT1 NMI. Linux scans the last KiB of base
// memory (639 KiB), where it goes: GPA 0x9fc00, which the e820 map reports reserved.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ras_vmm::linux_boot {

constexpr uint64_t kMpTableGpa = 0x9fc00;
constexpr size_t kMpTableMax = 0x400;

// Writes the table for `vcpus` CPUs at `out` (the host address of kMpTableGpa), at most
// kMpTableMax bytes. Returns the bytes written, or 0 when it does not fit (too many vCPUs).
size_t WriteMpTable(uint8_t* out, int vcpus);

}  // namespace ras_vmm::linux_boot

// Lab only (lab/guest/init.sh starts it before the cases, stops it after them).
//
// Holds two idle KVM VMs for the whole run: one without an in-kernel irqchip and one with it, each
// with one vCPU that never runs. The kernel flips some static keys when the first VM or vCPU of a
// kind is created and back when the last goes (preempt notifiers, kvm_has_noapic_vcpu, the LAPIC's
// apic_sw_disabled), and flipping one patches kernel text. Under QEMU's multi-threaded TCG that
// patching now and then left a CPU on a stale int3 (Oops: int3 in __schedule), which killed the lab
// kernel in the middle of a KVM case. With these held, the keys stay on and the cases' VMs patch
// nothing. It changes nothing a case checks: no memory slots, no guest code, no pages.
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int vm_with_vcpu(int kvm, int irqchip) {
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return perror("kvm-hold: KVM_CREATE_VM"), -1;
  if (irqchip && ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) return perror("kvm-hold: KVM_CREATE_IRQCHIP"), -1;
  if (ioctl(vm, KVM_CREATE_VCPU, 0) < 0) return perror("kvm-hold: KVM_CREATE_VCPU"), -1;
  return vm;
}

int main(void) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return perror("kvm-hold: /dev/kvm"), 1;
  if (vm_with_vcpu(kvm, 0) < 0 || vm_with_vcpu(kvm, 1) < 0) return 1;
  printf("lab: kvm-hold: two idle VMs held (KVM's static keys stay on: no kernel text patching per case)\n");
  fflush(stdout);
  for (;;) pause();
}

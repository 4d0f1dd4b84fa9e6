# Two addons: the engine (hugetlb_ras) and the benchmark's reference points (hugetlb_ras_bench).
# Shared settings are in common.gypi, which node-gyp includes by itself.
{
  "targets": [
    {
      "target_name": "hugetlb_ras",
      "sources": [
        "native/addon.cc",
        "native/capture/chain.cc",
        "native/capture/stale.cc",
        "native/capture/signals.cc",
        "native/capture/memory_error.cc",
        "native/capture/wait.cc",
        "native/capture/access.cc",
        "native/capi/capi.cc",
        "native/state/page_state.cc",
        "native/state/region.cc",
        "native/state/reports.cc",
        "native/state/sys.cc",
        "native/state/thread_slots.cc",
        "native/lanes/dropped.cc",
        "native/lanes/lanes.cc",
        "native/lanes/process.cc",
        "native/split/fileio.cc",
        "native/split/handover.cc",
        "native/split/lazy.cc",
        "native/split/lazy_close.cc",
        "native/split/lazy_fill.cc",
        "native/split/lazy_front.cc",
        "native/split/lazy_uffd.cc",
        "native/split/mapping.cc",
        "native/split/numa.cc",
        "native/split/props.cc",
        "native/split/props_lock.cc",
        "native/split/recovery.cc",
        "native/split/reserve.cc",
        "native/split/swap_uffd.cc",
        "native/split/uffd.cc",
        "native/tojs/events.cc",
        "native/binding/access.cc",
        "native/binding/args.cc",
        "native/binding/constants.cc",
        "native/binding/control.cc",
        "native/binding/drain.cc",
        "native/binding/errors.cc",
        "native/binding/handover.cc",
        "native/binding/import.cc",
        "native/binding/inject.cc",
        "native/binding/lazy.cc",
        "native/binding/memprops.cc",
        "native/binding/lifecycle.cc",
        "native/binding/lock.cc",
        "native/binding/recovery_reset.cc",
        "native/binding/regions.cc",
        "native/binding/replay.cc",
        "native/binding/testing.cc",
        "native/binding/testing_windows.cc",
        "native/simulate/simulate.cc",
        "native/testing/bookkeeping.cc",
        "native/testing/capi_calls.cc",
        "native/testing/foreign_thread.cc",
        "native/testing/stray.cc",
        "native/testing/mapcount.cc",
        "native/testing/memlock.cc",
        "native/testing/prev_handler.cc",
        "native/testing/swap_hold.cc",
        "native/testing/unmap_window.cc",
        "native/testing/pattern.cc",
        "native/testing/vcpu.cc"
      ]
    },
    {
      "target_name": "hugetlb_ras_bench",
      "sources": [
        "native/bench/baseline.cc",
        "native/bench/guarded_copy.cc",
        "native/binding/errors.cc",
        "native/state/sys.cc"
      ]
    },
    {
      # The reference VMM (vmm/): its KVM module and, by the action, its guest's flat binary.
      # NAPI_VERSION, -Wall -Wextra, hidden visibility and C++17 come from common.gypi.
      "target_name": "ras_vmm",
      "sources": [
        "vmm/native/addon.cc",
        "vmm/native/dirty_log.cc",
        "vmm/native/kvm_vm.cc",
        "vmm/native/linux_addon.cc",
        "vmm/native/linux_boot.cc",
        "vmm/native/linux_memory.cc",
        "vmm/native/linux_mptable.cc",
        "vmm/native/linux_vm.cc",
        "vmm/native/linux_migration.cc",
        "vmm/native/mce.cc",
        "vmm/native/mce_delivery.cc",
        "vmm/native/ram_exit.cc",
        "vmm/native/migration_addon.cc",
        "vmm/native/napi_util.cc",
        "vmm/native/serial.cc",
        "vmm/native/sigbus.cc",
        "vmm/native/slot_hole.cc",
        "vmm/native/testing_addon.cc",
        "vmm/native/testing_mce.cc",
        "vmm/native/vcpu_loop.cc",
        "vmm/native/vcpu_machine.cc",
        "vmm/native/vcpu_memory.cc",
        "vmm/native/vcpu_state.cc",
        "vmm/native/vcpu_thread.cc"
      ],
      "include_dirs": ["vmm/guest"],
      "actions": [
        {
          "action_name": "ras_vmm_guest",
          "inputs": ["vmm/guest/build.sh", "vmm/guest/guest.c", "vmm/guest/entry.S", "vmm/guest/guest.ld", "vmm/guest/proto.h"],
          "outputs": ["<(PRODUCT_DIR)/ras_vmm_guest.bin"],
          "action": ["bash", "vmm/guest/build.sh", "<(PRODUCT_DIR)/ras_vmm_guest.bin"]
        }
      ]
    }
  ]
}

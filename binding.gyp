{
  "targets": [
    {
      "target_name": "hugetlb_ras",
      "sources": [
        "native/addon.cc",
        "native/access.cc",
        "native/capi.cc",
        "native/baseline.cc",
        "native/engine.cc",
        "native/errors.cc",
        "native/fileio.cc",
        "native/mapping.cc",
        "native/recovery.cc",
        "native/registry.cc",
        "native/signals.cc",
        "native/simulate.cc",
        "native/uffd.cc",
        "native/testing/foreign_thread.cc",
        "native/vcpu.cc",
        "native/worker.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "include"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-fvisibility=hidden", "-O2"],
      "cflags_cc": ["-Wall", "-Wextra", "-fvisibility=hidden", "-std=c++17", "-O2", "-fno-exceptions"],
      "cflags!": ["-fno-exceptions"],
      "ldflags": ["-pthread"]
    },
    {
      "target_name": "ras_vmm",
      "sources": [
        "vmm/native/addon.cc",
        "vmm/native/kvm_vm.cc",
        "vmm/native/linux_addon.cc",
        "vmm/native/linux_boot.cc",
        "vmm/native/linux_vm.cc",
        "vmm/native/mce.cc",
        "vmm/native/serial.cc",
        "vmm/native/sigbus.cc",
        "vmm/native/vcpu_loop.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "include", "vmm/guest"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-fvisibility=hidden", "-O2"],
      "cflags_cc": ["-Wall", "-Wextra", "-fvisibility=hidden", "-std=c++17", "-O2", "-fno-exceptions"],
      "cflags!": ["-fno-exceptions"],
      "ldflags": ["-pthread"],
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

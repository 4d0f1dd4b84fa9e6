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
        "native/capture/access.cc",
        "native/capi/capi.cc",
        "native/state/page_state.cc",
        "native/state/region.cc",
        "native/state/reports.cc",
        "native/state/sys.cc",
        "native/state/thread_slots.cc",
        "native/lanes/lanes.cc",
        "native/split/fileio.cc",
        "native/split/lazy.cc",
        "native/split/lazy_fill.cc",
        "native/split/lazy_uffd.cc",
        "native/split/mapping.cc",
        "native/split/recovery.cc",
        "native/split/reserve.cc",
        "native/split/uffd.cc",
        "native/tojs/events.cc",
        "native/binding/access.cc",
        "native/binding/args.cc",
        "native/binding/constants.cc",
        "native/binding/control.cc",
        "native/binding/errors.cc",
        "native/binding/inject.cc",
        "native/binding/lazy.cc",
        "native/binding/lifecycle.cc",
        "native/binding/recovery_reset.cc",
        "native/binding/regions.cc",
        "native/binding/testing.cc",
        "native/simulate/simulate.cc",
        "native/testing/foreign_thread.cc",
        "native/testing/pattern.cc",
        "native/testing/vcpu.cc"
      ]
    },
    {
      "target_name": "hugetlb_ras_bench",
      "sources": [
        "native/bench/baseline.cc",
        "native/binding/errors.cc",
        "native/state/sys.cc"
      ]
    }
  ]
}

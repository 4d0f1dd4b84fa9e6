// Regions: map a region of a hugetlbfs file (its policy armed before it goes live), unmap it.
#include <unistd.h>

#include <string>

#include "binding/args.h"
#include "binding/binding.h"
#include "binding/errors.h"
#include "split/fileio.h"
#include "split/mapping.h"
#include "state/state.h"

namespace ras::binding {

namespace {

uint32_t g_next_region_id = 1;

Napi::Value MapRegion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t size, offset;
  uint64_t reason, guard;
  bool lossless = false;
  if (info.Length() < 6 || !info[0].IsString() || !Uint(env, info[1], "size", &size) ||
      !Uint(env, info[2], "offset", &offset) || !Uint(env, info[3], "refuseReason", &reason) ||
      !Uint(env, info[4], "guard", &guard) || !info[5].IsBigInt() || guard < HUGETLB_RAS_GUARD_UFFD ||
      guard > HUGETLB_RAS_GUARD_FAULT) {
    if (!env.IsExceptionPending())
      errors::Code(env, "ERR_INVALID_ARG", "mapRegion(path, size, offset, refuseReason, guard, guestPhysAddr)")
          .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint64_t guest_phys = info[5].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) {
    errors::Code(env, "ERR_OUT_OF_RANGE", "guestPhysAddr must fit 64 bits").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (!EngineOpen()) {
    errors::Code(env, "ERR_ENGINE_CLOSED", "the engine is closed").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  fileio::FileInfo fi;
  fileio::Failure ff;
  if (size == 0 || !fileio::OpenHugetlbFile(path, offset + size, &fi, &ff)) {
    if (size == 0)
      errors::Code(env, "ERR_SIZE_ALIGNMENT", "size must be a positive multiple of the huge page size").ThrowAsJavaScriptException();
    else if (ff.code)
      errors::Code(env, ff.code, path + " is not a regular file on hugetlbfs").ThrowAsJavaScriptException();
    else
      errors::Sys(env, ff.err, ff.syscall, path.c_str()).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto fail = [&](Napi::Error e) {
    // Leave an existing file as it was: no size we gave it for this failed call.
    if (!fi.created && fi.file_size > fi.original_size) {
      int ignored = ftruncate(fi.fd, static_cast<off_t>(fi.original_size));
      (void)ignored;
    }
    close(fi.fd);
    if (fi.created) unlink(path.c_str());
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  };
  if (size % fi.huge_size != 0 || offset % fi.huge_size != 0)
    return fail(errors::Code(env, "ERR_SIZE_ALIGNMENT", "size and offset must be multiples of the huge page size (" +
                                                            std::to_string(fi.huge_size) + ")"));
  if (FreeRegionSlots() == 0) return fail(errors::Code(env, "ERR_TOO_MANY_REGIONS", "at most 64 regions"));
  mapping::Failure mf;
  void* addr = mapping::MapShared(fi.fd, size, offset, &mf);
  if (!addr) return fail(errors::Sys(env, mf.err, mf.syscall, path.c_str()));
  RegionSpec spec;
  spec.id = g_next_region_id++;
  spec.start = reinterpret_cast<uintptr_t>(addr);
  spec.size = size;
  spec.huge_size = fi.huge_size;
  spec.fd = fi.fd;
  spec.dev = fi.dev;
  spec.ino = fi.ino;
  spec.file_offset = offset;
  spec.guest_phys = guest_phys;
  // The policy is armed before the region goes live: a report can never find it undecided.
  spec.refuse_reason = static_cast<uint32_t>(reason);
  spec.guard = static_cast<int>(guard);
  // Complete before it is published, and never changed after (state/region.h).
  Region* desc = new Region(spec);
  if (!desc->ok()) {
    delete desc;
    mapping::Unmap(addr, size);
    return fail(errors::Sys(env, ENOMEM, "mmap", "the region's bookkeeping"));
  }
  if (PublishRegion(desc) < 0) {  // cannot happen: only this thread publishes, and a slot was free
    delete desc;
    mapping::Unmap(addr, size);
    return fail(errors::Code(env, "ERR_TOO_MANY_REGIONS", "at most 64 regions"));
  }
  Region& r = *desc;
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", r.id);
  o.Set("address", Napi::BigInt::New(env, static_cast<uint64_t>(r.start)));
  o.Set("hugePageSize", static_cast<double>(fi.huge_size));
  o.Set("created", fi.created);
  o.Set("originalSize", static_cast<double>(fi.original_size));
  o.Set("dev", static_cast<double>(fi.dev));
  o.Set("ino", static_cast<double>(fi.ino));
  o.Set("bookkeepingBytes", static_cast<double>(r.BookkeepingBytes()));
  return o;
}

// unmapRegion(id) -> { states: Uint8Array, lost: number[] }: the region's pages as they were when it
// left the capture path (binding.h FinalView), for close() to record what came after its drain.
Napi::Value UnmapRegion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  if (!r) return env.Undefined();
  FinalView v;
  RemoveRegion(*r, &v);
  Napi::Object o = Napi::Object::New(env);
  Napi::Uint8Array states = Napi::Uint8Array::New(env, v.states.size());
  for (size_t i = 0; i < v.states.size(); i++) states[i] = v.states[i];
  Napi::Array lost = Napi::Array::New(env, v.lost.size());
  for (size_t i = 0; i < v.lost.size(); i++) lost.Set(static_cast<uint32_t>(i), static_cast<double>(v.lost[i]));
  o.Set("states", states);
  o.Set("lost", lost);
  return o;
}

}  // namespace

void RegisterRegions(Napi::Env env, Napi::Object exports) {
  exports.Set("mapRegion", Napi::Function::New(env, MapRegion));
  exports.Set("unmapRegion", Napi::Function::New(env, UnmapRegion));
}

}  // namespace ras::binding

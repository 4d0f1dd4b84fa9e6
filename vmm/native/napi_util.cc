#include "napi_util.h"

#include <cstddef>

#include <string>

namespace ras_vmm {

uint64_t U64(const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = true;
    uint64_t x = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) NAPI_THROW(Napi::RangeError::New(v.Env(), std::string(what) + " out of range"), 0);
    return x;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d < 0 || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d)))
      NAPI_THROW(Napi::RangeError::New(v.Env(), std::string(what) + " must be a non-negative integer"), 0);
    return static_cast<uint64_t>(d);
  }
  NAPI_THROW(Napi::TypeError::New(v.Env(), std::string(what) + " must be a bigint or a number"), 0);
}

std::vector<uint8_t> Bytes(const Napi::Value& v) {
  if (!v.IsBuffer()) return {};
  auto b = v.As<Napi::Buffer<uint8_t>>();
  return std::vector<uint8_t>(b.Data(), b.Data() + b.Length());
}

bool ApiTable(Napi::Env env, uint64_t api, const hugetlb_ras_api** out) {
  if (!api) return true;
  *out = reinterpret_cast<const hugetlb_ras_api*>(static_cast<uintptr_t>(api));
  // Version 1's members (check_hva, check_gpa, next_lost) at least; version 2's guarded copy is
  // used where the table has it (GuestCopy, vcpu_thread.h).
  if ((*out)->version < 1 || (*out)->size < offsetof(hugetlb_ras_api, next_lost) + sizeof(void*)) {
    Napi::Error::New(env, "the engine's native API table has an unknown version").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

std::vector<Slot> Slots(const Napi::Object& options) {
  std::vector<Slot> slots;
  Napi::Array sa = options.Get("slots").As<Napi::Array>();
  for (uint32_t k = 0; k < sa.Length(); k++) {
    Napi::Object s = sa.Get(k).As<Napi::Object>();
    Slot sl;
    sl.gpa = U64(s.Get("gpa"), "slot gpa");
    sl.size = U64(s.Get("size"), "slot size");
    sl.hva = reinterpret_cast<uint8_t*>(static_cast<uintptr_t>(U64(s.Get("hva"), "slot hva")));
    slots.push_back(sl);
  }
  return slots;
}

void DeliverEvents(Napi::Env env, Napi::Function cb, const std::vector<Event>& batch) {
  Napi::Array arr = Napi::Array::New(env, batch.size());
  for (size_t k = 0; k < batch.size(); k++) {
    const Event& e = batch[k];
    Napi::Object o = Napi::Object::New(env);
    o.Set("type", e.type);
    o.Set("cpu", e.cpu);
    Napi::Array v = Napi::Array::New(env, 8);
    for (uint32_t j = 0; j < 8; j++) v.Set(j, Big(env, e.v[j]));
    o.Set("v", v);
    if (!e.text.empty()) o.Set("text", e.text);
    arr.Set(static_cast<uint32_t>(k), o);
  }
  cb.Call({arr});
}

}  // namespace ras_vmm

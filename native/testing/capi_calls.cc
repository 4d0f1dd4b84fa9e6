// Test tool, the C API side of a stand-in VMM (foreign_thread.h): check, copy and next_lost called
// through the engine's table from a thread of their own, as a VMM's vCPU thread calls them.
#include "testing/foreign_thread.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <csetjmp>
#include <cstring>
#include <thread>
#include <vector>

#include "hugetlb_ras.h"
#include "state/sys.h"

namespace ras::testing {

namespace {

const hugetlb_ras_api* Api(const Napi::Value& v) {
  bool lossless;
  return reinterpret_cast<const hugetlb_ras_api*>(static_cast<uintptr_t>(v.As<Napi::BigInt>().Uint64Value(&lossless)));
}

Napi::Object StatusObject(Napi::Env env, int rc, const hugetlb_ras_status& st) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("rc", rc);
  o.Set("state", st.state);
  o.Set("guard", st.guard);
  o.Set("regionId", st.region_id);
  o.Set("wholeHugePage", st.whole_huge_page);
  o.Set("gpa", Napi::BigInt::New(env, st.gpa));
  o.Set("hva", Napi::BigInt::New(env, st.hva));
  o.Set("hugePageGpa", Napi::BigInt::New(env, st.huge_page_gpa));
  o.Set("hugePageSize", static_cast<double>(st.huge_page_size));
  o.Set("code", st.code);
  return o;
}

// capiCheck(api, 'hva' | 'gpa', address, timeoutMs), from a thread of its own (as a vCPU's).
Napi::Value CapiCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const hugetlb_ras_api* api = Api(info[0]);
  bool by_gpa = info[1].As<Napi::String>().Utf8Value() == "gpa";
  bool lossless;
  uint64_t a = info[2].As<Napi::BigInt>().Uint64Value(&lossless);
  int timeout = info[3].As<Napi::Number>().Int32Value();
  hugetlb_ras_status st;
  int rc = 0;
  std::thread t = SpawnThread([&] { rc = by_gpa ? api->check_gpa(a, timeout, &st) : api->check_hva(a, timeout, &st); });
  t.join();
  return StatusObject(env, rc, st);
}

// capiCopy(api, 'from' | 'to', gpa, lengthOrBuffer, timeoutMs), from a thread of its own:
// { rc, data (from), lost: frame indices whose bit is set }.
Napi::Value CapiCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const hugetlb_ras_api* api = Api(info[0]);
  bool to = info[1].As<Napi::String>().Utf8Value() == "to";
  bool lossless;
  uint64_t gpa = info[2].As<Napi::BigInt>().Uint64Value(&lossless);
  std::vector<char> buf;
  if (to) {
    Napi::Buffer<char> b = info[3].As<Napi::Buffer<char>>();
    buf.assign(b.Data(), b.Data() + b.Length());
  } else {
    buf.assign(static_cast<size_t>(info[3].As<Napi::Number>().Int64Value()), static_cast<char>(0xee));
  }
  int timeout = info[4].As<Napi::Number>().Int32Value();
  uint64_t frames = (((gpa & 4095) + buf.size() + 4095) / 4096);
  std::vector<uint64_t> bits(frames / 64 + 1, 0);
  int rc = 0;
  std::thread t = SpawnThread([&] {
    rc = to ? api->copy_to_guest(gpa, buf.data(), buf.size(), bits.data(), timeout)
            : api->copy_from_guest(gpa, buf.data(), buf.size(), bits.data(), timeout);
  });
  t.join();
  Napi::Object o = Napi::Object::New(env);
  o.Set("rc", rc);
  if (!to) o.Set("data", Napi::Buffer<char>::Copy(env, buf.data(), buf.size()));
  Napi::Array lost = Napi::Array::New(env);
  uint32_t n = 0;
  for (uint64_t i = 0; i < bits.size() * 64; i++)
    if (bits[i / 64] & (1ull << (i % 64))) lost.Set(n++, static_cast<double>(i));
  o.Set("lost", lost);
  return o;
}

Napi::Value CapiNextLost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const hugetlb_ras_api* api = Api(info[0]);
  bool lossless;
  uint64_t cursor = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  hugetlb_ras_lost out[64];
  int n = api->next_lost(&cursor, out, 64);
  Napi::Object o = Napi::Object::New(env);
  o.Set("cursor", Napi::BigInt::New(env, cursor));
  Napi::Array a = Napi::Array::New(env, n > 0 ? n : 0);
  for (int i = 0; i < n; i++) {
    Napi::Object x = Napi::Object::New(env);
    x.Set("gpa", Napi::BigInt::New(env, out[i].gpa));
    x.Set("hva", Napi::BigInt::New(env, out[i].hva));
    x.Set("size", static_cast<double>(out[i].size));
    x.Set("regionId", out[i].region_id);
    x.Set("code", out[i].code);
    a.Set(static_cast<uint32_t>(i), x);
  }
  o.Set("lost", a);
  o.Set("version", api->version);
  o.Set("size", api->size);
  return o;
}

}  // namespace

void RegisterCapiCalls(Napi::Env env, Napi::Object exports) {
  exports.Set("testCapiCheck", Napi::Function::New(env, CapiCheck));
  exports.Set("testCapiNextLost", Napi::Function::New(env, CapiNextLost));
  exports.Set("testCapiCopy", Napi::Function::New(env, CapiCopy));
}

}  // namespace ras::testing

#include "errors.h"

#include <cstring>
#include <string>

namespace ras::errors {

Napi::Error Sys(Napi::Env env, int err, const char* syscall, const char* what) {
  const char* name = strerrorname_np(err);
  std::string msg = std::string(name ? name : "EUNKNOWN") + ": " + strerror(err) + ", " + (syscall ? syscall : "?");
  if (what) msg += std::string(" (") + what + ")";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, name ? name : "EUNKNOWN"));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall ? syscall : "?"));
  return e;
}

Napi::Error Code(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

}  // namespace ras::errors

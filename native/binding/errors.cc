#include "binding/errors.h"

#include <cstring>
#include <string>

namespace ras::errors {

namespace {

struct EnvData {
  Napi::FunctionReference error_class;
};

// `syscall` null: a project error without errno/syscall.
Napi::Error Build(Napi::Env env, const char* code, const std::string& message, int err, const char* syscall) {
  EnvData* d = env.GetInstanceData<EnvData>();
  if (d && !d->error_class.IsEmpty()) {
    Napi::Object extra = Napi::Object::New(env);
    if (syscall) {
      extra.Set("errno", Napi::Number::New(env, -err));
      extra.Set("syscall", Napi::String::New(env, syscall));
    }
    Napi::Object e = d->error_class.New({Napi::String::New(env, code), Napi::String::New(env, message), extra});
    if (!env.IsExceptionPending() && !e.IsEmpty()) return Napi::Error(env, e);
    env.GetAndClearPendingException();  // the class's constructor threw: a plain error instead
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  if (syscall) {
    e.Set("errno", Napi::Number::New(env, -err));
    e.Set("syscall", Napi::String::New(env, syscall));
  }
  return e;
}

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    Code(env, "ERR_INVALID_ARG", "setErrorClass(class)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  env.GetInstanceData<EnvData>()->error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

}  // namespace

void InitEnv(Napi::Env env) { env.SetInstanceData(new EnvData()); }

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
}

Napi::Error Sys(Napi::Env env, int err, const char* syscall, const char* what) {
  const char* name = strerrorname_np(err);
  std::string msg = std::string(name ? name : "EUNKNOWN") + ": " + strerror(err) + ", " + (syscall ? syscall : "?");
  if (what) msg += std::string(" (") + what + ")";
  return Build(env, name ? name : "EUNKNOWN", msg, err, syscall ? syscall : "?");
}

Napi::Error Code(Napi::Env env, const char* code, const std::string& message) {
  return Build(env, code, message, 0, nullptr);
}

}  // namespace ras::errors

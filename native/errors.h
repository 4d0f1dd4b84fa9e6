// Node-style errors for JS: `code`, and for a failed syscall `errno` (negative, as Node's own) and
// `syscall`.
#pragma once

#include <napi.h>

namespace ras::errors {

Napi::Error Sys(Napi::Env env, int err, const char* syscall, const char* what = nullptr);
Napi::Error Code(Napi::Env env, const char* code, const std::string& message);

}  // namespace ras::errors

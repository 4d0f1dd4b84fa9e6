// Every error the addon throws is built as the package's error class (src/errors.ts RasError,
// handed over once with setErrorClass, as better-sqlite3 does with SqliteError):
// new RasError(code, message, extra). `code` is a project code (ERR_...) or, for a failed syscall,
// the errno name; a failed syscall's `extra` is { errno (negative, as Node's own), syscall }.
// Before setErrorClass (or if its constructor throws) the same properties go on a plain Error.
#pragma once

#include <napi.h>

#include <string>

namespace ras::errors {

void InitEnv(Napi::Env env);  // per-environment instance data; from the module's init
void Register(Napi::Env env, Napi::Object exports);  // setErrorClass(cls)

Napi::Error Sys(Napi::Env env, int err, const char* syscall, const char* what = nullptr);
Napi::Error Code(Napi::Env env, const char* code, const std::string& message);

}  // namespace ras::errors

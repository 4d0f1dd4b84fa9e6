// JS-facing calls of the engine (see engine.cc).
#pragma once

#include <napi.h>

namespace ras::engine {
void Register(Napi::Env env, Napi::Object exports);
}

#include "testing/prev_handler.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <string>

namespace ras::testing {

namespace {

std::atomic<int> g_calls{0};
std::atomic<int> g_usr1_blocked{-1};  // in the last call: was SIGUSR1 blocked (1) or not (0)

void Counting(int, siginfo_t*, void*) {
  sigset_t now;
  pthread_sigmask(SIG_BLOCK, nullptr, &now);
  g_usr1_blocked.store(sigismember(&now, SIGUSR1) ? 1 : 0);
  g_calls.fetch_add(1);
}

// installPrevSigbus('ign-siginfo' | 'ign' | 'resethand' | 'mask')
Napi::Value Install(const Napi::CallbackInfo& info) {
  std::string kind = info[0].As<Napi::String>().Utf8Value();
  struct sigaction sa = {};
  sigemptyset(&sa.sa_mask);
  if (kind == "ign-siginfo") {
    // What a careless caller writes: SIG_IGN in the sa_sigaction member, with SA_SIGINFO.
    sa.sa_flags = SA_SIGINFO;
    sa.sa_handler = SIG_IGN;
  } else if (kind == "ign") {
    sa.sa_handler = SIG_IGN;
  } else if (kind == "resethand") {
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sa.sa_sigaction = Counting;
  } else {  // "mask"
    sa.sa_flags = SA_SIGINFO;
    sa.sa_sigaction = Counting;
    sigaddset(&sa.sa_mask, SIGUSR1);
  }
  sigaction(SIGBUS, &sa, nullptr);
  return info.Env().Undefined();
}

Napi::Value Calls(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("calls", g_calls.load());
  o.Set("usr1Blocked", g_usr1_blocked.load());
  return o;
}

}  // namespace

void RegisterPrevHandler(Napi::Env env, Napi::Object exports) {
  exports.Set("testInstallPrevSigbus", Napi::Function::New(env, Install));
  exports.Set("testPrevSigbusCalls", Napi::Function::New(env, Calls));
}

}  // namespace ras::testing

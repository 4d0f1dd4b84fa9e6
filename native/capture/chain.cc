#include "capture/chain.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "state/sys.h"

namespace ras::signals {

struct sigaction g_prev_bus;
struct sigaction g_prev_segv;

namespace {

// Die of `sig` exactly as without us. The signal is blocked while we run, so the re-sent one is
// delivered (and kills) as soon as the handler returns.
void DieOf(int sig) {
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  syscall(SYS_tgkill, getpid(), Gettid(), sig);
}

}  // namespace

// Hand a signal that is not ours to the handler installed before us, as the kernel would have:
// the original siginfo and ucontext, its sa_mask (plus the signal unless SA_NODEFER) blocked while
// it runs, and SA_RESETHAND honoured.
void Chain(int sig, siginfo_t* si, void* uc) {
  struct sigaction* prev = sig == SIGBUS ? &g_prev_bus : &g_prev_segv;
  // sa_handler and sa_sigaction share storage: SIG_DFL / SIG_IGN are those values either way.
  if (prev->sa_handler == SIG_DFL) {
    DieOf(sig);
    return;
  }
  if (prev->sa_handler == SIG_IGN) {
    // The kernel does not let a fault be ignored: it kills. A signal somebody sent is ignored.
    if (si && si->si_code > 0) DieOf(sig);
    return;
  }
  sigset_t mask, old;
  mask = prev->sa_mask;
  if (!(prev->sa_flags & SA_NODEFER)) sigaddset(&mask, sig);
  pthread_sigmask(SIG_BLOCK, &mask, &old);
  struct sigaction call = *prev;
  if (prev->sa_flags & SA_RESETHAND) {
    // One-shot: the next one takes the default action, as the kernel resets it before the call.
    prev->sa_handler = SIG_DFL;
    prev->sa_flags &= ~SA_SIGINFO;
  }
  if (call.sa_flags & SA_SIGINFO)
    call.sa_sigaction(sig, si, uc);
  else
    call.sa_handler(sig);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace ras::signals

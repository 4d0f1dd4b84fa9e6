#include "capture/chain.h"

#include <pthread.h>
#include <signal.h>
#include <ucontext.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "state/sys.h"

namespace ras::signals {

struct sigaction g_prev_bus;
struct sigaction g_prev_segv;

namespace {

// Die of `sig` exactly as without us. The signal is blocked while we run, so the re-sent one is
// delivered (and kills) as soon as the handler returns: the mask the return restores (the
// interrupted context's) must not block it, or the thread would go on (or fault again) instead.
void DieOf(int sig, void* uc) {
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  if (uc) sigdelset(&static_cast<ucontext_t*>(uc)->uc_sigmask, sig);
  syscall(SYS_tgkill, getpid(), Gettid(), sig);
}

}  // namespace

// Hand a signal that is not ours to the handler installed before us, as the kernel would have:
// the original siginfo and ucontext, the interrupted context's mask plus its sa_mask (plus the
// signal unless SA_NODEFER) blocked while it runs, and SA_RESETHAND honoured. (Our handlers block
// each other's signal; the previous handler runs with the mask the kernel would have given it.)
void Chain(int sig, siginfo_t* si, void* uc) {
  struct sigaction* prev = sig == SIGBUS ? &g_prev_bus : &g_prev_segv;
  // sa_handler and sa_sigaction share storage: SIG_DFL / SIG_IGN are those values either way.
  if (prev->sa_handler == SIG_DFL) {
    DieOf(sig, uc);
    return;
  }
  if (prev->sa_handler == SIG_IGN) {
    // The kernel does not let a fault be ignored: it kills. A signal somebody sent is ignored.
    if (si && si->si_code > 0) DieOf(sig, uc);
    return;
  }
  sigset_t mask, old;
  if (uc) {
    mask = static_cast<ucontext_t*>(uc)->uc_sigmask;
    for (int s = 1; s < NSIG; s++)
      if (sigismember(&prev->sa_mask, s) == 1) sigaddset(&mask, s);
  } else {
    pthread_sigmask(SIG_BLOCK, nullptr, &mask);
    sigorset(&mask, &mask, &prev->sa_mask);
  }
  if (!(prev->sa_flags & SA_NODEFER)) sigaddset(&mask, sig);
  pthread_sigmask(SIG_SETMASK, &mask, &old);
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

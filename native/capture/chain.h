// Chaining: a SIGBUS or SIGSEGV that is not ours goes to the handler installed before us, exactly
// as the kernel would have delivered it. Async-signal-safe, like everything the handlers call.
#pragma once

#include <signal.h>

namespace ras::signals {

// The handlers before ours (saved by Install(), put back by Uninstall()).
extern struct sigaction g_prev_bus;
extern struct sigaction g_prev_segv;

void Chain(int sig, siginfo_t* si, void* uc);

}  // namespace ras::signals

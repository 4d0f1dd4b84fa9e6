// The shared lock-free state, all of it: what the signal handlers, the recovery lanes, the JS
// thread and the vCPU threads share. Everything is fixed-size so a signal handler may use it.
#pragma once

#include "state/page_state.h"
#include "state/region.h"
#include "state/reports.h"
#include "state/sys.h"
#include "state/thread_slots.h"

// Kernel constants the project needs but older libc headers may lack, in one place. Values are the
// kernel's ABI (include/uapi/...), so defining them here is safe on any libc.
#pragma once

#include <errno.h>
#include <signal.h>
#include <sys/mman.h>

#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4  // memory error consumed: the access faulted (action required)
#endif
#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5  // memory error found, nothing consumed it yet (action optional)
#endif
#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux >= 5.14
#endif
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102  // Linux >= 6.13: guard PTE markers, no VMA split, kept by mremap
#endif
#ifndef EHWPOISON
#define EHWPOISON 133
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

// Kernel constants the TypeScript side needs (the addon has its own copies: keep them in step).

/** statfs(2) f_type of hugetlbfs. */
export const HUGETLBFS_MAGIC = 0x958458f6;
/** The base page size: what a split huge page is made of, and the unit of loss. */
export const SUBPAGE = 4096;
export const SIGBUS = 7;
/** si_code of a memory-error SIGBUS: action required (an access consumed it) / optional (found asynchronously). */
export const BUS_MCEERR_AR = 4;
export const BUS_MCEERR_AO = 5;

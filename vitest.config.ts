import { defineConfig } from 'vitest/config';

// Native addons with signal handlers are not safe in vitest's worker-thread pool: use forks.
export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});

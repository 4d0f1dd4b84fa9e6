// Migration and snapshots of the reference VMM (vmm/README.md, "Migration").
export * from './stream';
export * from './ram';
export * from './lost';
export * from './source';
export * from './destination';
export * from './live';

// The reference VMM's public face: the driver, the scenario runner and the demo.
export { ReferenceVmm, defaultRegions, kvmAvailable, frameOf, type ReferenceVmmOptions, type VmmRegionSpec, type VmmReport, type GuestMce, type Injection, type Stall } from './vmm';
export { runScenario, toJson, type ScenarioOptions, type ScenarioResult, type PoisonTarget } from './scenario';
export { runKvmDemo, type KvmDemoOptions, type KvmDemoResult } from './demo';

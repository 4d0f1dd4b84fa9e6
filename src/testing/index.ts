// `hugetlb-ras/testing`: the tools to exercise the engine without a VMM: native vCPU load threads and a
// deterministic memory pattern to fill and verify a region with.
export { startVcpuLoad, type VcpuLoad, type VcpuLoadOptions, type VcpuLoadReport, type VcpuStall, type VcpuMceReport } from './vcpu';
export { fillPattern, verifyPattern, type PatternCheck } from './pattern';
export { poisonBackingFile } from './file-poison';

export { UserspaceVxlanBackend } from './vxlan';
export type { UserspaceVxlanOptions, UserspaceVxlanLeaseData } from './vxlan';
export { AutoVxlanBackend } from './auto';
export { PumpDevice, deviceKindProblem } from './device';
export type { PumpDeviceNetlink, PumpDeviceOptions, PumpDeviceSpec } from './device';
export { DROP_COUNTERS, dropIncreases, fdbToPump, nativePumpFactory, pumpEntries } from './pump';
export type { DropCounter, PumpFactory } from './pump';

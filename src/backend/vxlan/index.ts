export { VxlanBackend, incompatibility, randomMac, vxlanOnLinkPeers, DEFAULT_VXLAN_PORT, VXLAN_OVERHEAD } from './vxlan';
export type { VxlanBackendOptions, VxlanBackendData, VxlanNetlink } from './vxlan';
export { vxlanDesired, decodeVxlanData } from './desired';
export type { VxlanDesiredParams, Decoded } from './desired';

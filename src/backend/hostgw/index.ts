export { HostGwBackend } from './hostgw';
export type { HostGwBackendOptions, HostGwNetlink } from './hostgw';
export { hostGwDesired, screenHostGwPeer, HOSTGW_TYPE } from './desired';

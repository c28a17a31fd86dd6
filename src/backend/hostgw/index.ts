export { HostGwBackend } from './hostgw';
export type { HostGwBackendOptions, HostGwNetlink } from './hostgw';
export { hostGwDesired, hostGwCheck, HOSTGW_TYPE } from './desired';

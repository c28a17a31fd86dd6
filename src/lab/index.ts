/** The lab library: what `weft lab`, the e2e tests and bench/ import. */
export {
  Lab, INTERNET_GATEWAY, INTERNET_IP, DEFAULT_BACKEND, DEFAULT_ETCD_PREFIX, DEFAULT_HEALTHZ_PORT, DEFAULT_NETWORK, ETCD_ENDPOINT, ETCD_IP,
  MAX_ETCD_MEMBERS, MAX_HOSTS, UNDERLAY_CIDR, WEFTD_NODE_OPTIONS, defaultPrefix, defaultWeftdPath, etcdMemberIp, etcdMemberName, hostUnderlayIp,
  type LabOptions, type PingOptions, type StartDaemonOptions,
} from './lab';
export type { DownReport } from './down';
export { Netns } from './netns';
export { INSTALL_HINT, NOT_ROOT_MESSAGE, findTools, isRoot, requireRoot, type Tools } from './prereq';
export {
  formatLeaseTable, formatPingMatrix, formatStatus, parseLeaseDump,
  type HostStatus, type LabStatus, type LeaseRow, type PingMatrix, type PingResult,
} from './report';
export type { RunResult } from './run';
export { DEFAULT_LAB_NAME, STATE_ROOT, defaultStateDir, labExists, loadState, type LabState } from './state';
export { parseSubnetEnv, readSubnetEnv, type SubnetEnv } from './subnet-env';

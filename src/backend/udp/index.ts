export { UdpBackend, UDP_DEVICE, UDP_OVERHEAD } from './udp';
export type { UdpBackendOptions } from './udp';
export { decodeUdpConfig, DEFAULT_UDP_PORT } from './config';
export type { UdpBackendConfig } from './config';
export { udpDesired } from './desired';
export type { UdpDesiredParams } from './desired';

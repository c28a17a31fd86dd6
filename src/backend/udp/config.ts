/**
 * The legacy udp backend's options. flannel decodes `Backend` into `struct { Port int }` with
 * Go's encoding/json (field names match case-insensitively; other fields are ignored) and
 * defaults Port to 8285.
 */
import type { BackendConfig } from '../../config/types';
import { WeftError } from '../../errors';

export const DEFAULT_UDP_PORT = 8285;

export interface UdpBackendConfig {
  readonly port: number;
}

export function decodeUdpConfig(backend: BackendConfig): UdpBackendConfig {
  if (backend.type !== 'udp') {
    throw new WeftError('INTERNAL', `decode udp backend options: backend type is ${JSON.stringify(backend.type)}, not "udp"`);
  }
  let port: unknown = undefined;
  for (const [k, v] of Object.entries(backend.raw)) if (k.toLowerCase() === 'port' && v !== null) port = v;
  if (port === undefined) return { port: DEFAULT_UDP_PORT };
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new WeftError('CONFIG_INVALID', `network config: Backend (udp): Port must be an integer from 1 to 65535, got ${JSON.stringify(port)}`);
  }
  return { port };
}

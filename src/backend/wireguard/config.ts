/**
 * The wireguard backend's options, decoded as flannel (v0.20+, backend/wireguard/wireguard.go)
 * decodes them: Go's encoding/json into
 *   struct { ListenPort int; ListenPortV6 int; PSK string; PersistentKeepaliveInterval time.Duration; Mode Mode }
 * with the defaults 51820, 51821, "", 0 and "separate". Field names match case-insensitively and
 * unknown fields are ignored (encoding/json); a value of the wrong JSON type is flannel's
 * "error decoding backend config: ..."; a Mode other than the four is "No valid Mode configured";
 * a PSK that is not a base64 32-byte key is "could not parse psk: ...".
 *
 * PersistentKeepaliveInterval is a time.Duration multiplied by time.Second in flannel, so the
 * JSON number is seconds. weft is stricter than flannel where flannel would build a device that
 * cannot work: a listen port outside 1..65535 (0 makes the kernel pick a random port no peer
 * knows) and a keepalive outside 0..65535 (WireGuard's field is 16 bits) are refused.
 */
import type { BackendConfig } from '../../config/types';
import { WeftError } from '../../errors';
import { decodeKey } from './keys';

export const DEFAULT_LISTEN_PORT = 51820;
export const DEFAULT_LISTEN_PORT_V6 = 51821;

export type WireguardMode = 'separate' | 'auto' | 'ipv4' | 'ipv6';
const MODES: readonly WireguardMode[] = ['separate', 'auto', 'ipv4', 'ipv6'];

export interface WireguardBackendConfig {
  readonly listenPort: number;
  readonly listenPortV6: number;
  /** The pre-shared key, base64 as written in the config (a secret: never logged), or null. */
  readonly psk: string | null;
  /** Seconds; 0 = off. */
  readonly persistentKeepaliveInterval: number;
  readonly mode: WireguardMode;
}

/** Go's Unmarshal type error, in flannel's wrapping. */
function typeError(field: string, got: unknown, goType: string): WeftError {
  const kind = got === null ? 'null' : Array.isArray(got) ? 'array' : typeof got === 'object' ? 'object' : typeof got;
  return new WeftError('CONFIG_INVALID',
    `network config: Backend (wireguard): error decoding backend config: json: cannot unmarshal ${kind} into Go struct field .${field} of type ${goType}`);
}

function integer(field: string, v: unknown, goType: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw typeError(field, v, goType);
  return v;
}

export function decodeWireguardConfig(backend: BackendConfig): WireguardBackendConfig {
  if (backend.type !== 'wireguard') {
    throw new WeftError('INTERNAL', `decode wireguard backend options: backend type is ${JSON.stringify(backend.type)}, not "wireguard"`);
  }
  // encoding/json: the last of several case-insensitive matches wins; null leaves the default.
  const field = (name: string): unknown => {
    let out: unknown = undefined;
    for (const [k, v] of Object.entries(backend.raw)) if (k.toLowerCase() === name.toLowerCase() && v !== null) out = v;
    return out;
  };
  const port = (name: string, dflt: number): number => {
    const v = field(name);
    if (v === undefined) return dflt;
    const n = integer(name, v, 'int');
    if (n < 1 || n > 65535) {
      throw new WeftError('CONFIG_INVALID', `network config: Backend (wireguard): ${name} must be a UDP port from 1 to 65535, got ${n}`);
    }
    return n;
  };
  const listenPort = port('ListenPort', DEFAULT_LISTEN_PORT);
  const listenPortV6 = port('ListenPortV6', DEFAULT_LISTEN_PORT_V6);

  let keepalive = 0;
  const ka = field('PersistentKeepaliveInterval');
  if (ka !== undefined) {
    keepalive = integer('PersistentKeepaliveInterval', ka, 'time.Duration');
    if (keepalive < 0 || keepalive > 65535) {
      throw new WeftError('CONFIG_INVALID',
        `network config: Backend (wireguard): PersistentKeepaliveInterval must be from 0 (off) to 65535 seconds, got ${keepalive}`);
    }
  }

  let mode: WireguardMode = 'separate';
  const m = field('Mode');
  if (m !== undefined) {
    if (typeof m !== 'string') throw typeError('Mode', m, 'wireguard.Mode');
    // flannel compares the string as written: "Auto" is not a mode.
    if (!(MODES as readonly string[]).includes(m)) {
      throw new WeftError('CONFIG_INVALID',
        `network config: Backend (wireguard): No valid Mode configured (Mode ${JSON.stringify(m)}; expected one of ${MODES.join(', ')})`);
    }
    mode = m as WireguardMode;
  }

  let psk: string | null = null;
  const p = field('PSK');
  if (p !== undefined) {
    if (typeof p !== 'string') throw typeError('PSK', p, 'string');
    if (p !== '') {
      const why = decodeKey(p).error;
      // The message never quotes the key: it is a secret.
      if (why !== null) throw new WeftError('CONFIG_INVALID', `network config: Backend (wireguard): could not parse psk: ${why}`);
      psk = p;
    }
  }
  return { listenPort, listenPortV6, psk, persistentKeepaliveInterval: keepalive, mode };
}

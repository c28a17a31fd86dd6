/**
 * The WireGuard cross-platform userspace API (https://www.wireguard.com/xplatform/), spoken by
 * wireguard-go on the unix socket `/var/run/wireguard/<dev>.sock`: a request is `get=1\n\n` or
 * `set=1\n` + `key=value` lines + an empty line; the answer is `key=value` lines (for get) ending
 * in `errno=N\n\n`. Keys are lower-case hex. Peer sections start at `public_key=`.
 *
 * Pure encoders/parsers first (unit-tested against the documented protocol), then a tiny client:
 * one connection per request, as `wg` does (wireguard-go closes nothing early; we close after
 * the terminating empty line).
 */
import * as net from 'node:net';
import { WeftError } from '../../errors';
import { hexToKey, keyToHex } from './keys';

/** A peer as wanted on the device. Keys base64; `presharedKey` a secret (never logged). */
export interface WgPeerConfig {
  readonly publicKey: string;
  readonly endpoint: string;              // "10.250.0.11:51820"
  readonly allowedIps: readonly string[]; // CIDRs, e.g. ["10.5.7.0/24"]
  readonly persistentKeepalive: number;   // seconds, 0 = off
  readonly presharedKey: string | null;
}

export interface WgSetRequest {
  /** Hex-encoded private key (the device's); absent: unchanged. */
  readonly privateKeyHex?: string;
  readonly listenPort?: number;
  readonly replacePeers?: boolean;
  readonly peers?: readonly WgPeerConfig[];
  /** Peers (base64 public keys) to remove. */
  readonly remove?: readonly string[];
}

/** One peer as the device reports it. */
export interface WgPeerState {
  readonly publicKey: string;
  /** Hex, or null when none; a secret: compare it, never log it. */
  readonly presharedKeyHex: string | null;
  readonly endpoint: string | null;
  readonly allowedIps: readonly string[];
  readonly persistentKeepalive: number;
  /** Unix seconds of the last handshake; 0 = never. */
  readonly lastHandshake: number;
  readonly rxBytes: number;
  readonly txBytes: number;
}

export interface WgDeviceState {
  readonly listenPort: number;
  /** The device's public key is not in the protocol; whether it has a private key at all is. */
  readonly hasPrivateKey: boolean;
  /** Hex of the private key the device holds (a secret: compare it, never log it), or null. */
  readonly privateKeyHex: string | null;
  readonly peers: readonly WgPeerState[];
}

const ZERO_KEY_HEX = '0'.repeat(64);

/** The text of a `set=1` request (ends with the empty line). */
export function encodeSet(req: WgSetRequest): string {
  const lines = ['set=1'];
  if (req.privateKeyHex !== undefined) lines.push(`private_key=${req.privateKeyHex}`);
  if (req.listenPort !== undefined) lines.push(`listen_port=${req.listenPort}`);
  if (req.replacePeers) lines.push('replace_peers=true');
  for (const k of req.remove ?? []) lines.push(`public_key=${keyToHex(k)}`, 'remove=true');
  for (const p of req.peers ?? []) {
    lines.push(`public_key=${keyToHex(p.publicKey)}`);
    // An explicit all-zero key removes a PSK that is no longer configured.
    lines.push(`preshared_key=${p.presharedKey === null ? ZERO_KEY_HEX : keyToHex(p.presharedKey)}`);
    lines.push(`endpoint=${p.endpoint}`);
    lines.push(`persistent_keepalive_interval=${p.persistentKeepalive}`);
    lines.push('replace_allowed_ips=true');
    for (const a of p.allowedIps) lines.push(`allowed_ip=${a}`);
  }
  return `${lines.join('\n')}\n\n`;
}

export const GET_REQUEST = 'get=1\n\n';

/** The errno of an answer (`errno=N` line), or null if there is none. */
export function parseErrno(text: string): number | null {
  const m = /(?:^|\n)errno=(-?\d+)\n/.exec(text);
  return m ? Number(m[1]) : null;
}

/** Parse a `get=1` answer. Throws on a non-zero errno or a line that is not key=value. */
export function parseGet(text: string): WgDeviceState {
  let listenPort = 0;
  let privateKeyHex: string | null = null;
  const peers: WgPeerState[] = [];
  type Mutable = { -readonly [K in keyof WgPeerState]: WgPeerState[K] } & { allowedIps: string[] };
  let cur: Mutable | null = null;
  let errno: number | null = null;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new WeftError('BAD_DATA', `WireGuard UAPI: malformed line in get answer (${line.length} characters, no key=value)`);
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    switch (key) {
      case 'errno': errno = Number(value); break;
      case 'private_key': privateKeyHex = value === ZERO_KEY_HEX ? null : value; break;
      case 'listen_port': listenPort = Number(value); break;
      case 'public_key':
        cur = { publicKey: hexToKey(value), presharedKeyHex: null, endpoint: null, allowedIps: [], persistentKeepalive: 0, lastHandshake: 0, rxBytes: 0, txBytes: 0 };
        peers.push(cur);
        break;
      default:
        if (cur === null) break; // device-level keys we do not use (fwmark, protocol_version)
        switch (key) {
          case 'preshared_key': cur.presharedKeyHex = value === ZERO_KEY_HEX ? null : value; break;
          case 'endpoint': cur.endpoint = value; break;
          case 'allowed_ip': cur.allowedIps.push(value); break;
          case 'persistent_keepalive_interval': cur.persistentKeepalive = Number(value); break;
          case 'last_handshake_time_sec': cur.lastHandshake = Number(value); break;
          case 'rx_bytes': cur.rxBytes = Number(value); break;
          case 'tx_bytes': cur.txBytes = Number(value); break;
          default: break;
        }
    }
  }
  if (errno !== null && errno !== 0) throw new WeftError('NETLINK', `WireGuard UAPI get failed: errno=${errno}`, { retryable: true });
  return { listenPort, hasPrivateKey: privateKeyHex !== null, privateKeyHex, peers };
}

/** Talks to one wireguard-go over its UAPI socket. */
export class UapiClient {
  constructor(readonly socketPath: string, private readonly timeoutMs = 3000) {}

  async get(): Promise<WgDeviceState> {
    return parseGet(await this.request(GET_REQUEST, 'get'));
  }

  async set(req: WgSetRequest): Promise<void> {
    const answer = await this.request(encodeSet(req), 'set');
    const errno = parseErrno(answer);
    if (errno !== 0) {
      throw new WeftError('NETLINK', `WireGuard UAPI set on ${this.socketPath} failed: ${errno === null ? 'no errno in the answer' : `errno=${errno}`}`, { retryable: true });
    }
  }

  /** Whether something answers a get on the socket (a live wireguard-go). */
  async alive(): Promise<boolean> {
    try {
      await this.get();
      return true;
    } catch {
      return false;
    }
  }

  private request(text: string, what: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(this.socketPath);
      let buf = '';
      let done = false;
      const finish = (err: Error | null): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        sock.destroy();
        if (err) reject(err);
        else resolve(buf);
      };
      const timer = setTimeout(() => finish(new WeftError('NETLINK',
        `WireGuard UAPI ${what} on ${this.socketPath}: no answer within ${this.timeoutMs} ms (is wireguard-go hung?)`, { retryable: true })), this.timeoutMs);
      sock.setEncoding('utf8');
      sock.on('connect', () => sock.write(text));
      sock.on('data', (d: string) => {
        buf += d;
        // Every answer ends with errno=N and an empty line.
        if (/(?:^|\n)errno=-?\d+\n\n$/.test(buf)) finish(null);
      });
      sock.on('error', (err) => finish(new WeftError('NETLINK', `WireGuard UAPI ${what} on ${this.socketPath}: ${err.message}`, { cause: err, retryable: true })));
      sock.on('close', () => finish(buf ? null : new WeftError('NETLINK', `WireGuard UAPI ${what} on ${this.socketPath}: closed without an answer`, { retryable: true })));
    });
  }
}

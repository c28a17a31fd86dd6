/**
 * WireGuard keys: Curve25519 (X25519) key pairs as 32 raw bytes, written base64 (44 characters,
 * what `wg genkey` prints and what flannel's lease carries) or hex (the UAPI's form).
 *
 * The private key lives in one file, flannel's `/run/flannel/wgkey` by default (flannel also
 * honours $WIREGUARD_KEY_FILE; weft: --wireguard-key-file), mode 0600, created once and read on
 * every start so that the public key in our lease, and with it every peer's session, survives a
 * restart. The private key never leaves this module except towards the device (UAPI/genl): it is
 * not in the lease, a log line, /metrics or `weft status`.
 *
 * node:crypto does the X25519 work (no `wg` process): a raw private key is imported as PKCS#8
 * (a fixed 16-byte DER prefix, RFC 8410) and its public key exported as SPKI (12-byte prefix).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { describeError, WeftError } from '../../errors';

export const DEFAULT_KEY_FILE = '/run/flannel/wgkey';
export const KEY_LEN = 32;

const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/** Parse a base64 key as Go's wgtypes.ParseKey does (strict base64, 32 bytes); `error` says why not. */
export function decodeKey(text: string): { readonly key: Buffer | null; readonly error: string | null } {
  // Standard base64 with padding, exactly: Buffer.from() alone skips garbage silently.
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    return { key: null, error: 'failed to parse base64-encoded key: illegal base64 data' };
  }
  const key = Buffer.from(text, 'base64');
  if (key.length !== KEY_LEN) return { key: null, error: `incorrect key size: ${key.length}` };
  // Non-canonical encodings (stray bits in the last character) decode, but are not what wg writes.
  if (key.toString('base64') !== text) return { key: null, error: 'failed to parse base64-encoded key: non-canonical base64' };
  return { key, error: null };
}

/** Whether `text` is a usable WireGuard public key: canonical base64 of 32 bytes, not all zero. */
export function isValidPublicKey(text: unknown): text is string {
  if (typeof text !== 'string') return false;
  const { key } = decodeKey(text);
  return key !== null && !key.equals(Buffer.alloc(KEY_LEN));
}

export function keyToHex(base64: string): string {
  return Buffer.from(base64, 'base64').toString('hex');
}

export function hexToKey(hex: string): string {
  return Buffer.from(hex, 'hex').toString('base64');
}

function privateKeyObject(raw: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

/** The public key (base64) of a raw private key. */
export function publicKeyOf(privateKey: Buffer): string {
  const spki = createPublicKey(privateKeyObject(privateKey)).export({ format: 'der', type: 'spki' });
  return spki.subarray(SPKI_X25519_PREFIX.length).toString('base64');
}

/** A fresh private key, clamped as `wg genkey` clamps it (X25519 clamps anyway; peers see no difference). */
export function generatePrivateKey(): Buffer {
  const der = generateKeyPairSync('x25519').privateKey.export({ format: 'der', type: 'pkcs8' });
  const raw = Buffer.from(der.subarray(der.length - KEY_LEN));
  raw[0]! &= 248;
  raw[31] = (raw[31]! & 127) | 64;
  return raw;
}

/** A key pair; `toJSON`/inspection never show the private half. */
export class KeyPair {
  readonly publicKey: string;
  readonly #privateKey: Buffer;

  constructor(privateKey: Buffer) {
    this.#privateKey = Buffer.from(privateKey);
    this.publicKey = publicKeyOf(this.#privateKey);
  }

  /** The private key as the UAPI wants it (lower-case hex). Only for the device. */
  privateKeyHex(): string {
    return this.#privateKey.toString('hex');
  }

  /** The raw private key. Only for the device (generic netlink). */
  privateKeyBytes(): Buffer {
    return Buffer.from(this.#privateKey);
  }

  toJSON(): { publicKey: string } {
    return { publicKey: this.publicKey };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `KeyPair { publicKey: '${this.publicKey}' }`;
  }
}

export interface LoadedKey {
  readonly keys: KeyPair;
  /** True when the file did not exist and was written now. */
  readonly created: boolean;
}

/**
 * Read the private key from `file`, or generate one and write it there (mode 0600, directory
 * created 0755 as flannel does). A file that exists but does not hold a key is an error, never
 * overwritten: replacing it would change our public key and cut every peer's session.
 */
export async function loadOrCreateKey(file: string, generate: () => Buffer = generatePrivateKey): Promise<LoadedKey> {
  let text: string | null = null;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new WeftError('CONFIG_INVALID', `read WireGuard private key file ${file}: ${describeError(err)}`, { cause: err });
    }
  }
  if (text !== null) {
    // `wg genkey > file` leaves a newline; flannel writes none. Accept both.
    const { key, error } = decodeKey(text.trim());
    if (key === null) {
      throw new WeftError('BAD_DATA', `WireGuard private key file ${file} does not hold a base64 32-byte key (${error}); `
        + 'fix it (wg genkey > FILE) or remove it to have weftd generate a new key (peers then see a new public key)');
    }
    return { keys: new KeyPair(key), created: false };
  }
  const raw = generate();
  try {
    await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
    // O_EXCL: two weftd starting at once must not each write a different key.
    const fh = await fsp.open(file, 'wx', 0o600);
    try {
      await fh.writeFile(raw.toString('base64'));
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadOrCreateKey(file, generate);
    throw new WeftError('CONFIG_INVALID', `write WireGuard private key file ${file}: ${describeError(err)}`, { cause: err });
  }
  return { keys: new KeyPair(raw), created: true };
}

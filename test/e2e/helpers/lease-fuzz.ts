/**
 * Writes (or deletes) N hostile keys under <prefix>/subnets/ — the lease fuzz of issue #9. Run
 * inside the lab's etcd namespace:
 *
 *   node lease-fuzz.js put|del <endpoint> <count> <seed> [prefix]
 *
 * Deterministic from the seed (del regenerates the same keys). Keys: well-formed subnet keys
 * (inside and outside the Network, covering the underlay 10.250.0.0/24, /1, /32), malformed ones
 * (host bits, bad lengths, control characters, 4 KB long, nested slashes, unicode). Values:
 * random JSON of every type, wrong field types, huge strings (up to 1 MB), leases that look
 * right but point at loopback/multicast/our own addresses, VNI null, MACs with spaces. Prints
 * `{"keys":N,"bytes":B,"ms":T}`. Without arguments it exits at once (`node --test` may pick up
 * helper files).
 */
import { Etcd3 } from 'etcd3';
import { prng } from './prng';


export function fuzzEntries(count: number, seed: number): { key: string; value: string }[] {
  const r = prng(seed);
  const n = (k: number): number => Math.floor(r() * k);
  const pick = <T>(xs: readonly T[]): T => xs[n(xs.length)]!;
  const randStr = (len: number): string => Array.from({ length: len }, () => String.fromCharCode(n(0x3000))).join('');
  const randJson = (depth: number): unknown => {
    switch (n(depth > 2 ? 5 : 7)) {
      case 0: return null;
      case 1: return r() < 0.5;
      case 2: return r() * 1e12 - 5e11;
      case 3: return randStr(n(40));
      case 4: return n(2 ** 31);
      case 5: return Array.from({ length: n(5) }, () => randJson(depth + 1));
      default: return Object.fromEntries(Array.from({ length: n(5) }, () => [pick(['PublicIP', 'BackendType', 'BackendData', 'VNI', 'VtepMAC', randStr(5)]), randJson(depth + 1)]));
    }
  };
  const keys = [
    () => `10.5.${200 + n(50)}.0-24`,                     // well-formed, inside the Network
    () => '10.250.0.0-24',                                  // the underlay
    () => '0.0.0.0-1',
    () => `10.250.0.${n(256)}-32`,
    () => `10.${n(256)}.${n(256)}.${n(256)}-${n(40)}`,      // host bits, bad lengths
    () => `10.5.${n(256)}.0-24\u001b[2J${n(1e6)}`,
    () => `x`.repeat(4096) + n(1e6),
    () => `nested/${n(1e6)}/10.5.1.0-24`,
    () => `${randStr(8)}-${n(1e6)}`,
    () => `10.5.${n(256)}.0-24&fc00::${n(65536).toString(16)}-${n(200)}`,
  ];
  const mac = (): string => Array.from({ length: 6 }, () => n(256).toString(16).padStart(2, '0')).join(':');
  const lease = (fields: Record<string, unknown>): string => JSON.stringify({ PublicIP: `10.251.${n(256)}.${n(256)}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: `02:${mac().slice(3)}` }, ...fields });
  const values = [
    () => JSON.stringify(randJson(0)),
    () => randStr(n(200)),                                   // not JSON
    () => 'x'.repeat(n(300) === 0 ? 1_000_000 : 2_000),    // huge (1 MB: a few of them)
    () => lease({ PublicIP: pick(['127.0.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '10.250.0.11', '10.250.0.2', 7, null, 'x'.repeat(5_000)]) }),
    () => lease({ BackendType: pick([7, null, {}, 'udp', 'host-gw', 'vxlan\u001b]0;pwned\u0007', 'y'.repeat(5_000)]) }),
    () => lease({ BackendData: pick([null, 7, 'x', [], { VNI: null, VtepMAC: ' 02:00:00:00:00:09' }, { VNI: -1, VtepMAC: mac() }, { VNI: 2 ** 40, VtepMAC: mac() }, { VtepMAC: 'ff:ff:ff:ff:ff:ff' }, { VNI: 1, VtepMAC: 'z'.repeat(5_000) }]) }),
    () => lease({ PublicIPv6: pick(['::1', 'not-v6', 7, 'f'.repeat(10_000)]) }),
    () => lease({}),                                         // looks right: a valid stranger (inside or outside the Network)
    () => '{"PublicIP":"10.251.0.1"' + ',"a":1'.repeat(n(2_000)) + '}',  // many fields
    () => '[' .repeat(n(5000)) + ']'.repeat(n(5000)),        // deep nesting
  ];
  // `count` distinct keys (the fixed ones, like the underlay's, are written once).
  const out = new Map<string, string>();
  for (let tries = 0; out.size < count && tries < count * 20; tries++) {
    const key = pick(keys)();
    if (!out.has(key)) out.set(key, pick(values)());
  }
  return [...out].map(([key, value]) => ({ key, value }));
}

async function main(mode: string, endpoint: string, count: number, seed: number, prefix: string): Promise<void> {
  const client = new Etcd3({ hosts: [endpoint] });
  const start = Date.now();
  let bytes = 0;
  try {
    const entries = fuzzEntries(count, seed);
    // 32 in flight: a burst, not a stampede that times the client out.
    for (let i = 0; i < entries.length; i += 32) {
      await Promise.all(entries.slice(i, i + 32).map(({ key, value }) => {
        const full = `${prefix}/subnets/${key}`;
        bytes += value.length;
        return mode === 'put' ? client.put(full).value(value).exec() : client.delete().key(full).exec();
      }));
    }
    process.stdout.write(`${JSON.stringify({ keys: entries.length, bytes, ms: Date.now() - start })}\n`);
  } finally {
    client.close();
  }
}

const [mode, endpoint, count, seed, prefix] = process.argv.slice(2);
if ((mode === 'put' || mode === 'del') && endpoint && count && seed) {
  main(mode, endpoint, Number(count), Number(seed), prefix ?? '/coreos.com/network').catch((err: unknown) => {
    process.stderr.write(`lease-fuzz: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}

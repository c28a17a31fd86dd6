/**
 * Writes N synthetic peer leases at once (concurrent etcd puts), in one of several variants that
 * differ only in the VTEP MAC: writing variant 2 over variant 1 is "N leases changed in one
 * burst" (test/e2e/burst.test.ts). Keys and PublicIPs are lease-burst.ts's. Run inside the lab's
 * etcd namespace:
 *
 *   node lease-burst-change.js <endpoint> <count> <variant 1-255> [prefix]
 *
 * Prints the ms the writes took. Without arguments it exits at once (`node --test` may pick up
 * helper files).
 */
import { Etcd3 } from 'etcd3';
import { burstKey } from './lease-burst';

const hex = (n: number): string => n.toString(16).padStart(2, '0');

/** The VTEP MAC of lease i in `variant` (02:cc:<variant>:00:<i/256>:<i%256>). */
export function variantMac(i: number, variant: number): string {
  return `02:cc:${hex(variant)}:00:${hex(i >> 8)}:${hex(i & 255)}`;
}

export function variantValue(i: number, variant: number): string {
  return `{"PublicIP":"10.251.${i >> 8}.${i & 255}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${variantMac(i, variant)}"}}`;
}

async function main(endpoint: string, count: number, variant: number, prefix: string): Promise<void> {
  const client = new Etcd3({ hosts: [endpoint] });
  const start = Date.now();
  try {
    await Promise.all(Array.from({ length: count }, (_, i) => client.put(`${prefix}/subnets/${burstKey(i)}`).value(variantValue(i, variant)).exec()));
    process.stdout.write(`${Date.now() - start}\n`);
  } finally {
    client.close();
  }
}

const [endpoint, count, variant, prefix] = process.argv.slice(2);
if (endpoint && count && variant) {
  main(endpoint, Number(count), Number(variant), prefix ?? '/coreos.com/network').catch((err: unknown) => {
    process.stderr.write(`lease-burst-change: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}

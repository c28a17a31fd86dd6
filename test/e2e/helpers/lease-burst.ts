/**
 * Writes (or deletes) N synthetic peer leases at once, as concurrent etcd puts: the "500 hosts
 * join together" burst of the faults-data test. Run inside the lab's etcd namespace:
 *
 *   node lease-burst.js put|del <endpoint> <count> [prefix]
 *
 * Lease i: subnet 10.6.0.0/24 + i (10.6.0.0 .. 10.7.255.0), PublicIP 10.251.<i/256>.<i%256>,
 * VtepMAC 02:bb:00:00:<i/256>:<i%256>. Prints the ms the writes took. Without arguments it exits
 * at once (`node --test` may pick up helper files).
 */
import { Etcd3 } from 'etcd3';

export function burstKey(i: number): string {
  return `10.${6 + (i >> 8)}.${i & 255}.0-24`;
}

export function burstValue(i: number): string {
  const hex = (n: number): string => n.toString(16).padStart(2, '0');
  return `{"PublicIP":"10.251.${i >> 8}.${i & 255}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:bb:00:00:${hex(i >> 8)}:${hex(i & 255)}"}}`;
}

async function main(mode: string, endpoint: string, count: number, prefix: string): Promise<void> {
  const client = new Etcd3({ hosts: [endpoint] });
  const start = Date.now();
  try {
    await Promise.all(
      Array.from({ length: count }, (_, i) => {
        const key = `${prefix}/subnets/${burstKey(i)}`;
        return mode === 'put' ? client.put(key).value(burstValue(i)).exec() : client.delete().key(key).exec();
      }),
    );
    process.stdout.write(`${Date.now() - start}\n`);
  } finally {
    client.close();
  }
}

const [mode, endpoint, count, prefix] = process.argv.slice(2);
if ((mode === 'put' || mode === 'del') && endpoint && count) {
  main(mode, endpoint, Number(count), prefix ?? '/coreos.com/network').catch((err: unknown) => {
    process.stderr.write(`lease-burst: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}

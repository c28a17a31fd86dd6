/**
 * Issue #14's burst: 200 peer leases changed in one burst (every VTEP MAC rewritten at once, as
 * concurrent etcd puts) while pings run between the containers of 3 lab hosts. No ping may be
 * lost, and afterwards every host holds exactly the right routes (each peer subnet via its VTEP
 * address, onlink, on flannel.1), neighbours (the new MACs) and FDB entries. What it guards: the
 * per-event path (incremental diff, coalesced recomputes) under a burst never drops or corrupts
 * the routes of hosts that did not change.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Lab } from '../../src/lab';
import { describePing, pingFor, waitFor } from './helpers/faults';
import { burstKey } from './helpers/lease-burst';
import { variantMac } from './helpers/lease-burst-change';
import { shScript } from './helpers/shell';

const PREFIX = `wt${process.pid}b-`;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-burst-`));
/** Hosts take 10.4.x, the burst 10.6.x (lease-burst.ts's keys). */
const NETWORK_CONFIG = { Network: '10.4.0.0/14', Backend: { Type: 'vxlan' } };
const BURST = 200;
const HELPER = resolve(__dirname, 'helpers', 'lease-burst-change.js');

let lab: Lab;

/** flannel.1 on `host`: `dst via gw onlink` route lines, `ip mac` permanent neighbours, `mac dst` permanent FDB entries. */
async function overlayState(host: string): Promise<{ routes: Set<string>; neigh: Map<string, string>; fdb: Set<string> }> {
  const out = await shScript(lab, host, `
    ip route show dev flannel.1; echo ---
    ip neigh show dev flannel.1 nud permanent; echo ---
    bridge fdb show dev flannel.1 | grep 'self permanent' || true`);
  const [r = '', n = '', f = ''] = out.split('---\n');
  const lines = (s: string): string[] => s.split('\n').map((l) => l.trim()).filter(Boolean);
  return {
    routes: new Set(lines(r).filter((l) => l.includes(' via ')).map((l) => l.split(' ').slice(0, 3).join(' ') + (l.includes('onlink') ? ' onlink' : ''))),
    neigh: new Map(lines(n).map((l) => l.split(' ')).map((p) => [p[0]!, p[p.indexOf('lladdr') + 1]!])),
    fdb: new Set(lines(f).map((l) => l.split(' ')).map((p) => `${p[0]} ${p[p.indexOf('dst') + 1]}`)),
  };
}

function writeBurst(variant: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return lab.exec('etcd', [process.execPath, HELPER, lab.etcdEndpoint, String(BURST), String(variant)], { timeoutMs: 60_000 });
}

/** Whether `host` holds every burst lease in `variant` exactly (route, neighbour MAC, FDB) besides `base`'s routes. */
async function holdsVariant(host: string, baseRoutes: Set<string>, variant: number): Promise<string | null> {
  const s = await overlayState(host);
  for (const r of baseRoutes) if (!s.routes.has(r)) return `${host} lost route ${r}`;
  if (s.routes.size !== baseRoutes.size + BURST) return `${host} has ${s.routes.size} overlay routes, want ${baseRoutes.size + BURST}`;
  for (let i = 0; i < BURST; i++) {
    const vtep = burstKey(i).replace('-24', '');
    const dst = `${vtep}/24`;
    if (!s.routes.has(`${dst} via ${vtep} onlink`)) return `${host} has no route ${dst} via ${vtep} onlink`;
    const mac = variantMac(i, variant);
    if (s.neigh.get(vtep) !== mac) return `${host}: neighbour ${vtep} is ${s.neigh.get(vtep) ?? 'missing'}, want ${mac}`;
    if (!s.fdb.has(`${mac} 10.251.${i >> 8}.${i & 255}`)) return `${host}: no FDB entry ${mac} dst 10.251.${i >> 8}.${i & 255}`;
  }
  return null;
}

describe('a burst of changed leases while traffic flows', { timeout: 120_000 }, () => {
  before(async () => {
    lab = await Lab.up({
      prefix: PREFIX, name: `wt${process.pid}b`, stateDir: join(scratch, 'lab'), hosts: 3, healthzPort: 0,
      network: NETWORK_CONFIG.Network, networkConfig: NETWORK_CONFIG,
    });
  });

  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  it(`${BURST} leases changed in one burst while pings run between 3 hosts: no loss, all routes right afterwards`, async (t) => {
    const hosts = lab.hostNames();
    const base = new Map<string, Set<string>>();
    for (const h of hosts) base.set(h, (await overlayState(h)).routes);
    for (const h of hosts) assert.equal(base.get(h)!.size, hosts.length - 1, `${h} routes to the other ${hosts.length - 1} hosts before the burst`);

    const w1 = await writeBurst(1);
    assert.equal(w1.code, 0, w1.stderr);
    const why = new Map<string, string | null>();
    await waitFor(`all ${BURST} leases programmed on every host`, async () => {
      for (const h of hosts) why.set(h, await holdsVariant(h, base.get(h)!, 1));
      return [...why.values()].every((v) => v === null);
    }, 60_000, 250).catch((err: unknown) => { throw new Error(`${String(err)}: ${[...why.values()].filter(Boolean).join('; ')}`); });

    // Pings in a ring, 10 per second for 8 s; the burst lands 1 s in.
    const pinging = Promise.all([['h1-c1', 'h2-c1'], ['h2-c1', 'h3-c1'], ['h3-c1', 'h1-c1']].map(([a, b]) => pingFor(lab, a!, b!, 8000, 100)));
    await new Promise((r) => setTimeout(r, 1000));
    const start = Date.now();
    const w2 = await writeBurst(2);
    assert.equal(w2.code, 0, w2.stderr);
    await waitFor(`all ${BURST} changed leases reprogrammed on every host`, async () => {
      for (const h of hosts) why.set(h, await holdsVariant(h, base.get(h)!, 2));
      return [...why.values()].every((v) => v === null);
    }, 60_000, 250).catch((err: unknown) => { throw new Error(`${String(err)}: ${[...why.values()].filter(Boolean).join('; ')}`); });
    t.diagnostic(`etcd took the ${BURST} changes in ${w2.stdout.trim()} ms; all hosts right ${Date.now() - start} ms after the burst began`);
    const pings = await pinging;
    for (const p of pings) {
      t.diagnostic(describePing(p));
      assert.equal(p.received, p.sent, `pings lost during the burst: ${describePing(p)}`);
    }
    // Afterwards, settled: still exactly right (no late event undid anything).
    for (const h of hosts) assert.equal(await holdsVariant(h, base.get(h)!, 2), null);
  });
});

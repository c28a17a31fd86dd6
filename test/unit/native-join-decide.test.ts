/**
 * The native join path's decision (issue #14; addon/src/fastjoin.cc Decide, reached through
 * fastJoinDecide, which writes nothing) against the
 * TypeScript reference. The contract: a watch message the C++ accepts must be one that the
 * TypeScript wire (decodeWatchMessage), the registry's decoding (decodeSubnetKv) and the vxlan
 * screen and rules (vxlanDesired / IncrementalDesired) accept as a join of a new peer, with exactly
 * the kernel objects of the C++ record, and without changing any known peer's verdict. The C++
 * may refuse more (the message then goes to JavaScript as usual); it must never throw.
 *
 * No kernel is touched: fastJoinConfigure opens an unprivileged netlink socket and writes nothing.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import type { DesiredContext, DesiredState, PeerObjects } from '../../src/backend/backend';
import { isOwnLease } from '../../src/backend/screen';
import { vxlanDesired, vxlanPeerRules, type VxlanDesiredParams } from '../../src/backend/vxlan/desired';
import { IncrementalDesired } from '../../src/daemon/desired-delta';
import { describeError } from '../../src/errors';
import { formatIPv4, netsOverlap, parseIPv4, parseIPv4Cidr } from '../../src/ip';
import { parseSubnetKey } from '../../src/lease/codec';
import { decodeSubnetKv } from '../../src/lease/etcd-common';
import { decodeWatchMessage } from '../../src/lease/etcd-http-wire';
import { readRecord } from '../../src/lease/native-join';
import type { IPv4Net, Lease } from '../../src/lease/types';
import { loadNative, type NativeJoinConfig } from '../../src/native';

// ---- the addon -----------------------------------------------------------------------------------

interface Decision {
  readonly key: string;
  readonly record: Buffer;
}
const native = loadNative();
const decide = (line: Uint8Array): Decision | null => native.fastJoinDecide(line);

// ---- the setting: a /16 Network of /24s, our lease, the known peers ------------------------------

const REGISTRY_PREFIX = '/coreos.com/network';
const PREFIX = `${REGISTRY_PREFIX}/subnets/`;
const OWN_MAC = '0e:be:00:00:00:01';
const cidr = (t: string): IPv4Net => parseIPv4Cidr(t)!;

function lease(key: string, publicIp: string, backendType: string, data: unknown): Lease {
  const parsed = parseSubnetKey(key);
  if (parsed === null) throw new Error(`bad test key ${key}`);
  return {
    key, subnet: parsed.subnet, ipv6Subnet: null,
    attrs: { PublicIP: publicIp, PublicIPv6: null, BackendType: backendType, BackendData: data },
    expiration: null, etcdLeaseId: '7', modRevision: '1',
  };
}

interface Setup {
  readonly own: Lease;
  /** Every lease the daemon would tell the addon of (its peer map: accepted or skipped alike). */
  readonly known: readonly Lease[];
  readonly network: IPv4Net;
  readonly subnetLen: number;
  readonly underlay: readonly IPv4Net[];
  readonly protectedIPs: readonly string[];
  readonly vni: number;
  readonly params: VxlanDesiredParams;
  readonly ctx: DesiredContext;
  /** vxlanDesired of the known peers alone. */
  readonly before: DesiredState;
}

const MAIN_OWN = lease('10.5.1.0-24', '10.251.0.1', 'vxlan', { VNI: 1, VtepMAC: OWN_MAC });
const MAIN_KNOWN: readonly Lease[] = [
  lease('10.5.2.0-24', '10.251.0.2', 'vxlan', { VNI: 1, VtepMAC: '0e:be:00:00:00:02' }),
  // Upper case, as a lease may carry it (the daemon hands the addon its bytes).
  lease('10.5.4.0-24', '10.251.0.4', 'vxlan', { VNI: 1, VtepMAC: '0E:BE:00:00:00:04' }),
  // Known but skipped by the TypeScript rules: host-gw (no MAC), a /23, a PublicIP inside the Network.
  lease('10.5.5.0-24', '10.251.0.5', 'host-gw', undefined),
  lease('10.5.8.0-23', '10.251.0.8', 'vxlan', { VNI: 1, VtepMAC: '0e:be:00:00:00:08' }),
  lease('10.5.6.0-24', '10.5.7.7', 'vxlan', { VNI: 1, VtepMAC: '0e:be:00:00:00:06' }),
];

function makeSetup(over: { own?: Lease; known?: readonly Lease[] } = {}): Setup {
  const own = over.own ?? MAIN_OWN;
  const known = over.known ?? MAIN_KNOWN;
  const network = cidr('10.5.0.0/16');
  const subnetLen = 24;
  // The underlay's own network, and a second one that lies inside the Network (a secondary address).
  const underlay = [cidr('10.251.0.0/24'), cidr('10.5.248.0/22')];
  // etcd endpoints: one inside the Network, one on the underlay, one IPv6 (not passed to the addon).
  const protectedIPs = ['10.5.99.7', '10.251.0.250', 'fd00::1'];
  const vni = 1;
  const params: VxlanDesiredParams = { vni, directRouting: false };
  // As weftd's ctxOf(4) builds it.
  const ctx: DesiredContext = { onLinkPublicIPs: new Set<string>(), network, subnetLen, underlayNetworks: underlay, protectedIPs };
  return { own, known, network, subnetLen, underlay, protectedIPs, vni, params, ctx, before: vxlanDesired(own, known, params, ctx) };
}

const macBytes = (text: string): Buffer | null =>
  /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text) ? Buffer.from(text.replace(/:/g, ''), 'hex') : null;

/**
 * fastJoinConfigure and fastJoinKnow as weftd's nativeJoinConfig_/knowNative call them (no
 * template: Decide never reads it).
 */
function configure(s: Setup): void {
  const data = s.own.attrs.BackendData as { VNI?: unknown; VtepMAC?: unknown };
  const config: NativeJoinConfig = {
    prefix: PREFIX, ownKey: s.own.key,
    networkIp: s.network.ip >>> 0, networkLen: s.network.prefixLen, subnetLen: s.subnetLen,
    ownSubnetIp: s.own.subnet.ip >>> 0, ownSubnetLen: s.own.subnet.prefixLen, ownPublicIp: parseIPv4(s.own.attrs.PublicIP)! >>> 0, ownIfaceIp: 0,
    ownMac: typeof data.VtepMAC === 'string' ? macBytes(data.VtepMAC) : null,
    vni: typeof data.VNI === 'number' ? data.VNI : 1, ifindex: 7,
    underlay: s.underlay.flatMap((n) => [n.ip >>> 0, n.prefixLen]),
    protectedIps: s.protectedIPs.flatMap((t) => { const ip = parseIPv4(t); return ip === null ? [] : [ip >>> 0]; }),
    template: Buffer.alloc(0),
    atGw: [], atPub: [], atDst: [], atMac: [], atDstLen: [], atSeq: [], atPid: [],
  };
  assert.ok(native.fastJoinConfigure(config) > 0, 'fastJoinConfigure returns the netlink port id of an enabled path');
  for (const l of s.known) know(l);
}

function know(l: Lease): void {
  const d = l.attrs.BackendData as { VtepMAC?: unknown } | undefined;
  const mac = typeof d?.VtepMAC === 'string' ? macBytes(d.VtepMAC) : null;
  native.fastJoinKnow(l.key, l.subnet.ip >>> 0, l.subnet.prefixLen, (parseIPv4(l.attrs.PublicIP) ?? 0) >>> 0, mac);
}

// ---- watch messages as etcd's JSON gateway writes them --------------------------------------------

const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');
const hex2 = (n: number): string => n.toString(16).padStart(2, '0');
const HEADER = '{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"57","raft_term":"2"}';

function kvText(fullKey: string, value: string): string {
  return `{"key":"${b64(fullKey)}","create_revision":"57","mod_revision":"57","version":"1","value":"${b64(value)}","lease":"7587862072446091012"}`;
}
const putEvent = (key: string, value: string, prefix = PREFIX): string => `{"kv":${kvText(prefix + key, value)}}`;

/** A watch message: `watch_id` "1" (the subnets watcher fastJoinDecide takes by default) unless `extra` names one. */
function watchLine(events: readonly string[], opts: { header?: string | null; extra?: readonly string[] } = {}): string {
  const header = opts.header === undefined ? HEADER : opts.header;
  const extra = opts.extra ?? [];
  const watchId = extra.some((m) => m.startsWith('"watch_id"')) ? [] : ['"watch_id":"1"'];
  const members = [...(header === null ? [] : [`"header":${header}`]), ...watchId, ...extra, `"events":[${events.join(',')}]`];
  return `{"result":{${members.join(',')}}}`;
}
const lineOf = (key: string, value: string): string => watchLine([putEvent(key, value)]);

interface LeaseOpts {
  readonly pub?: string;
  readonly mac?: string;
  /** Raw JSON text of VNI; null: absent. */
  readonly vni?: string | null;
  readonly type?: string;
  readonly extraData?: string;
  readonly extraTop?: string;
  readonly v6Data?: string;
}
/** A lease value as flannel writes it (Go struct order), with what `o` changes. */
function leaseText(o: LeaseOpts = {}): string {
  const vni = o.vni === undefined ? '1' : o.vni;
  const data = [...(vni === null ? [] : [`"VNI":${vni}`]), `"VtepMAC":${JSON.stringify(o.mac ?? '0e:be:00:00:01:01')}`, ...(o.extraData ? [o.extraData] : [])];
  return `{"PublicIP":${JSON.stringify(o.pub ?? '10.251.0.7')},"PublicIPv6":null,"BackendType":${JSON.stringify(o.type ?? 'vxlan')},"BackendData":{${data.join(',')}}`
    + `${o.v6Data === undefined ? '' : `,"BackendV6Data":${o.v6Data}`}${o.extraTop ? `,${o.extraTop}` : ''}}`;
}

const NEW_KEY = '10.5.3.0-24';
const GOOD_VALUE = '{"PublicIP":"10.251.0.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:be:00:00:01:01"}}';
const GOOD_LINE = lineOf(NEW_KEY, GOOD_VALUE);

// ---- the TypeScript reference ---------------------------------------------------------------------

type Reference =
  | { readonly ok: true; readonly key: string; readonly lease: Lease; readonly objects: PeerObjects }
  | { readonly ok: false; readonly category: string; readonly detail: string };

const no = (category: string, detail = ''): Reference => ({ ok: false, category, detail });

/** Items of `a` not matched one for one in `b` (by value). */
function minus<T>(a: readonly T[], b: readonly T[]): T[] {
  const left = new Map<string, number>();
  for (const x of b) left.set(JSON.stringify(x), (left.get(JSON.stringify(x)) ?? 0) + 1);
  const out: T[] = [];
  for (const x of a) {
    const k = JSON.stringify(x);
    const n = left.get(k) ?? 0;
    if (n > 0) left.set(k, n - 1);
    else out.push(x);
  }
  return out;
}

/**
 * What the daemon's TypeScript does with `line`: a join of a new peer with these objects, or why
 * not. The message as the wire decodes it (a throw there ends the stream), one PUT event whose
 * mod_revision the registry's watch would deliver (it drops revisions below its resume point,
 * which is at least 1), a subnet key with a decodable lease (decodeSubnetKv), not our own lease
 * nor a known key, accepted by vxlanDesired with every known peer's verdict unchanged, and the
 * same delta from IncrementalDesired (what the daemon runs per event).
 */
function reference(s: Setup, line: Buffer): Reference {
  let msg;
  try {
    msg = decodeWatchMessage(line);
  } catch (err) {
    const text = describeError(err);
    return no(`decodeWatchMessage throws: ${text.startsWith('undecodable watch message') ? 'not JSON (JSON.parse)' : text}`, text);
  }
  if (msg === null) return no('no watch message (empty, or no result)');
  if (msg.error !== undefined) return no('an error message');
  if (msg.canceled) return no('a canceled watch');
  if (msg.events === null || msg.events.length !== 1) return no(`${msg.events?.length ?? 'no'} events, not one`);
  const ev = msg.events[0]!;
  if (ev.deleted) return no('a DELETE');
  if (BigInt(ev.kv.modRevision) < 1n) return no('mod_revision absent or < 1: the registry watch drops it as replayed', ev.kv.modRevision);
  const d = decodeSubnetKv(REGISTRY_PREFIX, ev.kv, null);
  if (d === null) return no('not a key directly under <prefix>/subnets/', JSON.stringify(ev.kv.key));
  if (d.error !== undefined) return no('decodeLease refuses it', d.error.message);
  const l = d.lease;
  if (l.key === s.own.key || isOwnLease(s.own, l)) return no('our own lease');
  if (s.known.some((k) => k.key === l.key)) return no('a known key (a change, not a join)');

  const after = vxlanDesired(s.own, [...s.known, l], s.params, s.ctx);
  const skip = (after.skipped ?? []).find((x) => x.key === l.key);
  if (skip !== undefined) return no('vxlanDesired skips it', skip.reason);
  if (!isDeepStrictEqual(after.skipped, s.before.skipped)) return no('a known peer\'s verdict changes', JSON.stringify(after.skipped));
  const removed = [...minus(s.before.neighbours, after.neighbours), ...minus(s.before.fdb, after.fdb), ...minus(s.before.routes, after.routes)];
  if (removed.length > 0) return no('a known peer\'s objects change', JSON.stringify(removed));
  const objects: PeerObjects = {
    neighbours: minus(after.neighbours, s.before.neighbours), fdb: minus(after.fdb, s.before.fdb), routes: minus(after.routes, s.before.routes),
  };
  // The daemon's own path: per-peer verdicts, one delta for the event.
  const engine = new IncrementalDesired(vxlanPeerRules(s.own, s.params, s.ctx), s.own, s.ctx, s.known);
  const { delta } = engine.apply([{ key: l.key, lease: l }]);
  if (delta === null) return no('IncrementalDesired needs a full pass (a conflict with a known peer)');
  const noObjects = { neighbours: [], fdb: [], routes: [] };
  if (!isDeepStrictEqual(delta.remove, noObjects) || !isDeepStrictEqual(delta.add, objects)) {
    return no('IncrementalDesired\'s delta differs from vxlanDesired', JSON.stringify(delta));
  }
  return { ok: true, key: l.key, lease: l, objects };
}

/**
 * What the C++ promises on top of the TypeScript's verdict: nothing shared with any known lease,
 * accepted or skipped (a later change of that one could flip the verdicts). Why not, or null.
 */
function sharesWithKnown(s: Setup, l: Lease, mac: string | undefined): string | null {
  for (const k of s.known) {
    const kd = k.attrs.BackendData as { VtepMAC?: unknown } | undefined;
    if (netsOverlap(k.subnet, l.subnet)) return `overlaps the known lease ${k.key}`;
    if (k.attrs.PublicIP === l.attrs.PublicIP) return `shares the known lease ${k.key}'s PublicIP`;
    if (typeof kd?.VtepMAC === 'string' && kd.VtepMAC.toLowerCase() === mac) return `shares the known lease ${k.key}'s VtepMAC`;
  }
  return null;
}

/** The objects weftd's nativeJoin.applied builds from a record (src/daemon/weftd.ts). */
function recordObjects(rec: Buffer): PeerObjects {
  const r = readRecord(rec, 0);
  const gw = formatIPv4(r.subnetIp);
  return {
    neighbours: [{ ip: gw, mac: r.mac }],
    fdb: [{ mac: r.mac, dst: formatIPv4(r.publicIp) }],
    routes: [{ dst: { ip: r.subnetIp, prefixLen: r.prefixLen }, gateway: gw, onlink: true, via: 'overlay' }],
  };
}

/** Why the C++ decision on `line` breaks the contract, or null (it refused, or it agrees). */
function disagreement(s: Setup, line: Buffer): { accepted: boolean; why: string | null; category?: string } {
  let got: Decision | null;
  try {
    got = decide(line);
  } catch (err) {
    return { accepted: false, why: `fastJoinDecide threw: ${describeError(err)}`, category: 'fastJoinDecide threw' };
  }
  if (got === null) return { accepted: false, why: null };
  const ref = reference(s, line);
  if (!ref.ok) return { accepted: true, why: `C++ accepts ${got.key}; TS: ${ref.category} ${ref.detail}`, category: ref.category };
  if (got.key !== ref.key) return { accepted: true, why: `C++ key ${got.key}, TS key ${ref.key}`, category: 'another key' };
  if (got.record.length !== 16 || got.record[11] !== 0) return { accepted: true, why: `record ${got.record.toString('hex')}`, category: 'malformed record' };
  const shared = sharesWithKnown(s, ref.lease, ref.objects.fdb[0]?.mac);
  if (shared !== null) return { accepted: true, why: `C++ accepts ${got.key}, which ${shared}`, category: 'conflicts with a known lease' };
  const mine = recordObjects(got.record);
  if (!isDeepStrictEqual(mine, ref.objects)) {
    return { accepted: true, why: `C++ objects ${JSON.stringify(mine)}, TS objects ${JSON.stringify(ref.objects)}`, category: 'other objects' };
  }
  return { accepted: true, why: null };
}

/** A line for a failure message: the text, with every base64 string of it decoded. */
function show(line: Buffer): string {
  const text = line.toString('latin1');
  const cut = text.length > 600 ? `${text.slice(0, 600)}...(${text.length} bytes)` : text;
  const decoded = [...text.matchAll(/"(key|value)"\s*:\s*"([A-Za-z0-9+/=]*)"/g)].map((m) => `${m[1]}=${JSON.stringify(Buffer.from(m[2]!, 'base64').toString('latin1'))}`);
  return `${JSON.stringify(cut)}${decoded.length ? `\n      decoded: ${decoded.join(' ')}` : ''}`;
}

// ---- 1. the joins it takes ------------------------------------------------------------------------

describe('native join decision: a new peer\'s vxlan lease is taken, with the objects the TypeScript rules want', () => {
  const s = makeSetup();
  const expected: PeerObjects = {
    neighbours: [{ ip: '10.5.3.0', mac: '0e:be:00:00:01:01' }],
    fdb: [{ mac: '0e:be:00:00:01:01', dst: '10.251.0.7' }],
    routes: [{ dst: { ip: parseIPv4('10.5.3.0')!, prefixLen: 24 }, gateway: '10.5.3.0', onlink: true, via: 'overlay' }],
  };
  const positives: readonly (readonly [string, string])[] = [
    ['the canonical lease flannel writes', GOOD_LINE],
    ['without VNI (flannel v0.12)', lineOf(NEW_KEY, '{"PublicIP":"10.251.0.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"0e:be:00:00:01:01"}}')],
    ['with "BackendV6Data":null', lineOf(NEW_KEY, '{"PublicIP":"10.251.0.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:be:00:00:01:01"},"BackendV6Data":null}')],
    ['with watch_id, created/canceled/fragment false and "type":"PUT"',
      watchLine([`{"type":"PUT","kv":${kvText(PREFIX + NEW_KEY, GOOD_VALUE)}}`], { extra: ['"watch_id":"1"', '"created":false', '"canceled":false', '"fragment":false', '"compact_revision":"0"'] })],
    ['with whitespace and a trailing CR', `${GOOD_LINE.replace('"events":', '"events" :  ')} \r`],
  ];
  for (const [name, text] of positives) {
    it(`takes ${name}`, () => {
      configure(s);
      const line = Buffer.from(text);
      const got = decide(line);
      assert.notEqual(got, null, `${name}: the native path should take it\n      ${show(line)}`);
      assert.equal(got!.key, NEW_KEY);
      assert.equal(got!.record.length, 16);
      assert.deepEqual(readRecord(got!.record, 0), { subnetIp: parseIPv4('10.5.3.0'), prefixLen: 24, mac: '0e:be:00:00:01:01', publicIp: parseIPv4('10.251.0.7') });
      assert.equal(got!.record[11], 0, 'the pad byte');
      const ref = reference(s, line);
      assert.ok(ref.ok, `the TypeScript reference refuses it: ${ref.ok ? '' : `${ref.category} ${ref.detail}`}`);
      assert.equal(ref.key, NEW_KEY);
      assert.deepEqual(ref.objects, expected);
      assert.deepEqual(recordObjects(got!.record), expected);
    });
  }

  it('reads the line through a view with a byte offset', () => {
    configure(s);
    const big = Buffer.concat([Buffer.from('garbage{"result":'), Buffer.from(GOOD_LINE), Buffer.from('}}trailing')]);
    const view = new Uint8Array(big.buffer, big.byteOffset + 17, GOOD_LINE.length);
    assert.equal(decide(view)?.key, NEW_KEY);
  });

  it('forgets a key on fastJoinForget, knows it again on fastJoinKnow, knows nothing after fastJoinConfigure(null)', () => {
    configure(s);
    const newcomer = lease(NEW_KEY, '10.251.0.7', 'vxlan', { VNI: 1, VtepMAC: '0e:be:00:00:01:01' });
    know(newcomer);
    assert.equal(decide(Buffer.from(GOOD_LINE)), null, 'a known key is a change, not a join');
    native.fastJoinForget(NEW_KEY);
    assert.equal(decide(Buffer.from(GOOD_LINE))?.key, NEW_KEY, 'forgotten: a join again');
    native.fastJoinConfigure(null);
    assert.equal(decide(Buffer.from(GOOD_LINE)), null, 'disabled: takes nothing');
    configure(s);
    assert.equal(decide(Buffer.from(GOOD_LINE))?.key, NEW_KEY, 'configured again');
  });
});

// ---- 2. what it must leave to JavaScript ----------------------------------------------------------

interface NegativeCase {
  readonly name: string;
  readonly line: string | Buffer;
  /** What the TypeScript reference does with it: the C++ refuses both kinds ('accepts': conservative). */
  readonly ts: 'accepts' | 'rejects';
  readonly setup?: Setup;
}

function runNegatives(cases: readonly NegativeCase[], main: Setup): void {
  for (const c of cases) {
    it(`leaves to JavaScript: ${c.name}`, () => {
      const s = c.setup ?? main;
      configure(s);
      const line = typeof c.line === 'string' ? Buffer.from(c.line) : c.line;
      let got: Decision | null = null;
      assert.doesNotThrow(() => { got = decide(line); }, `${c.name}: fastJoinDecide threw`);
      const ref = reference(s, line);
      assert.equal(got, null, `${c.name}: the native path takes it (key ${(got as Decision | null)?.key}), but it must not;`
        + ` TypeScript: ${ref.ok ? 'accepts it' : `${ref.category} ${ref.detail}`}\n      ${show(line)}`);
      // The case is what it says it is (the test's own check).
      assert.equal(ref.ok, c.ts === 'accepts', `${c.name}: the TypeScript reference ${ref.ok ? 'accepts' : `refuses (${ref.category} ${ref.detail})`}, expected it to ${c.ts === 'accepts' ? 'accept' : 'refuse'}`);
    });
  }
}

const escapeFirst = (b: string): string => `\\u00${b.charCodeAt(0).toString(16)}${b.slice(1)}`;

describe('native join decision: what it must leave to JavaScript', () => {
  const s = makeSetup();
  const K = b64(PREFIX + NEW_KEY);
  const V = b64(GOOD_VALUE);
  const kvWith = (fields: string): string => watchLine([`{"kv":{${fields}}}`]);
  // A good lease whose base64 ends in padding.
  const base64Of = (want: (v: string) => boolean): string => {
    for (const pub of ['10.251.0.7', '10.251.0.77', '10.251.0.177']) {
      for (let i = 16; i < 256; i += 2) {
        const v = b64(leaseText({ pub, mac: `0e:be:00:00:01:${hex2(i)}` }));
        if (want(v)) return v;
      }
    }
    throw new Error('no such lease');
  };
  const PADDED = base64Of((v) => v.endsWith('='));
  const cases: NegativeCase[] = [
    // the message
    { name: 'a DELETE event', line: watchLine([`{"type":"DELETE","kv":{"key":"${K}","mod_revision":"58"}}`]), ts: 'rejects' },
    { name: 'a DELETE event with a value', line: watchLine([`{"type":"DELETE","kv":${kvText(PREFIX + NEW_KEY, GOOD_VALUE)}}`]), ts: 'rejects' },
    { name: 'an event type that is neither PUT nor DELETE', line: watchLine([`{"type":"PATCH","kv":${kvText(PREFIX + NEW_KEY, GOOD_VALUE)}}`]), ts: 'rejects' },
    { name: 'two events in one message', line: watchLine([putEvent(NEW_KEY, GOOD_VALUE), putEvent('10.5.10.0-24', leaseText({ pub: '10.251.0.10', mac: '0e:be:00:00:01:10' }))]), ts: 'rejects' },
    { name: 'no events', line: watchLine([]), ts: 'rejects' },
    { name: '"created":true', line: watchLine([putEvent(NEW_KEY, GOOD_VALUE)], { extra: ['"created":true'] }), ts: 'accepts' },
    { name: '"canceled":true', line: watchLine([putEvent(NEW_KEY, GOOD_VALUE)], { extra: ['"canceled":true'] }), ts: 'rejects' },
    { name: '"fragment":true', line: watchLine([putEvent(NEW_KEY, GOOD_VALUE)], { extra: ['"fragment":true'] }), ts: 'accepts' },
    { name: 'a non-zero compact_revision', line: watchLine([putEvent(NEW_KEY, GOOD_VALUE)], { extra: ['"compact_revision":"40"'] }), ts: 'accepts' },
    { name: 'an "error" message', line: '{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}', ts: 'rejects' },
    { name: 'an "error" beside a result', line: `{"result":${GOOD_LINE.slice('{"result":'.length, -1)},"error":{"message":"x"}}`, ts: 'rejects' },
    { name: 'a prev_kv in the event', line: watchLine([`{"kv":${kvText(PREFIX + NEW_KEY, GOOD_VALUE)},"prev_kv":${kvText(PREFIX + NEW_KEY, GOOD_VALUE)}}`]), ts: 'accepts' },
    { name: 'a truncated line', line: GOOD_LINE.slice(0, -1), ts: 'rejects' },
    { name: 'a line cut in the value', line: GOOD_LINE.slice(0, GOOD_LINE.indexOf('"value"') + 20), ts: 'rejects' },
    { name: 'two messages on one line', line: GOOD_LINE + GOOD_LINE, ts: 'rejects' },
    // JSON escapes (JSON.parse decodes them: the TypeScript takes these)
    { name: 'a JSON escape in the key\'s base64', line: kvWith(`"key":"${escapeFirst(K)}","mod_revision":"57","value":"${V}"`), ts: 'accepts' },
    { name: 'a JSON escape in the value\'s base64', line: kvWith(`"key":"${K}","mod_revision":"57","value":"${escapeFirst(V)}"`), ts: 'accepts' },
    { name: 'a JSON escape in a header string', line: GOOD_LINE.replace('"raft_term":"2"', '"raft_term":"\\u0032"'), ts: 'accepts' },
    { name: 'a JSON escape in a member name', line: GOOD_LINE.replace('"events"', '"\\u0065vents"'), ts: 'accepts' },
    { name: 'a JSON escape in the PublicIP', line: lineOf(NEW_KEY, GOOD_VALUE.replace('10.251.0.7', '10.251.0.\\u0037')), ts: 'accepts' },
    { name: 'a JSON escape in the VtepMAC', line: lineOf(NEW_KEY, GOOD_VALUE.replace('01:01"', '01:0\\u0031"')), ts: 'accepts' },
    { name: 'a JSON escape in the BackendType', line: lineOf(NEW_KEY, GOOD_VALUE.replace('"vxlan"', '"\\u0076xlan"')), ts: 'accepts' },
    // the VtepMAC
    { name: 'an upper-case VtepMAC', line: lineOf(NEW_KEY, leaseText({ mac: '0E:BE:00:00:01:01' })), ts: 'accepts' },
    { name: 'a multicast VtepMAC', line: lineOf(NEW_KEY, leaseText({ mac: '01:00:5e:00:00:01' })), ts: 'rejects' },
    { name: 'the broadcast VtepMAC', line: lineOf(NEW_KEY, leaseText({ mac: 'ff:ff:ff:ff:ff:ff' })), ts: 'rejects' },
    { name: 'an all-zero VtepMAC', line: lineOf(NEW_KEY, leaseText({ mac: '00:00:00:00:00:00' })), ts: 'rejects' },
    { name: 'our own VtepMAC', line: lineOf(NEW_KEY, leaseText({ mac: OWN_MAC })), ts: 'rejects' },
    { name: 'the VtepMAC of a known peer whose key sorts first (TS skips the newcomer)', line: lineOf(NEW_KEY, leaseText({ mac: '0e:be:00:00:00:02' })), ts: 'rejects' },
    { name: 'the VtepMAC of a known peer whose key sorts after (TS would skip the known one)', line: lineOf(NEW_KEY, leaseText({ mac: '0e:be:00:00:00:04' })), ts: 'rejects' },
    { name: 'the VtepMAC of a known peer TS skips', line: lineOf(NEW_KEY, leaseText({ mac: '0e:be:00:00:00:08' })), ts: 'accepts' },
    { name: 'a VtepMAC with dashes', line: lineOf(NEW_KEY, leaseText({ mac: '0e-be-00-00-01-01' })), ts: 'rejects' },
    { name: 'a five-byte VtepMAC', line: lineOf(NEW_KEY, leaseText({ mac: '0e:be:00:00:01' })), ts: 'rejects' },
    { name: 'no VtepMAC', line: lineOf(NEW_KEY, '{"PublicIP":"10.251.0.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1}}'), ts: 'rejects' },
    // the PublicIP
    { name: 'the PublicIP of a known peer', line: lineOf(NEW_KEY, leaseText({ pub: '10.251.0.2' })), ts: 'accepts' },
    { name: 'a loopback PublicIP', line: lineOf(NEW_KEY, leaseText({ pub: '127.0.0.1' })), ts: 'rejects' },
    { name: 'a multicast PublicIP', line: lineOf(NEW_KEY, leaseText({ pub: '224.0.0.5' })), ts: 'rejects' },
    { name: 'a PublicIP in 0.0.0.0/8', line: lineOf(NEW_KEY, leaseText({ pub: '0.1.2.3' })), ts: 'rejects' },
    { name: 'the PublicIP 0.0.0.0', line: lineOf(NEW_KEY, leaseText({ pub: '0.0.0.0' })), ts: 'rejects' },
    { name: 'a PublicIP in 240.0.0.0/4', line: lineOf(NEW_KEY, leaseText({ pub: '240.0.0.1' })), ts: 'rejects' },
    { name: 'the broadcast PublicIP', line: lineOf(NEW_KEY, leaseText({ pub: '255.255.255.255' })), ts: 'rejects' },
    { name: 'a PublicIP inside the Network', line: lineOf(NEW_KEY, leaseText({ pub: '10.5.77.7' })), ts: 'rejects' },
    { name: 'a PublicIP inside its own subnet', line: lineOf(NEW_KEY, leaseText({ pub: '10.5.3.9' })), ts: 'rejects' },
    { name: 'our PublicIP', line: lineOf(NEW_KEY, leaseText({ pub: '10.251.0.1' })), ts: 'rejects' },
    { name: 'a PublicIP with a leading zero', line: lineOf(NEW_KEY, leaseText({ pub: '10.251.0.07' })), ts: 'rejects' },
    { name: 'an IPv6 PublicIP', line: lineOf(NEW_KEY, leaseText({ pub: 'fd00::7' })), ts: 'rejects' },
    { name: 'a PublicIPv6', line: lineOf(NEW_KEY, GOOD_VALUE.replace('"PublicIPv6":null', '"PublicIPv6":"fd00::7"')), ts: 'accepts' },
    // the key
    { name: 'our own key', line: lineOf('10.5.1.0-24', leaseText({ pub: '10.251.0.9', mac: '0e:be:00:00:01:09' })), ts: 'rejects' },
    { name: 'a known key', line: lineOf('10.5.2.0-24', leaseText({ pub: '10.251.0.9', mac: '0e:be:00:00:01:09' })), ts: 'rejects' },
    { name: 'a known key TS skips (host-gw turning vxlan)', line: lineOf('10.5.5.0-24', leaseText({ pub: '10.251.0.5', mac: '0e:be:00:00:01:05' })), ts: 'rejects' },
    { name: 'a subnet outside the Network', line: lineOf('10.6.3.0-24', GOOD_VALUE), ts: 'rejects' },
    { name: 'a /25', line: lineOf('10.5.3.0-25', GOOD_VALUE), ts: 'rejects' },
    { name: 'a /23', line: lineOf('10.5.10.0-23', GOOD_VALUE), ts: 'rejects' },
    { name: 'a /16 (the Network itself)', line: lineOf('10.5.0.0-16', GOOD_VALUE), ts: 'rejects' },
    { name: 'host bits set', line: lineOf('10.5.3.1-24', GOOD_VALUE), ts: 'rejects' },
    { name: 'overlapping a known lease (a /23 TS skips)', line: lineOf('10.5.9.0-24', GOOD_VALUE), ts: 'accepts' },
    { name: 'covering a known lease\'s PublicIP (one inside the Network, TS skips it)', line: lineOf('10.5.7.0-24', GOOD_VALUE), ts: 'accepts' },
    { name: 'overlapping an underlay network', line: lineOf('10.5.249.0-24', GOOD_VALUE), ts: 'rejects' },
    { name: 'covering an etcd endpoint', line: lineOf('10.5.99.0-24', GOOD_VALUE), ts: 'rejects' },
    { name: 'a non-canonical key ("010.5.3.0-24")', line: lineOf('010.5.3.0-24', GOOD_VALUE), ts: 'rejects' },
    { name: 'a non-canonical prefix length ("-024")', line: lineOf('10.5.3.0-024', GOOD_VALUE), ts: 'rejects' },
    { name: 'a dual-stack key', line: lineOf('10.5.3.0-24&fc00:0:0:3::-64', GOOD_VALUE), ts: 'accepts' },
    { name: 'a key nested under subnets/', line: lineOf('x/10.5.3.0-24', GOOD_VALUE), ts: 'rejects' },
    { name: 'a key under another prefix', line: watchLine([putEvent(NEW_KEY, GOOD_VALUE, '/coreos.com/other/subnets/')]), ts: 'rejects' },
    { name: 'a key under a longer directory ("subnets2/")', line: watchLine([putEvent(NEW_KEY, GOOD_VALUE, `${REGISTRY_PREFIX}/subnets2/`)]), ts: 'rejects' },
    { name: 'the config key', line: watchLine([`{"kv":${kvText(`${REGISTRY_PREFIX}/config`, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}')}}`]), ts: 'rejects' },
    // the lease
    { name: 'BackendType host-gw', line: lineOf(NEW_KEY, '{"PublicIP":"10.251.0.7","PublicIPv6":null,"BackendType":"host-gw"}'), ts: 'rejects' },
    { name: 'BackendType host-gw with vxlan BackendData', line: lineOf(NEW_KEY, leaseText({ type: 'host-gw' })), ts: 'rejects' },
    { name: 'BackendType udp', line: lineOf(NEW_KEY, '{"PublicIP":"10.251.0.7","PublicIPv6":null,"BackendType":"udp"}'), ts: 'rejects' },
    { name: 'no BackendType (the old udp backend)', line: lineOf(NEW_KEY, '{"PublicIP":"10.251.0.7","PublicIPv6":null}'), ts: 'rejects' },
    { name: 'VNI 2 (ours is 1)', line: lineOf(NEW_KEY, leaseText({ vni: '2' })), ts: 'rejects' },
    { name: 'VNI 0', line: lineOf(NEW_KEY, leaseText({ vni: '0' })), ts: 'rejects' },
    { name: 'VNI null', line: lineOf(NEW_KEY, leaseText({ vni: 'null' })), ts: 'accepts' },
    { name: 'VNI "1" (a string)', line: lineOf(NEW_KEY, leaseText({ vni: '"1"' })), ts: 'rejects' },
    { name: 'VNI 1.0', line: lineOf(NEW_KEY, leaseText({ vni: '1.0' })), ts: 'accepts' },
    { name: 'VNI 1e0', line: lineOf(NEW_KEY, leaseText({ vni: '1e0' })), ts: 'accepts' },
    { name: 'VNI 16777217 (25 bits)', line: lineOf(NEW_KEY, leaseText({ vni: '16777217' })), ts: 'rejects' },
    { name: 'VNI 4294967297 (1 modulo 2^32)', line: lineOf(NEW_KEY, leaseText({ vni: '4294967297' })), ts: 'rejects' },
    { name: 'an extra field in BackendData (WeftDatapath)', line: lineOf(NEW_KEY, leaseText({ extraData: '"WeftDatapath":"userspace"' })), ts: 'accepts' },
    { name: 'an extra top-level field', line: lineOf(NEW_KEY, leaseText({ extraTop: '"Extra":1' })), ts: 'accepts' },
    { name: 'a non-null BackendV6Data', line: lineOf(NEW_KEY, leaseText({ v6Data: '{"VNI":1,"VtepMAC":"0e:be:00:00:01:01"}' })), ts: 'accepts' },
    { name: 'a lease that is not an object', line: lineOf(NEW_KEY, '[1]'), ts: 'rejects' },
    { name: 'a lease with a trailing comma', line: lineOf(NEW_KEY, GOOD_VALUE.replace(/}}$/, '},}')), ts: 'rejects' },
    // base64
    { name: 'invalid base64 in the key', line: kvWith(`"key":"${K.slice(0, 4)}*${K.slice(5)}","mod_revision":"57","value":"${V}"`), ts: 'rejects' },
    { name: 'invalid base64 in the value', line: kvWith(`"key":"${K}","mod_revision":"57","value":"*${V.slice(1)}"`), ts: 'rejects' },
    { name: 'unpadded base64 in the value', line: kvWith(`"key":"${K}","mod_revision":"57","value":"${PADDED.replace(/=+$/, '')}"`), ts: 'accepts' },
    { name: 'base64 with a line break (\\r\\n escaped)', line: kvWith(`"key":"${K}","mod_revision":"57","value":"${V.slice(0, 8)}\\r\\n${V.slice(8)}"`), ts: 'accepts' },
    { name: 'no value', line: kvWith(`"key":"${K}","mod_revision":"57"`), ts: 'rejects' },
  ];
  runNegatives(cases, s);

  // Settings in which one check is the only one that refuses.
  runNegatives([
    { name: 'overlapping our own subnet (our lease a /20)', line: lineOf('10.5.17.0-24', GOOD_VALUE), ts: 'rejects', setup: makeSetup({ own: lease('10.5.16.0-20', '10.251.0.1', 'vxlan', { VNI: 1, VtepMAC: OWN_MAC }) }) },
    { name: 'covering our PublicIP (ours inside the Network)', line: lineOf('10.5.77.0-24', GOOD_VALUE), ts: 'rejects', setup: makeSetup({ own: lease('10.5.1.0-24', '10.5.77.1', 'vxlan', { VNI: 1, VtepMAC: OWN_MAC }) }) },
  ], s);
});

// The TypeScript wire checks the message's envelope and reads JSON as JSON.parse does (the last of
// two equal member names wins); a message it refuses ends the stream, and one it reads differently
// is another lease.
describe('native join decision: the envelope as the TypeScript wire reads it', () => {
  const s = makeSetup();
  const K = b64(PREFIX + NEW_KEY);
  const V = b64(GOOD_VALUE);
  const HOST_GW = b64('{"PublicIP":"10.251.0.7","PublicIPv6":null,"BackendType":"host-gw"}');
  const kvWith = (fields: string, opts: { header?: string | null; extra?: readonly string[] } = {}): string => watchLine([`{"kv":{${fields}}}`], opts);
  runNegatives([
    { name: 'a second "value" member (JSON.parse keeps the last: a host-gw lease)', line: kvWith(`"key":"${K}","mod_revision":"57","value":"${V}","value":"${HOST_GW}"`), ts: 'rejects' },
    { name: 'a second "key" member (JSON.parse keeps the last: our own key)', line: kvWith(`"key":"${K}","key":"${b64(`${PREFIX}10.5.1.0-24`)}","mod_revision":"57","value":"${V}"`), ts: 'rejects' },
    { name: 'a header revision that is a number', line: GOOD_LINE.replace('"revision":"57"', '"revision":57'), ts: 'rejects' },
    { name: 'a header that is not an object', line: kvWith(`"key":"${K}","mod_revision":"57","value":"${V}"`, { header: '"x"' }), ts: 'rejects' },
    { name: 'a watch_id that is a number', line: watchLine([putEvent(NEW_KEY, GOOD_VALUE)], { extra: ['"watch_id":1'] }), ts: 'rejects' },
    { name: 'a mod_revision that is not decimal', line: GOOD_LINE.replace('"mod_revision":"57"', '"mod_revision":"5x"'), ts: 'rejects' },
    { name: 'a lease ID that is a number', line: GOOD_LINE.replace('"lease":"7587862072446091012"', '"lease":7'), ts: 'rejects' },
    { name: 'no mod_revision (the registry watch drops revision 0 as replayed)', line: kvWith(`"key":"${K}","value":"${V}"`), ts: 'rejects' },
    { name: 'a number with a leading zero (not JSON)', line: GOOD_LINE.replace('"version":"1"', '"version":01'), ts: 'rejects' },
  ], s);
});

// ---- 3. differential fuzz -------------------------------------------------------------------------

/** mulberry32 */
function rng(seed: number): { next(): number; int(n: number): number; chance(p: number): boolean; pick<T>(a: readonly T[]): T } {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    chance: (p) => next() < p,
    pick: <T>(arr: readonly T[]): T => arr[Math.floor(next() * arr.length)]!,
  };
}
type Rng = ReturnType<typeof rng>;

const KEY_EDGE = [
  '10.5.1.0-24', '10.5.2.0-24', '10.5.4.0-24', '10.5.5.0-24', '10.5.6.0-24', '10.5.8.0-23', '10.5.9.0-24', '10.5.7.0-24', '10.5.77.0-24',
  '10.5.99.0-24', '10.5.249.0-24', '10.5.251.0-24', '10.5.0.0-24', '10.5.255.0-24', '10.5.3.0-25', '10.5.3.128-25', '10.5.2.0-23', '10.5.0.0-16',
  '10.6.3.0-24', '10.4.255.0-24', '10.5.3.1-24', '010.5.3.0-24', '10.5.3.0-024', '10.5.3.0-24&fc00:0:0:3::-64', '10.5.3.0-24/x', 'x/10.5.3.0-24',
  '', '10.5.300.0-24', '10.5.3.0-33', '10.5.3.0-24 ', ' 10.5.3.0-24', '0.0.0.0-0', '10.5.3.0-', '10.5.3-24', '10.5.3.0.0-24', '10.5.3.0-24-24',
];
const PREFIX_EDGE = [`${REGISTRY_PREFIX}/subnet/`, '/coreos.com/other/subnets/', `${REGISTRY_PREFIX}/subnets2/`, REGISTRY_PREFIX, `${REGISTRY_PREFIX}//subnets/`, 'coreos.com/network/subnets/', ''];
const PUB_EDGE = [
  '10.251.0.1', '10.251.0.2', '10.251.0.4', '10.251.0.5', '10.251.0.8', '10.5.7.7', '10.251.0.250', '10.5.99.7',
  '127.0.0.1', '224.1.2.3', '239.255.255.255', '0.1.2.3', '0.0.0.0', '240.0.0.1', '255.255.255.255', '255.255.255.254', '223.255.255.255', '1.0.0.0',
  '10.5.77.7', '10.5.0.0', '10.5.255.255', '10.4.255.255', '10.6.0.0', '010.251.0.7', '10.251.0.256', '10.251.0.7 ', ' 10.251.0.7', '10.251.0', '', 'fd00::7', '::ffff:10.251.0.7',
];
const MAC_EDGE = [
  OWN_MAC, '0e:be:00:00:00:02', '0e:be:00:00:00:04', '0E:BE:00:00:00:04', '0e:be:00:00:00:08', '0e:be:00:00:00:06', '0E:BE:00:00:01:01', '0e:BE:00:00:01:01',
  '00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '33:33:00:00:00:01', '0f:be:00:00:01:01', '0e:be:00:00:01', '0e:be:00:00:01:01:02',
  '0e-be-00-00-01-01', '0ebe.0000.0101', '0e:be:00:00:01:0g', ' 0e:be:00:00:01:01', '0e:be:00:00:01:01 ', '', 'e:be:00:00:01:01',
];
const VNI_POOL = ['1', '1', '1', '1', '2', '0', 'null', '"1"', '16777215', '16777216', '1.0', '1e0', '-1', '01', '10000', '4294967297', 'true', '[]'];
const TYPE_POOL = ['"host-gw"', '"udp"', '"VXLAN"', '"vxlan "', '""', 'null', '1', '"wireguard"'];

function goodKey(r: Rng): string {
  // Mostly fresh /24s of the Network, some of them taken by another line of the run (no matter:
  // each line is judged against the same known set).
  return `10.5.${r.chance(0.9) ? 10 + r.int(60) : r.int(256)}.0-24`;
}
function goodPub(r: Rng): string {
  return r.chance(0.7) ? `10.251.0.${10 + r.int(230)}` : `192.168.${r.int(256)}.${1 + r.int(254)}`;
}
function someMac(r: Rng): string {
  const rest = Array.from({ length: 5 }, () => hex2(r.int(256))).join(':');
  if (r.chance(0.6)) return `0e:${rest}`;
  if (r.chance(0.5)) return r.pick(MAC_EDGE);
  return `${hex2(r.pick([0x00, 0x01, 0x02, 0x03, 0x0e, 0x0f, 0x10, 0xaa, 0xab, 0xfe, 0xff]))}:${r.chance(0.8) ? rest : rest.toUpperCase()}`;
}

/** A lease value from small pools: mostly good, with every field sometimes an edge value. */
function randomLease(r: Rng): string {
  const fields: [string, string][] = [];
  fields.push(['PublicIP', r.chance(0.75) ? JSON.stringify(goodPub(r)) : r.chance(0.9) ? JSON.stringify(r.pick(PUB_EDGE)) : r.pick(['null', '1', '[]'])]);
  if (!r.chance(0.04)) fields.push(['PublicIPv6', r.chance(0.92) ? 'null' : r.pick(['"fd00::7"', '1', '"x"', '""'])]);
  if (!r.chance(0.02)) fields.push(['BackendType', r.chance(0.88) ? '"vxlan"' : r.pick(TYPE_POOL)]);
  const data: [string, string][] = [];
  if (!r.chance(0.3)) data.push(['VNI', r.chance(0.8) ? '1' : r.pick(VNI_POOL)]);
  if (!r.chance(0.02)) data.push(['VtepMAC', r.chance(0.97) ? JSON.stringify(someMac(r)) : r.pick(['null', '1', '[]'])]);
  if (r.chance(0.04)) data.push(['WeftDatapath', '"userspace"']);
  if (r.chance(0.04)) data.push(r.pick<[string, string]>([['VNI', r.pick(VNI_POOL)], ['VtepMAC', JSON.stringify(someMac(r))]])); // a second member of one name
  if (r.chance(0.1)) data.reverse();
  if (!r.chance(0.02)) fields.push(['BackendData', r.chance(0.96) ? `{${data.map(([k, v]) => `"${k}":${v}`).join(',')}}` : r.pick(['null', '{}', '[]', '"x"'])]);
  if (r.chance(0.06)) fields.push(['BackendV6Data', r.pick(['null', 'null', '{}', '{"VNI":1,"VtepMAC":"0e:be:00:00:09:09"}'])]);
  if (r.chance(0.03)) fields.push([r.pick(['Extra', 'publicip', 'PublicIp', 'BackendDatas']), r.pick(['1', 'null', '"10.251.0.9"'])]);
  if (r.chance(0.04)) {
    // A second member of one name: JSON.parse keeps the last.
    fields.push(r.pick<[string, string]>([['PublicIP', JSON.stringify(r.pick(PUB_EDGE))], ['BackendType', r.pick(TYPE_POOL)], ['PublicIPv6', 'null'], ['BackendData', '{"VNI":1,"VtepMAC":"0e:be:00:00:07:07"}']]));
  }
  if (r.chance(0.08)) {
    for (let i = fields.length - 1; i > 0; i--) {
      const j = r.int(i + 1);
      [fields[i], fields[j]] = [fields[j]!, fields[i]!];
    }
  }
  const sep = r.chance(0.05) ? ' : ' : ':';
  return `{${fields.map(([k, v]) => `"${k}"${sep}${v}`).join(r.chance(0.05) ? ' , ' : ',')}}`;
}

function randomKv(r: Rng, fullKey: string, value: string): string {
  const rev = r.chance(0.95) ? '57' : r.pick(['0', '1', '9223372036854775807']);
  const members = [`"key":"${b64(fullKey)}"`, `"create_revision":"${rev}"`];
  if (!r.chance(0.02)) members.push(`"mod_revision":"${rev}"`);
  members.push('"version":"1"', `"value":"${b64(value)}"`);
  if (r.chance(0.8)) members.push('"lease":"7587862072446091012"');
  return `{${members.join(',')}}`;
}

function randomEvent(r: Rng): string {
  const key = r.chance(0.8) ? goodKey(r) : r.pick(KEY_EDGE);
  const prefix = r.chance(0.97) ? PREFIX : r.pick(PREFIX_EDGE);
  const kv = randomKv(r, prefix + key, randomLease(r));
  const type = r.chance(0.88) ? '' : r.chance(0.8) ? '"type":"PUT",' : r.pick(['"type":"DELETE",', '"type":"put",', '"type":null,']);
  return `{${type}"kv":${kv}}`;
}

/** A random message: mostly one PUT with a plain envelope. */
function randomLine(r: Rng): Buffer {
  const header = r.chance(0.85) ? HEADER : r.chance(0.6) ? null : r.pick(['{}', '{"revision":"0"}', '{"revision":"18446744073709551615"}']);
  const extra: string[] = [];
  if (r.chance(0.15)) extra.push(r.pick(['"watch_id":"1"', '"watch_id":"0"', '"watch_id":"-1"', '"watch_id":"2"']));
  if (r.chance(0.05)) extra.push(r.pick(['"created":false', '"created":true', '"canceled":false', '"canceled":true', '"fragment":false', '"fragment":true',
    '"compact_revision":"0"', '"compact_revision":"12"', '"cancel_reason":""']));
  const n = r.chance(0.95) ? 1 : r.pick([0, 2, 3]);
  const events = Array.from({ length: n }, () => randomEvent(r));
  return Buffer.from(watchLine(events, { header, extra }));
}

const INTERESTING = [...'"\\{}[],:0123456789 -.=/+AZaz\r\n\t'].map((c) => c.charCodeAt(0)).concat([0x00, 0x7f, 0x80, 0xc3, 0xff]);

function mutateBytes(r: Rng, input: Buffer): Buffer {
  let b = Buffer.from(input);
  const ops = 1 + r.int(3);
  for (let k = 0; k < ops && b.length > 0; k++) {
    const at = r.int(b.length);
    switch (r.int(6)) {
      case 0: // replace a byte
        b[at] = r.chance(0.5) ? r.pick(INTERESTING) : r.int(256);
        break;
      case 1: // flip a bit
        b[at] = b[at]! ^ (1 << r.int(8));
        break;
      case 2: // insert a byte
        b = Buffer.concat([b.subarray(0, at), Buffer.from([r.chance(0.7) ? r.pick(INTERESTING) : r.int(256)]), b.subarray(at)]);
        break;
      case 3: // delete a run
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + r.int(4)))]);
        break;
      case 4: // truncate
        b = b.subarray(0, at);
        break;
      default: { // copy a slice elsewhere (duplicate members now and then)
        const from = r.int(b.length);
        const len = 1 + r.int(Math.min(60, b.length - from));
        b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + len), b.subarray(at)]);
      }
    }
  }
  return b;
}

/** A line of one good PUT with the key, the lease text or the whole line mutated. */
function mutatedLine(r: Rng): Buffer {
  const key = goodKey(r);
  const value = leaseText({ pub: goodPub(r), mac: `0e:${Array.from({ length: 5 }, () => hex2(r.int(256))).join(':')}`, vni: r.chance(0.7) ? '1' : null });
  switch (r.int(4)) {
    case 0: { // the lease text, then base64
      const v = mutateBytes(r, Buffer.from(value));
      return Buffer.from(watchLine([`{"kv":{"key":"${b64(PREFIX + key)}","create_revision":"57","mod_revision":"57","version":"1","value":"${v.toString('base64')}"}}`]));
    }
    case 1: { // the key, then base64
      const k = mutateBytes(r, Buffer.from(PREFIX + key));
      return Buffer.from(watchLine([`{"kv":{"key":"${k.toString('base64')}","create_revision":"57","mod_revision":"57","version":"1","value":"${b64(value)}"}}`]));
    }
    default: // the line itself
      return mutateBytes(r, Buffer.from(lineOf(key, value)));
  }
}

describe('native join decision: differential fuzz against the TypeScript reference', () => {
  it('never throws, and takes only what the TypeScript takes, with the same objects', (t) => {
    const s = makeSetup();
    configure(s);
    const seed = Number(process.env.WEFT_FUZZ_SEED ?? 0x5eed14);
    const r = rng(seed);
    const RANDOM = 3000;
    const MUTATED = 3000;
    let accepted = 0;
    let acceptedMutated = 0;
    let conservative = 0; // refused by the C++, taken by the TypeScript
    let checkedConservative = 0;
    const found = new Map<string, { count: number; example: Buffer; why: string }>();
    for (let i = 0; i < RANDOM + MUTATED; i++) {
      const line = i < RANDOM ? randomLine(r) : mutatedLine(r);
      const d = disagreement(s, line);
      if (d.accepted) {
        accepted++;
        if (i >= RANDOM) acceptedMutated++;
      } else if (d.why === null && i % 4 === 0) {
        // The other direction, sampled: how much the C++ leaves to JavaScript that it could take.
        checkedConservative++;
        if (reference(s, line).ok) conservative++;
      }
      if (d.why !== null) {
        const cat = d.category ?? d.why;
        const f = found.get(cat);
        if (f === undefined) found.set(cat, { count: 1, example: line, why: d.why });
        else f.count++;
      }
    }
    t.diagnostic(`seed ${seed}: ${RANDOM + MUTATED} lines, ${accepted} taken by the C++ (${acceptedMutated} of them mutated lines);`
      + ` of ${checkedConservative} sampled lines it refused, the TypeScript would take ${conservative}`);
    const report = [...found.entries()].map(([cat, f]) => `  ${f.count} × ${cat}\n    e.g. ${f.why}\n      ${show(f.example)}`).join('\n');
    for (const [cat, f] of found) t.diagnostic(`disagreement: ${f.count} × ${cat}`);
    assert.equal(found.size, 0, `the C++ takes lines the TypeScript refuses or reads differently (seed ${seed}):\n${report}`);
    assert.ok(accepted >= 300, `only ${accepted} lines taken: the fuzz says little`);
    assert.ok(acceptedMutated >= 25, `only ${acceptedMutated} mutated lines taken`);
  });

  it('never throws on odd input', () => {
    const s = makeSetup();
    configure(s);
    const odd: Uint8Array[] = [
      new Uint8Array(0), Buffer.from(' '), Buffer.from('\n'), Buffer.from('{}'), Buffer.from('[]'), Buffer.from('null'), Buffer.from('"x"'), Buffer.from('-'),
      Buffer.from('{"result":'), Buffer.from('{"result":{"events":[{"kv":{"key":"'), Buffer.from('{"result":{"events":[{"kv":{"key":"","value":""}}]}}'),
      Buffer.from('['.repeat(100_000)), Buffer.from('{"a":'.repeat(50_000)), Buffer.from(`{"result":{"header":{"x":"${'a'.repeat(1 << 20)}"}}}`),
      Buffer.from(`{"result":{"header":{${Array.from({ length: 300 }, (_, i) => `"k${i}":${i}`).join(',')}},"events":[${putEvent(NEW_KEY, GOOD_VALUE)}]}}`),
      Buffer.from(watchLine(Array.from({ length: 200 }, () => putEvent(NEW_KEY, GOOD_VALUE)))),
      Buffer.from(lineOf(NEW_KEY, `{"PublicIP":"${'9'.repeat(10_000)}"}`)),
      Buffer.from(lineOf(NEW_KEY, leaseText({ vni: '9'.repeat(400) }))),
      Buffer.from(lineOf(`${'1'.repeat(5000)}.0.0.0-24`, GOOD_VALUE)),
      new Uint8Array(new ArrayBuffer(64), 64, 0),
    ];
    for (let b = 0; b < 256; b++) odd.push(Uint8Array.of(b));
    const r = rng(7);
    for (let i = 0; i < 500; i++) odd.push(Uint8Array.from({ length: r.int(300) }, () => r.int(256)));
    for (const line of odd) {
      const d = disagreement(s, Buffer.from(line.buffer, line.byteOffset, line.byteLength));
      assert.equal(d.why, null, d.why ?? '');
    }
    assert.throws(() => (native.fastJoinDecide as (line: unknown) => unknown)('{"result":{}}'), TypeError);
  });
});

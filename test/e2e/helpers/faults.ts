/**
 * Shared by the faults-*.test.ts files: continuous pings with loss accounting, CPU of a process
 * from /proc, lease look-ups through the lab's etcdctl, and a poll-until that fails the test.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Lab } from '../../../src/lab';
import { waitUntil as pollUntil } from '../../../src/lab/run';

/** Poll `check` every `intervalMs`; fail with `what` when it is not true within `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 50): Promise<void> {
  assert.ok(await pollUntil(check, timeoutMs, intervalMs), `timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** utime + stime of a process, in clock ticks (USER_HZ = 100 on Linux). */
export function cpuTicks(pid: number): number {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** Percent of one core used between two cpuTicks() readings `ms` apart. */
export function cpuPercent(ticksBefore: number, ticksAfter: number, ms: number): number {
  return ((ticksAfter - ticksBefore) * 10) / ms * 100;
}

export interface PingRun {
  readonly from: string;
  readonly to: string;
  readonly sent: number;
  readonly received: number;
  /** Longest run of consecutive unanswered probes. */
  readonly longestGap: number;
  readonly intervalMs: number;
  readonly output: string;
}

/**
 * Ping `to` from `from` every `intervalMs` for about `durationMs` (one ping process, -W 1).
 * Resolves when it is done, with which probes went unanswered.
 */
export async function pingFor(lab: Lab, from: string, to: string, durationMs: number, intervalMs = 200): Promise<PingRun> {
  const target = to.includes('.') ? to : lab.subnetEnv(to.replace(/-c1$/, ''))!.containerAddress.split('/')[0]!;
  const count = Math.ceil(durationMs / intervalMs);
  const r = await lab.exec(from, ['ping', '-n', '-c', String(count), '-i', String(intervalMs / 1000), '-W', '1', target], {
    timeoutMs: durationMs + 15_000,
  });
  const got = new Set([...r.stdout.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1])));
  let longestGap = 0;
  let gap = 0;
  for (let seq = 1; seq <= count; seq++) {
    gap = got.has(seq) ? 0 : gap + 1;
    longestGap = Math.max(longestGap, gap);
  }
  return { from, to, sent: count, received: got.size, longestGap, intervalMs, output: r.stdout.trim().split('\n').slice(-2).join(' | ') };
}

export function describePing(p: PingRun): string {
  return `${p.from} → ${p.to}: ${p.received}/${p.sent} answered, longest gap ${p.longestGap} probe(s) (${p.longestGap * p.intervalMs} ms)`;
}

/** subnet key ("10.5.36.0-24") of a lab host, from its subnet.env. */
export function keyOf(lab: Lab, host: string): string {
  const env = lab.subnetEnv(host);
  assert.ok(env, `no subnet.env on ${host}`);
  return env.subnetNetwork.replace('/', '-');
}

export interface EtcdKv {
  readonly value: string;
  /** etcd lease ID, decimal ('0' for none). */
  readonly lease: string;
}

/** One subnet key as etcd holds it, or null. */
export async function getSubnetKey(lab: Lab, key: string, prefix = '/coreos.com/network'): Promise<EtcdKv | null> {
  const r = await lab.etcdctl(['get', `${prefix}/subnets/${key}`, '-w', 'json']);
  if (r.code !== 0) return null;
  const doc = JSON.parse(r.stdout) as { kvs?: { value: string }[] };
  const kv = doc.kvs?.[0];
  if (!kv) return null;
  // Lease IDs are 64-bit: read them from the text, JSON.parse would round them.
  const lease = /"lease":(\d+)/.exec(r.stdout)?.[1] ?? '0';
  return { value: Buffer.from(kv.value, 'base64').toString('utf8'), lease };
}

export function vtepOf(value: string): string {
  return (JSON.parse(value) as { BackendData: { VtepMAC: string } }).BackendData.VtepMAC;
}

/** Lines a daemon's log gained since `before` (a previous daemonLog().length). */
export function logSince(lab: Lab, host: string, before: number): string {
  return lab.daemonLog(host).slice(before);
}

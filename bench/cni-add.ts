/**
 * CNI ADD cost of the weft plugin: median of 20 ADDs (and DELs) into fresh namespaces, beside
 * the same ADD done by Debian's bridge plugin directly (what the weft plugin delegates to) and a
 * bare `node` start-up — the difference is what weft's meta-plugin costs per container.
 *
 *   node dist/bench/cni-add.js [--runs 20]     (as root; namespaces wt<pid>b-…, removed at the end)
 *
 * Prints the figures and writes bench/results/cni-add.json.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { findTools } from '../src/lab';
import { Netns } from '../src/lab/netns';
import { parseFlannelEnv, parseNetConf, renderDelegate } from '../src/cni/netconf';

const PLUGIN = resolve(__dirname, '..', 'src', 'cli', 'weft-cni.js');
const CNI_PATH = '/usr/lib/cni';
const PREFIX = `wt${process.pid}b-`;
const HOST = `${PREFIX}h`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

function timed(file: string, args: string[], input: string, env: NodeJS.ProcessEnv): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(file, args, { input, env, encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')}: exit ${r.status}: ${r.stdout}${r.stderr}`);
  return ms;
}

async function main(): Promise<void> {
  const runsArg = process.argv.indexOf('--runs');
  const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 20;
  const netns = new Netns(findTools().ip);
  const dir = mkdtempSync(join(tmpdir(), `${PREFIX}`));
  const subnetFile = join(dir, 'subnet.env');
  writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
  const weftConf = JSON.stringify({ cniVersion: '1.0.0', name: 'weft', type: 'weft', subnetFile, dataDir: join(dir, 'data'), ipam: { dataDir: join(dir, 'ipam') }, delegate: { isDefaultGateway: true } });
  // The very config the weft plugin renders, handed to bridge directly (its own ipam dir, same bridge).
  const bridgeConf = JSON.stringify(renderDelegate(parseNetConf(weftConf.replace(join(dir, 'ipam'), join(dir, 'ipam-direct'))),
    parseFlannelEnv('FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n', 'x')));
  const created: string[] = [];
  const results: Record<string, number[]> = { weftAdd: [], weftDel: [], bridgeAdd: [], bridgeDel: [], nodeStart: [], weftVersion: [] };
  try {
    await netns.add(HOST);
    created.push(HOST);
    mkdirSync(join(dir, 'data'), { recursive: true });
    const env = (cmd: string, id: string, ns: string): NodeJS.ProcessEnv => ({
      PATH: process.env.PATH, CNI_COMMAND: cmd, CNI_CONTAINERID: id, CNI_NETNS: `/run/netns/${ns}`, CNI_IFNAME: 'eth0', CNI_PATH,
    });
    const inHost = (argv: string[]) => ['nsenter', [`--net=/run/netns/${HOST}`, ...argv]] as const;
    // One warm-up of each (page cache, iptables chains), not counted.
    for (let i = 0; i <= runs; i++) {
      for (const kind of ['weft', 'bridge'] as const) {
        const ns = `${PREFIX}${kind[0]}${i}`;
        await netns.add(ns);
        created.push(ns);
        const [file, args] = kind === 'weft' ? inHost([PLUGIN]) : inHost([join(CNI_PATH, 'bridge')]);
        const conf = kind === 'weft' ? weftConf : bridgeConf;
        const add = timed(file, [...args], conf, env('ADD', `${kind}${i}`, ns));
        const del = timed(file, [...args], conf, env('DEL', `${kind}${i}`, ns));
        if (i > 0) {
          results[`${kind}Add`]?.push(add);
          results[`${kind}Del`]?.push(del);
        }
      }
      // The same lean environment the plugin runs with (see weft-cni.ts on NODE_EXTRA_CA_CERTS).
      const t = timed(process.execPath, ['-e', ''], '', { PATH: process.env.PATH });
      const v = timed(PLUGIN, [], '', { PATH: process.env.PATH, CNI_COMMAND: 'VERSION' });
      if (i > 0) {
        results.nodeStart?.push(t);
        results.weftVersion?.push(v);
      }
    }
  } finally {
    for (const ns of created.reverse()) await netns.delete(ns).catch(() => false);
    rmSync(dir, { recursive: true, force: true });
  }
  const out = Object.fromEntries(Object.entries(results).map(([k, v]) => [k, Math.round(median(v) * 10) / 10]));
  const line = (label: string, key: string) => console.log(`${label.padEnd(44)} ${String(out[key]).padStart(7)} ms`);
  console.log(`CNI, median of ${runs} (nsenter into the host namespace included):`);
  line('weft plugin ADD (→ bridge → host-local)', 'weftAdd');
  line('bridge plugin ADD directly (same config)', 'bridgeAdd');
  line('weft plugin DEL', 'weftDel');
  line('bridge plugin DEL directly', 'bridgeDel');
  line('node start-up alone (node -e "")', 'nodeStart');
  line('weft plugin VERSION (start-up + its imports)', 'weftVersion');
  console.log(`weft's own cost per ADD: ${Math.round(((out.weftAdd ?? 0) - (out.bridgeAdd ?? 0)) * 10) / 10} ms`);
  const file = resolve(__dirname, '..', '..', 'bench', 'results', 'cni-add.json');
  mkdirSync(resolve(file, '..'), { recursive: true });
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
  console.log(`load average during the run: ${load} (figures scale with it: node start-up is ~40 ms on an idle core)`);
  writeFileSync(file, JSON.stringify({ runs, medianMs: out, loadAverage: Number(load), at: new Date().toISOString() }, null, 2) + '\n');
  console.log(`wrote ${file}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exitCode = 1;
});

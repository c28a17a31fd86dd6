/**
 * The iptables rules weft keeps (compat §7), as pure data and pure planning: what we want, what
 * `iptables-save` shows, and the smallest `iptables-restore --noflush` input that turns one into
 * the other. No process is run here (see runner.ts); everything is unit-tested.
 *
 * flannel's rule sets, in chains of weft's own (a weft host and a flanneld host never fight over
 * FLANNEL-POSTRTG / FLANNEL-FWD), every rule commented so `iptables-save` shows who made it:
 *
 *   nat:    -A POSTROUTING -m comment --comment "weft masq" -j WEFT-POSTRTG
 *           WEFT-POSTRTG: kube-proxy's mark → RETURN (no double NAT)
 *                         <subnet> → <Network> RETURN; <Network> → <subnet> RETURN (overlay traffic)
 *                         !<Network> → <subnet> RETURN (external traffic to our containers)
 *                         <Network> → !224.0.0.0/4 MASQUERADE (containers to the outside)
 *                         !<Network> → <Network> MASQUERADE (the host into the overlay)
 *   filter: -A FORWARD -m comment --comment "weft forward" -j WEFT-FWD
 *           WEFT-FWD: -s <Network> ACCEPT; -d <Network> ACCEPT
 *
 * Lines are written in the canonical form `iptables-save` prints them (matches before the
 * comment, the comment before the target), for both the nf_tables and the legacy variant, so
 * "is it there" is a string comparison.
 *
 * Ownership: weft's chains belong to weft wholly; in built-in chains only rules jumping to one of
 * weft's chains are weft's. Order inside our chains matters (a RETURN after the MASQUERADE it
 * should prevent is useless), so a chain that differs in any way is rewritten as a whole — a chain
 * declaration in iptables-restore --noflush input flushes that chain and only that chain. A
 * missing jump rule is appended on its own; duplicates and stale forms of it are deleted.
 */
import { familyOf, formatCidr, type IPNet } from '../ip';

export type Table = 'nat' | 'filter';

export const MASQ_CHAIN = 'WEFT-POSTRTG';
export const FORWARD_CHAIN = 'WEFT-FWD';
export const MASQ_COMMENT = 'weft masq';
export const FORWARD_COMMENT = 'weft forward';
/** kube-proxy marks packets it will masquerade itself with this bit (flannel's KubeProxyMark). */
export const KUBE_PROXY_MARK = '0x4000/0x4000';
/** Multicast is never masqueraded: 224.0.0.0/4, and for ip6tables (flannel's MasqIP6Rules) ff00::/8. */
const MULTICAST = { 4: '224.0.0.0/4', 6: 'ff00::/8' } as const;

/** Every chain weft may create, by table: what `weft cleanup` removes. */
export const WEFT_CHAINS: readonly { readonly table: Table; readonly chain: string }[] = [
  { table: 'nat', chain: MASQ_CHAIN },
  { table: 'filter', chain: FORWARD_CHAIN },
];

export interface OwnedChain {
  readonly table: Table;
  readonly name: string;
  /** Complete "-A <name> ..." lines, in order. */
  readonly rules: readonly string[];
}

export interface JumpRule {
  readonly table: Table;
  /** The built-in chain holding the jump, e.g. POSTROUTING. */
  readonly chain: string;
  /** The complete "-A <chain> ... -j <target>" line. */
  readonly rule: string;
  readonly target: string;
}

export interface RuleSet {
  readonly chains: readonly OwnedChain[];
  readonly jumps: readonly JumpRule[];
}

export const EMPTY_RULESET: RuleSet = { chains: [], jumps: [] };

export interface WantedInput {
  /** The flannel Network (cluster CIDR): IPv4 for iptables, IPv6 (IPv6Network) for ip6tables. */
  readonly network: IPNet;
  /** This host's leased subnet (pod CIDR), of the same family. */
  readonly subnet: IPNet;
  readonly ipMasq: boolean;
  readonly forwardRules: boolean;
  /** Append --random-fully to MASQUERADE (iptables >= 1.6.2, as flannel decides). */
  readonly randomFully: boolean;
}

function comment(text: string): string {
  return `-m comment --comment "${text}"`;
}

/** flannel's MasqRules and ForwardRules for this host, in weft's chains. */
export function wantedRules(input: WantedInput): RuleSet {
  const chains: OwnedChain[] = [];
  const jumps: JumpRule[] = [];
  const net = formatCidr(input.network);
  const sub = formatCidr(input.subnet);
  const multicast = MULTICAST[familyOf(input.network)];
  if (input.ipMasq) {
    const c = comment(MASQ_COMMENT);
    const masq = `-j MASQUERADE${input.randomFully ? ' --random-fully' : ''}`;
    const a = `-A ${MASQ_CHAIN}`;
    chains.push({
      table: 'nat',
      name: MASQ_CHAIN,
      rules: [
        `${a} -m mark --mark ${KUBE_PROXY_MARK} ${c} -j RETURN`,
        `${a} -s ${sub} -d ${net} ${c} -j RETURN`,
        `${a} -s ${net} -d ${sub} ${c} -j RETURN`,
        `${a} ! -s ${net} -d ${sub} ${c} -j RETURN`,
        `${a} -s ${net} ! -d ${multicast} ${c} ${masq}`,
        `${a} ! -s ${net} -d ${net} ${c} ${masq}`,
      ],
    });
    jumps.push({ table: 'nat', chain: 'POSTROUTING', target: MASQ_CHAIN, rule: `-A POSTROUTING ${c} -j ${MASQ_CHAIN}` });
  }
  if (input.forwardRules) {
    const c = comment(FORWARD_COMMENT);
    chains.push({
      table: 'filter',
      name: FORWARD_CHAIN,
      rules: [`-A ${FORWARD_CHAIN} -s ${net} ${c} -j ACCEPT`, `-A ${FORWARD_CHAIN} -d ${net} ${c} -j ACCEPT`],
    });
    jumps.push({ table: 'filter', chain: 'FORWARD', target: FORWARD_CHAIN, rule: `-A FORWARD ${c} -j ${FORWARD_CHAIN}` });
  }
  return { chains, jumps };
}

// ---------------------------------------------------------------------------------------------
// iptables-save output

export interface SavedTable {
  /** Every chain declared in the table (built-in and user-defined). */
  readonly chains: ReadonlySet<string>;
  /** Its "-A ..." lines, in order. */
  readonly rules: readonly string[];
}

/** Tables of an `iptables-save` dump, by name. Counters ("[0:0]" prefixes with -c) are not expected. */
export function parseIptablesSave(text: string): Map<string, SavedTable> {
  const out = new Map<string, { chains: Set<string>; rules: string[] }>();
  let cur: { chains: Set<string>; rules: string[] } | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('*')) {
      cur = { chains: new Set(), rules: [] };
      out.set(line.slice(1), cur);
    } else if (cur === null || line === '' || line.startsWith('#')) {
      continue;
    } else if (line.startsWith(':')) {
      cur.chains.add(line.slice(1).split(' ')[0]!);
    } else if (line.startsWith('-A ')) {
      cur.rules.push(line);
    } else if (line === 'COMMIT') {
      cur = null;
    }
  }
  return out;
}

/** "-A FOO ..." → "FOO". */
function chainOf(rule: string): string {
  return rule.split(' ')[1] ?? '';
}

/** The jump target of a rule ("-j X"), or null. */
export function targetOf(rule: string): string | null {
  return / -j (\S+)/.exec(rule)?.[1] ?? null;
}

// ---------------------------------------------------------------------------------------------
// Planning

export interface RestorePlan {
  /** Input for `iptables-restore --noflush`; null when nothing needs to change. */
  readonly text: string | null;
  /** One line per change, for the log and the CLI. */
  readonly changes: readonly string[];
}

/**
 * The `iptables-restore --noflush` input that makes `actual` hold `wanted`, touching only weft's
 * rules: chains in `owned` that are not wanted are removed (jumps to them first), wanted chains
 * that differ are rewritten whole, missing jump rules appended, duplicate or stale jumps deleted.
 * Planning against an empty RuleSet is `weft cleanup`.
 */
export function planRestore(
  wanted: RuleSet,
  actual: ReadonlyMap<string, SavedTable>,
  owned: readonly { readonly table: Table; readonly chain: string }[] = WEFT_CHAINS,
): RestorePlan {
  const changes: string[] = [];
  const blocks: string[] = [];
  const tables = new Set<Table>([...wanted.chains.map((c) => c.table), ...wanted.jumps.map((j) => j.table), ...owned.map((o) => o.table)]);
  for (const table of [...tables].sort()) {
    const saved = actual.get(table) ?? { chains: new Set<string>(), rules: [] };
    const declare: string[] = [];
    const deletes: string[] = [];
    const appends: string[] = [];
    const removes: string[] = [];
    const wantedChains = wanted.chains.filter((c) => c.table === table);
    const ownedHere = new Set([...owned.filter((o) => o.table === table).map((o) => o.chain), ...wantedChains.map((c) => c.name)]);

    for (const chain of wantedChains) {
      const have = saved.rules.filter((r) => chainOf(r) === chain.name);
      const same = saved.chains.has(chain.name) && have.length === chain.rules.length && have.every((r, i) => r === chain.rules[i]);
      if (same) continue;
      declare.push(`:${chain.name} - [0:0]`);
      appends.push(...chain.rules);
      changes.push(!saved.chains.has(chain.name)
        ? `${table}: create chain ${chain.name} with ${chain.rules.length} rule(s)`
        : `${table}: rewrite chain ${chain.name} (${describeDiff(have, chain.rules)})`);
    }

    // Rules in chains we do not own that jump into ours: keep exactly one copy of each wanted jump.
    const wantedJumps = wanted.jumps.filter((j) => j.table === table);
    const seen = new Set<string>();
    for (const rule of saved.rules) {
      const target = targetOf(rule);
      if (target === null || !ownedHere.has(target) || ownedHere.has(chainOf(rule))) continue;
      const isWanted = wantedJumps.some((j) => j.rule === rule);
      if (isWanted && !seen.has(rule)) {
        seen.add(rule);
        continue;
      }
      deletes.push(`-D${rule.slice(2)}`);
      changes.push(`${table}: delete ${isWanted ? 'duplicate' : 'stale'} rule "${rule}"`);
    }
    for (const j of wantedJumps) {
      if (seen.has(j.rule)) continue;
      appends.push(j.rule);
      changes.push(`${table}: add rule "${j.rule}"`);
    }

    // Chains of ours that are no longer wanted: flush and delete (after their jumps are gone).
    for (const chain of ownedHere) {
      if (wantedChains.some((c) => c.name === chain) || !saved.chains.has(chain)) continue;
      removes.push(`-F ${chain}`, `-X ${chain}`);
      changes.push(`${table}: delete chain ${chain}`);
    }

    if (declare.length + deletes.length + appends.length + removes.length === 0) continue;
    blocks.push([`*${table}`, ...declare, ...deletes, ...appends, ...removes, 'COMMIT'].join('\n'));
  }
  return { text: blocks.length === 0 ? null : `${blocks.join('\n')}\n`, changes };
}

function describeDiff(have: readonly string[], want: readonly string[]): string {
  const missing = want.filter((r) => !have.includes(r)).length;
  const extra = have.filter((r) => !want.includes(r)).length;
  const parts: string[] = [];
  if (missing > 0) parts.push(`${missing} missing`);
  if (extra > 0) parts.push(`${extra} unexpected`);
  if (parts.length === 0) parts.push('out of order');
  return parts.join(', ');
}

/** The parts of an iptables version string weft cares about: "iptables v1.8.9 (nf_tables)". */
export interface IptablesVersion {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
  /** 'nf_tables' or 'legacy'; 'legacy' for old versions that do not say. */
  readonly mode: 'nf_tables' | 'legacy';
}

export function parseIptablesVersion(text: string): IptablesVersion | null {
  const m = /v(\d+)\.(\d+)\.(\d+)(?:\s+\((nf_tables|legacy)\))?/.exec(text);
  if (m === null) return null;
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]), mode: m[4] === 'nf_tables' ? 'nf_tables' : 'legacy' };
}

/** flannel (go-iptables' HasRandomFully): MASQUERADE --random-fully needs iptables 1.6.2 or later. */
export function supportsRandomFully(v: IptablesVersion): boolean {
  return v.major > 1 || (v.major === 1 && (v.minor > 6 || (v.minor === 6 && v.patch >= 2)));
}

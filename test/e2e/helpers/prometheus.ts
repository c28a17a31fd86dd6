/**
 * A strict parser of the Prometheus text exposition format 0.0.4, for tests: it rejects what
 * Prometheus would reject (bad names, bad label syntax or escapes, non-numeric values, a TYPE
 * after its samples or twice, samples of one family split apart, duplicate series) so a test that
 * parses /metrics proves a scraper would accept it.
 */

export interface ParsedSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface ParsedFamily {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  readonly help: string | null;
  readonly samples: ParsedSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export function parsePrometheusText(text: string): Map<string, ParsedFamily> {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const families = new Map<string, ParsedFamily>();
  const closed = new Set<string>();
  const seen = new Set<string>();
  let current: string | null = null;
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((line, i) => {
    const where = `line ${i + 1} ${JSON.stringify(line)}`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (m === null) return; // a plain comment
      const [, kind, name, rest = ''] = m;
      if (!METRIC_NAME.test(name!)) throw new Error(`${where}: bad metric name`);
      const fam = familyFor(name!);
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`${where}: unknown type`);
        if (fam.samples.length > 0) throw new Error(`${where}: TYPE after samples of ${name}`);
        if ((fam as { typed?: boolean }).typed) throw new Error(`${where}: second TYPE for ${name}`);
        (fam as { type: string }).type = rest;
        (fam as { typed?: boolean }).typed = true;
      } else {
        if (fam.help !== null) throw new Error(`${where}: second HELP for ${name}`);
        (fam as { help: string | null }).help = unescapeHelp(rest);
      }
      return;
    }
    const sample = parseSampleLine(line, where);
    const famName = familyOfSample(sample.name, families);
    const fam = familyFor(famName);
    const key = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`;
    if (seen.has(key)) throw new Error(`${where}: duplicate series`);
    seen.add(key);
    if (fam.type === 'histogram' && !/_(bucket|sum|count)$/.test(sample.name)) throw new Error(`${where}: histogram sample without _bucket/_sum/_count`);
    if (fam.type === 'histogram' && sample.name.endsWith('_bucket') && sample.labels.le === undefined) throw new Error(`${where}: bucket without le`);
    if (fam.type === 'counter' && sample.value < 0) throw new Error(`${where}: negative counter`);
    fam.samples.push(sample);
  });

  function familyFor(name: string): ParsedFamily {
    if (current !== name) {
      if (current !== null) closed.add(current);
      if (closed.has(name)) throw new Error(`metric family ${name} is split into several groups`);
      current = name;
    }
    let f = families.get(name);
    if (f === undefined) {
      f = { name, type: 'untyped', help: null, samples: [] };
      families.set(name, f);
    }
    return f;
  }
  return families;
}

function familyOfSample(sampleName: string, families: Map<string, ParsedFamily>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (sampleName.endsWith(suffix)) {
      const base = sampleName.slice(0, -suffix.length);
      const f = families.get(base);
      if (f !== undefined && (f.type === 'histogram' || f.type === 'summary')) return base;
    }
  }
  return sampleName;
}

function parseSampleLine(line: string, where: string): ParsedSample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)(?: (-?\d+))?$/.exec(line);
  if (m === null) throw new Error(`${where}: not a sample line`);
  const [, name, labelText, valueText] = m;
  return { name: name!, labels: labelText ? parseLabels(labelText, where) : {}, value: parseValue(valueText!, where) };
}

function parseLabels(text: string, where: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 1;
  const end = text.length - 1;
  while (i < end) {
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`${where}: label without =`);
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`${where}: bad label name ${JSON.stringify(name)}`);
    if (name in out) throw new Error(`${where}: duplicate label ${name}`);
    if (text[eq + 1] !== '"') throw new Error(`${where}: label value not quoted`);
    let j = eq + 2;
    let value = '';
    for (;;) {
      if (j >= end) throw new Error(`${where}: unterminated label value`);
      const ch = text[j]!;
      if (ch === '\\') {
        const next = text[j + 1];
        if (next === '\\') value += '\\';
        else if (next === '"') value += '"';
        else if (next === 'n') value += '\n';
        else throw new Error(`${where}: bad escape \\${next}`);
        j += 2;
        continue;
      }
      if (ch === '"') break;
      if (ch === '\n') throw new Error(`${where}: newline in label value`);
      value += ch;
      j++;
    }
    out[name] = value;
    i = j + 1;
    if (text[i] === ',') i++;
    else if (i !== end) throw new Error(`${where}: expected , or } after label ${name}`);
  }
  return out;
}

function parseValue(text: string, where: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`${where}: bad value ${text}`);
  return Number(text);
}

function unescapeHelp(text: string): string {
  return text.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
}

/** The value of one series (name + exact labels), or undefined. */
export function sampleValue(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      const keys = Object.keys(labels);
      if (keys.length !== Object.keys(s.labels).length) continue;
      if (keys.every((k) => s.labels[k] === labels[k])) return s.value;
    }
  }
  return undefined;
}

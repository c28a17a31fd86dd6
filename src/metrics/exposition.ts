/**
 * A small Prometheus text exposition (format 0.0.4) writer. Why not prom-client: loading it costs
 * 60–95 ms and ~12 MB RSS on this machine (measured; docs/observability.md), against a start-up
 * budget of 100 ms and an idle RSS budget of 60 MB, and weft needs none of its machinery (default
 * process metrics, push gateway, aggregation across workers). What weft needs is counters and
 * gauges with labels, one histogram, and values read at scrape time from the daemon's state.
 *
 * Model: a MetricFamily is a name, help, type and a function that returns its samples when
 * scraped. Nothing is kept between scrapes except what the callers keep (counters live where the
 * events happen); so a scrape can never show a value the daemon no longer believes.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram';
export type Labels = Readonly<Record<string, string>>;

export interface Sample {
  /** Suffix added to the family name (histograms: "_bucket", "_sum", "_count"); default none. */
  readonly suffix?: string;
  readonly labels?: Labels;
  readonly value: number;
}

export interface MetricFamily {
  /** Full name, e.g. "weft_reconcile_runs_total" (counters end in _total). */
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  collect(): readonly Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Render families in the text format. Throws on an invalid metric or label name (a bug, not input). */
export function renderExposition(families: readonly MetricFamily[]): string {
  const out: string[] = [];
  for (const f of families) {
    if (!NAME.test(f.name)) throw new Error(`metric name ${JSON.stringify(f.name)} is not a valid Prometheus name`);
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`);
    out.push(`# TYPE ${f.name} ${f.type}`);
    for (const s of f.collect()) {
      out.push(`${f.name}${s.suffix ?? ''}${formatLabels(s.labels)} ${formatValue(s.value)}`);
    }
  }
  return out.join('\n') + '\n';
}

function formatLabels(labels: Labels | undefined): string {
  if (labels === undefined) return '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (!LABEL.test(k) || k.startsWith('__')) throw new Error(`label name ${JSON.stringify(k)} is not a valid Prometheus label name`);
    parts.push(`${k}="${escapeLabelValue(v)}"`);
  }
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

/** Label values escape backslash, double quote and newline. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escapes backslash and newline only. */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

// ---- helpers to build families ------------------------------------------------------------

export function gauge(name: string, help: string, collect: () => readonly Sample[] | number): MetricFamily {
  return { name, help, type: 'gauge', collect: () => asSamples(collect()) };
}

export function counter(name: string, help: string, collect: () => readonly Sample[] | number): MetricFamily {
  return { name, help, type: 'counter', collect: () => asSamples(collect()) };
}

function asSamples(v: readonly Sample[] | number): readonly Sample[] {
  return typeof v === 'number' ? [{ value: v }] : v;
}

/**
 * A fixed-bucket histogram (cumulative buckets, +Inf last), observed where the event happens and
 * rendered at scrape time.
 */
export class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  /** `bounds`: upper bounds in increasing order, without +Inf. */
  constructor(private readonly bounds: readonly number[]) {
    for (let i = 1; i < bounds.length; i++) {
      if (!(bounds[i]! > bounds[i - 1]!)) throw new Error('histogram bounds must increase');
    }
    this.counts = new Array<number>(bounds.length).fill(0);
  }

  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.bounds.length; i++) if (v <= this.bounds[i]!) this.counts[i]!++;
  }

  get observations(): number {
    return this.count;
  }

  samples(labels: Labels = {}): Sample[] {
    const out: Sample[] = this.bounds.map((b, i) => ({ suffix: '_bucket', labels: { ...labels, le: formatValue(b) }, value: this.counts[i]! }));
    out.push({ suffix: '_bucket', labels: { ...labels, le: '+Inf' }, value: this.count });
    out.push({ suffix: '_sum', labels, value: this.sum });
    out.push({ suffix: '_count', labels, value: this.count });
    return out;
  }

  family(name: string, help: string): MetricFamily {
    return { name, help, type: 'histogram', collect: () => this.samples() };
  }
}

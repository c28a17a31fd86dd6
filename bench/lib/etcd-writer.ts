/**
 * Runs inside the lab's etcd namespace (bench/lib/harness.ts starts it with `ip netns exec`):
 * reads JSON commands on stdin, one per line, writes them to etcd through its v3 JSON gateway and
 * answers one JSON line each with the wall-clock time (ms, sub-ms precision) the request was sent
 * and answered. A long-lived process, so no process start sits between "send" and the timestamp.
 *
 *   {"id":1,"op":"put","kvs":[{"key":"/k","value":"v"}]}     → one txn with every put (≤ 128 ops)
 *   {"id":2,"op":"del","keys":["/k"]}                         → one txn with every delete
 *   ← {"id":1,"sentAt":1732240000123.456,"doneAt":...,"ok":true,"revision":"42"}
 *
 * With a watch prefix as second argument it also watches it (etcd's own watch stream, on the
 * same machine as etcd: the moment a write becomes visible to watchers) and reports each event:
 *   ← {"visible":"/coreos.com/network/subnets/10.5.3.0-24","type":"PUT","at":1732240000125.1}
 */
import { Agent, request } from 'node:http';
import { createInterface } from 'node:readline';

const endpoint = new URL(process.argv[2] ?? 'http://127.0.0.1:2379');
const now = (): number => performance.timeOrigin + performance.now();
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const agent = new Agent({ keepAlive: true, maxSockets: 16 });

interface Command {
  readonly id: number;
  readonly op: 'put' | 'del';
  readonly kvs?: { key: string; value: string }[];
  readonly keys?: string[];
}

function post(path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request({ host: endpoint.hostname, port: endpoint.port, path, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> });
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}


async function run(cmd: Command): Promise<void> {
  const success = cmd.op === 'put'
    ? (cmd.kvs ?? []).map((kv) => ({ request_put: { key: b64(kv.key), value: b64(kv.value) } }))
    : (cmd.keys ?? []).map((k) => ({ request_delete_range: { key: b64(k) } }));
  const sentAt = now();
  try {
    const res = await post('/v3/kv/txn', { success });
    const doneAt = now();
    const header = res.json.header as { revision?: string } | undefined;
    process.stdout.write(JSON.stringify({ id: cmd.id, sentAt, doneAt, ok: res.status === 200, revision: header?.revision ?? null, error: res.status === 200 ? null : res.json }) + '\n');
  } catch (err) {
    process.stdout.write(JSON.stringify({ id: cmd.id, sentAt, doneAt: now(), ok: false, error: String(err) }) + '\n');
  }
}

const watchPrefix = process.argv[3];
if (watchPrefix !== undefined) {
  const end = Buffer.from(watchPrefix);
  end[end.length - 1]!++;
  const req = request({ host: endpoint.hostname, port: endpoint.port, path: '/v3/watch', method: 'POST', agent: false }, (res) => {
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      const at = now();
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const msg = JSON.parse(line) as { result?: { created?: boolean; events?: { type?: string; kv: { key: string } }[] } };
        if (msg.result?.created) process.stdout.write(JSON.stringify({ watching: true }) + '\n');
        for (const ev of msg.result?.events ?? []) {
          process.stdout.write(JSON.stringify({ visible: Buffer.from(ev.kv.key, 'base64').toString(), type: ev.type ?? 'PUT', at }) + '\n');
        }
      }
    });
  });
  req.write(JSON.stringify({ create_request: { key: b64(watchPrefix), range_end: end.toString('base64') } }) + '\n');
}

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === '') return;
  void run(JSON.parse(line) as Command);
}).on('close', () => process.exit(0));
process.stdout.write(JSON.stringify({ ready: true }) + '\n');

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { spawn } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  formatSubnetEnv,
  parseSubnetEnv,
  readSubnetEnv,
  writeSubnetEnvAtomic,
} from '../../src/daemon/subnetenv';
import { WeftError } from '../../src/errors';

const V4 = { network: '10.5.0.0/16', subnet: '10.5.72.1/24', mtu: 1450, ipMasq: false };

function throwsCode(fn: () => unknown, code: string, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof WeftError, `expected a WeftError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

describe('formatSubnetEnv', () => {
  it('writes flanneld\'s four lines in flanneld\'s order, newline-terminated', () => {
    assert.equal(
      formatSubnetEnv(V4),
      'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n',
    );
  });

  it('writes FLANNEL_IPMASQ=true when masquerading', () => {
    assert.match(formatSubnetEnv({ ...V4, ipMasq: true }), /\nFLANNEL_IPMASQ=true\n$/);
  });

  it('puts the IPv6 lines after the IPv4 ones and before FLANNEL_MTU, as flannel\'s WriteSubnetFile does', () => {
    assert.equal(
      formatSubnetEnv({ ...V4, ipv6Network: 'fc00::/48', ipv6Subnet: 'fc00:0:0:34::1/64' }),
      'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\n'
        + 'FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:34::1/64\n'
        + 'FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n',
    );
  });

  it('omits the IPv6 lines when they are null', () => {
    assert.equal(formatSubnetEnv({ ...V4, ipv6Network: null, ipv6Subnet: null }), formatSubnetEnv(V4));
  });

  it('refuses half an IPv6 pair, a bad MTU, or values a shell would misread', () => {
    throwsCode(() => formatSubnetEnv({ ...V4, ipv6Network: 'fc00::/48' }), 'INTERNAL', /ipv6Network and ipv6Subnet must be given together/);
    throwsCode(() => formatSubnetEnv({ ...V4, mtu: 0 }), 'INTERNAL', /FLANNEL_MTU must be a positive integer, got 0/);
    throwsCode(() => formatSubnetEnv({ ...V4, mtu: 1450.5 }), 'INTERNAL', /FLANNEL_MTU/);
    throwsCode(() => formatSubnetEnv({ ...V4, subnet: '10.5.72.1/24\nX=1' }), 'INTERNAL', /FLANNEL_SUBNET value/);
    throwsCode(() => formatSubnetEnv({ ...V4, network: '' }), 'INTERNAL', /FLANNEL_NETWORK value "" is empty/);
  });
});

describe('parseSubnetEnv', () => {
  it('reads back what formatSubnetEnv writes', () => {
    const text = formatSubnetEnv({ ...V4, ipMasq: true, ipv6Network: 'fc00::/48', ipv6Subnet: 'fc00:0:0:34::1/64' });
    assert.deepEqual(parseSubnetEnv(text), {
      FLANNEL_NETWORK: '10.5.0.0/16',
      FLANNEL_SUBNET: '10.5.72.1/24',
      FLANNEL_IPV6_NETWORK: 'fc00::/48',
      FLANNEL_IPV6_SUBNET: 'fc00:0:0:34::1/64',
      FLANNEL_MTU: '1450',
      FLANNEL_IPMASQ: 'true',
    });
  });

  it('tolerates comments, blank lines, CRLF, export, spaces around = and quotes', () => {
    const text = [
      '# written by hand',
      '',
      'export FLANNEL_NETWORK=10.5.0.0/16',
      '  FLANNEL_SUBNET = "10.5.72.1/24"   # the .1 address',
      "FLANNEL_MTU='1450'",
      'FLANNEL_IPMASQ=false # no masquerade',
      'QUOTED="a \\"b\\" \\\\ c\\nd"',
      "LITERAL='a \\n # b'",
      'HASH=a#b',
      'EMPTY=',
      '\t',
    ].join('\r\n');
    assert.deepEqual(parseSubnetEnv(text), {
      FLANNEL_NETWORK: '10.5.0.0/16',
      FLANNEL_SUBNET: '10.5.72.1/24',
      FLANNEL_MTU: '1450',
      FLANNEL_IPMASQ: 'false',
      QUOTED: 'a "b" \\ c\nd',
      LITERAL: 'a \\n # b',
      HASH: 'a#b',
      EMPTY: '',
    });
  });

  it('lets a later assignment win, as a shell does', () => {
    assert.deepEqual(parseSubnetEnv('A=1\nA=2\n'), { A: '2' });
  });

  it('does not let a "__proto__" line touch the prototype', () => {
    const env = parseSubnetEnv('__proto__=x\n');
    assert.equal(Object.getPrototypeOf(env), Object.prototype);
    assert.equal(env['__proto__'], 'x');
  });

  it('reports malformed lines with their line number and text', () => {
    throwsCode(() => parseSubnetEnv('A=1\n\nnot a pair\n'), 'BAD_DATA', /^subnet file line 3: expected NAME=value: "not a pair"$/);
    throwsCode(() => parseSubnetEnv('1X=2'), 'BAD_DATA', /^subnet file line 1: "1X" is not a variable name: "1X=2"$/);
    throwsCode(() => parseSubnetEnv('=2'), 'BAD_DATA', /line 1: "" is not a variable name/);
    throwsCode(() => parseSubnetEnv('A="open'), 'BAD_DATA', /line 1: unterminated double quote/);
    throwsCode(() => parseSubnetEnv("A='open"), 'BAD_DATA', /line 1: unterminated single quote/);
    throwsCode(() => parseSubnetEnv('A="x" y'), 'BAD_DATA', /line 1: unexpected text after the closing quote/);
    throwsCode(() => parseSubnetEnv('bad', 'subnet file /run/x.env'), 'BAD_DATA', /^subnet file \/run\/x\.env line 1:/);
  });

  it('lenient (the CNI plugin\'s reading): skips the lines the strict reading refuses and keeps the rest', () => {
    const env = parseSubnetEnv('A=1\nnot a pair\n1X=2\nB="open\n__proto__=x\nC = "3"\n', 'f', { lenient: true });
    assert.deepEqual(Object.entries(env), [['A', '1'], ['__proto__', 'x'], ['C', '3']]);
    assert.equal(Object.getPrototypeOf(env), Object.prototype);
  });
});

describe('readSubnetEnv and writeSubnetEnvAtomic', () => {
  let dir = '';

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-subnetenv-'));
  });

  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('returns null when the file does not exist', async () => {
    assert.equal(await readSubnetEnv(path.join(dir, 'missing', 'subnet.env')), null);
  });

  it('refuses what is not a regular file (a FIFO would block the event loop forever) with a message naming it', async () => {
    const fifo = path.join(dir, 'fifo.env');
    const made = spawn('mkfifo', [fifo]);
    await new Promise((resolve, reject) => { made.on('exit', resolve); made.on('error', reject); });
    await assert.rejects(readSubnetEnv(fifo), (e: Error) => e instanceof WeftError && /read subnet file .*fifo\.env: not a regular file/.test(e.message));
    await assert.rejects(readSubnetEnv(dir), /not a regular file/);
  });

  it('creates missing directories and writes a file readSubnetEnv reads back', async () => {
    const file = path.join(dir, 'a', 'b', 'subnet.env');
    const text = formatSubnetEnv(V4);
    writeSubnetEnvAtomic(file, text);
    assert.equal(await fsp.readFile(file, 'utf8'), text);
    assert.deepEqual(await readSubnetEnv(file), {
      FLANNEL_NETWORK: '10.5.0.0/16', FLANNEL_SUBNET: '10.5.72.1/24', FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'false',
    });
    assert.equal((await fsp.stat(path.join(dir, 'a', 'b'))).mode & 0o777, 0o755 & ~currentUmask());
  });

  it('writes mode 0644 whatever the umask', async () => {
    const file = path.join(dir, 'umask', 'subnet.env');
    const old = process.umask(0o077);
    try {
      writeSubnetEnvAtomic(file, formatSubnetEnv(V4));
    } finally {
      process.umask(old);
    }
    assert.equal((await fsp.stat(file)).mode & 0o777, 0o644);
  });

  it('replaces an existing file by rename (a new inode), leaving no temporary file behind', async () => {
    const sub = path.join(dir, 'replace');
    const file = path.join(sub, 'subnet.env');
    writeSubnetEnvAtomic(file, formatSubnetEnv(V4));
    const before1 = await fsp.stat(file);
    const next = formatSubnetEnv({ ...V4, subnet: '10.5.73.1/24' });
    writeSubnetEnvAtomic(file, next);
    const after1 = await fsp.stat(file);
    assert.notEqual(after1.ino, before1.ino);
    assert.equal(await fsp.readFile(file, 'utf8'), next);
    assert.deepEqual(await fsp.readdir(sub), ['subnet.env']);
  });

  it('never lets a reader see a partial file while writes go on', async () => {
    const file = path.join(dir, 'race', 'subnet.env');
    const a = `A=${'a'.repeat(256 * 1024)}\n`;
    const b = `B=${'b'.repeat(256 * 1024)}\n`;
    writeSubnetEnvAtomic(file, a);
    // The write is synchronous: the writer is another process, as the container runtime reading
    // subnet.env is.
    const script = `const { writeSubnetEnvAtomic } = require(${JSON.stringify(require.resolve('../../src/daemon/subnetenv'))});
      const [a, b] = ['a', 'b'].map((c) => c.toUpperCase() + '=' + c.repeat(256 * 1024) + '\\n');
      for (let i = 0; i < 40; i++) writeSubnetEnvAtomic(${JSON.stringify(file)}, i % 2 === 0 ? b : a);`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'ignore', 'inherit'] });
    let writing = true;
    const writer = new Promise<number | null>((resolve) => child.on('exit', (code) => { writing = false; resolve(code); }));
    let reads = 0;
    while (writing) {
      const seen = await fsp.readFile(file, 'utf8');
      assert.ok(seen === a || seen === b, `partial read of ${seen.length} bytes`);
      reads++;
    }
    assert.equal(await writer, 0, 'the writer process failed');
    assert.ok(reads > 0);
  });

  it('fails with the path and the step, keeps the cause, and removes its temporary file', async () => {
    const sub = path.join(dir, 'fail');
    const target = path.join(sub, 'subnet.env');
    await fsp.mkdir(target, { recursive: true }); // a directory where the file should go: rename fails
    await fsp.writeFile(path.join(target, 'keep'), 'x');
    assert.throws(() => writeSubnetEnvAtomic(target, formatSubnetEnv(V4)), (err: unknown) => {
      assert.ok(err instanceof WeftError);
      assert.equal(err.code, 'INTERNAL');
      assert.match(err.message, new RegExp(`^write subnet file ${target.replace(/[.]/g, '\\.')}: rename .* to ${target.replace(/[.]/g, '\\.')}: `));
      assert.ok((err as Error & { cause?: unknown }).cause instanceof Error);
      return true;
    });
    assert.deepEqual(await fsp.readdir(sub), ['subnet.env']);
  });

  it('reports a file it cannot read (not a missing one) as an error naming the path', async () => {
    const sub = path.join(dir, 'isdir');
    await fsp.mkdir(sub, { recursive: true });
    await assert.rejects(readSubnetEnv(sub), (err: unknown) => {
      assert.ok(err instanceof WeftError);
      assert.match(err.message, new RegExp(`^read subnet file ${sub.replace(/[.]/g, '\\.')}: `));
      return true;
    });
  });

  it('reports malformed content with the file path and line number', async () => {
    const file = path.join(dir, 'bad.env');
    await fsp.writeFile(file, 'FLANNEL_MTU=1450\noops\n');
    await assert.rejects(readSubnetEnv(file), (err: unknown) => {
      assert.ok(err instanceof WeftError);
      assert.equal(err.code, 'BAD_DATA');
      assert.equal(err.message, `subnet file ${file} line 2: expected NAME=value: "oops"`);
      return true;
    });
  });
});

function currentUmask(): number {
  const m = process.umask(0o022);
  process.umask(m);
  return m;
}

describe('formatSubnetEnv: IPv6-only', () => {
  it('writes only the IPv6 lines, MTU and IPMASQ, as flanneld does with EnableIPv4 false', () => {
    assert.equal(
      formatSubnetEnv({ network: null, subnet: null, ipv6Network: 'fc00::/48', ipv6Subnet: 'fc00:0:0:22::1/64', mtu: 1430, ipMasq: false }),
      'FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:22::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n',
    );
  });
});

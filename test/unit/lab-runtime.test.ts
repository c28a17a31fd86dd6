import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { hasInterpreter, mountsUnder } from '../../src/lab/runtime';
import { dockerForm } from '../../src/lab/runtime-docker';

const host = (index: number) => ({ name: `h${index}`, index, ns: 'x', containerNs: 'y', dir: '/d', subnetFile: '/d/subnet.env' });

test('a dynamically linked executable has an interpreter (node itself); a non-ELF file does not', () => {
  assert.equal(hasInterpreter(readFileSync(process.execPath)), true);
  assert.equal(hasInterpreter(Buffer.from('#!/bin/sh\necho hi\n')), false);
});

test('docker hosts alternate between the daemon.json form (odd) and the DOCKER_OPTS form (even)', () => {
  assert.deepEqual([1, 2, 3, 4].map((i) => dockerForm(host(i))), ['daemon.json', 'DOCKER_OPTS', 'daemon.json', 'DOCKER_OPTS']);
});

test('mountsUnder lists only mount points at or below the dir, deepest first', () => {
  assert.deepEqual(mountsUnder('/nonexistent-weft-dir'), []);
  const root = mountsUnder('/proc');
  assert.ok(root.includes('/proc'));
  for (let i = 1; i < root.length; i++) assert.ok((root[i - 1]?.length ?? 0) >= (root[i]?.length ?? 0));
});

/**
 * src/ip.ts parses IPv4 text itself (no `ip-address` at start-up, issue #14): it must accept
 * exactly what ip-address's Address4 accepted before, with the same value. The package is the
 * oracle here, on hand-picked edge cases and on seeded random and mutated strings.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Address4 } from 'ip-address';
import { parseIPv4, parseIPv6, addressFamily } from '../../src/ip';
import { prng } from '../e2e/helpers/prng';

/** What parseIPv4 returned when it went through ip-address. */
function oracle(text: string): number | null {
  if (!Address4.isValid(text) || text.includes('/')) return null;
  const p = new Address4(text).toArray();
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}

describe('parseIPv4', () => {
  const edges = [
    '0.0.0.0', '255.255.255.255', '10.5.72.1', '1.2.3.4', '256.1.1.1', '1.2.3.256', '01.2.3.4', '1.2.3.04', '1.2.3.00', '00.0.0.0',
    '1.2.3', '1.2.3.4.5', '1.2.3.', '.1.2.3', '1..2.3', '', ' 1.2.3.4', '1.2.3.4 ', '1.2.3.4\n', '\n1.2.3.4', '1.2.3.4/8', '1.2.3.4/32',
    '+1.2.3.4', '-1.2.3.4', '1.2.3.-4', '1e2.1.1.1', '0x1.2.3.4', '１.2.3.4', '1.2.3.4%eth0', '::1', '::ffff:1.2.3.4', '1.2.3.4:80',
    '199.200.249.250', '250.251.252.253', '100.99.9.0', '1.2.3.4\u0000', 'a.b.c.d', '1,2,3,4', '1 .2.3.4',
  ];
  it('accepts and values exactly what ip-address\'s Address4 does, on edge cases', () => {
    for (const t of edges) assert.equal(parseIPv4(t), oracle(t), JSON.stringify(t));
  });

  it('agrees with Address4 on 20 000 seeded random and mutated strings', () => {
    const r = prng(14);
    const alphabet = '0123456789....../: x%-+e\n';
    for (let i = 0; i < 20_000; i++) {
      let t: string;
      if (i % 2 === 0) {
        // A valid-looking address, then maybe one mutation.
        const parts = [0, 1, 2, 3].map(() => String(Math.floor(r() * 300)));
        if (r() < 0.2) parts[Math.floor(r() * 4)] = `0${parts[0]}`;
        t = parts.join('.');
        if (r() < 0.3) {
          const at = Math.floor(r() * (t.length + 1));
          t = t.slice(0, at) + alphabet[Math.floor(r() * alphabet.length)] + t.slice(at + (r() < 0.5 ? 1 : 0));
        }
      } else {
        t = Array.from({ length: Math.floor(r() * 18) }, () => alphabet[Math.floor(r() * alphabet.length)]).join('');
      }
      assert.equal(parseIPv4(t), oracle(t), JSON.stringify(t));
    }
  });
});

describe('IPv6 text (ip-address, loaded on first use)', () => {
  it('still parses and refuses as before', () => {
    assert.equal(parseIPv6('fd00::1'), 0xfd00n << 112n | 1n);
    assert.equal(parseIPv6('fd00::1/64'), null);
    assert.equal(parseIPv6('fd00::1%eth0'), null);
    assert.equal(parseIPv6('fd00::g'), null);
    assert.equal(addressFamily('10.0.0.1'), 4);
    assert.equal(addressFamily('fd00::1'), 6);
    assert.equal(addressFamily('010.0.0.1'), null);
  });
});

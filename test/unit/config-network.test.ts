import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeVxlanConfig, parseNetworkConfig } from '../../src/config/network';
import type { BackendConfig } from '../../src/config/types';
import { WeftError } from '../../src/errors';
import { formatIPv4, parseIPv4 } from '../../src/ip';

function ip(text: string): number {
  const v = parseIPv4(text);
  assert.notEqual(v, null, `test bug: ${text} is not an IPv4 address`);
  return v as number;
}

function cfg(doc: Record<string, unknown>): ReturnType<typeof parseNetworkConfig> {
  return parseNetworkConfig(JSON.stringify(doc));
}

/** Asserts a CONFIG_INVALID WeftError; a string must equal the message, a RegExp match it. */
function rejects(fn: () => unknown, message: string | RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof WeftError, `expected a WeftError, got ${String(err)}`);
    assert.equal(err.code, 'CONFIG_INVALID');
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

function rejectsDoc(doc: Record<string, unknown>, message: string | RegExp): void {
  rejects(() => cfg(doc), message);
}

describe('parseNetworkConfig: IPv4 defaults', () => {
  it('fills in flannel defaults for a /16: /24 subnets from the second to the last', () => {
    const text = '{"Network": "10.5.0.0/16"}';
    const c = parseNetworkConfig(text);
    assert.deepEqual(c, {
      enableIPv4: true,
      enableIPv6: false,
      network: { ip: ip('10.5.0.0'), prefixLen: 16 },
      subnetLen: 24,
      subnetMin: ip('10.5.1.0'),
      subnetMax: ip('10.5.255.0'),
      ipv6Network: null,
      ipv6SubnetLen: 0,
      ipv6SubnetMin: null,
      ipv6SubnetMax: null,
      backend: { type: 'vxlan', raw: {} },
      source: text,
    });
  });

  it('gives /24 subnets to any network of /22 or larger', () => {
    assert.equal(cfg({ Network: '10.0.0.0/8' }).subnetLen, 24);
    assert.equal(cfg({ Network: '10.5.0.0/22' }).subnetLen, 24);
  });

  it('splits networks smaller than /22 into four (prefix + 2)', () => {
    assert.equal(cfg({ Network: '10.5.0.0/23' }).subnetLen, 25);
    assert.equal(cfg({ Network: '10.5.0.0/26' }).subnetLen, 28);
    const c = cfg({ Network: '10.5.0.0/28' });
    assert.equal(c.subnetLen, 30);
    assert.equal(formatIPv4(c.subnetMin), '10.5.0.4');
    assert.equal(formatIPv4(c.subnetMax), '10.5.0.12');
  });

  it('rejects networks smaller than /28 when SubnetLen is absent', () => {
    rejectsDoc({ Network: '10.5.0.0/29' }, 'network is too small. Minimum useful network prefix is /28');
    rejectsDoc({ Network: '10.5.0.0/32' }, 'network is too small. Minimum useful network prefix is /28');
  });

  it('computes the last subnet without overflowing at the top of the usable address space', () => {
    const c = cfg({ Network: '208.0.0.0/4' });
    assert.equal(formatIPv4(c.subnetMin), '208.0.1.0');
    assert.equal(formatIPv4(c.subnetMax), '223.255.255.0');
  });

  it('answers a config nested a million deep (hostile etcd data) with CONFIG_INVALID, not a stack overflow', () => {
    rejects(() => parseNetworkConfig('['.repeat(1_000_000)), /network config is malformed JSON/);
  });

  it('refuses a Network that covers loopback, "this network", link-local, multicast or reserved space (flannel takes 0.0.0.0/1)', () => {
    rejectsDoc({ Network: '0.0.0.0/1' }, /Network 0\.0\.0\.0\/1 overlaps 0\.0\.0\.0\/8 \("this network"\).*such as 10\.5\.0\.0\/16/);
    rejectsDoc({ Network: '64.0.0.0/2' }, /overlaps 127\.0\.0\.0\/8 \(loopback\)/);
    rejectsDoc({ Network: '169.254.0.0/16' }, /link-local/);
    rejectsDoc({ Network: '192.0.0.0/2' }, /224\.0\.0\.0\/4 \(multicast\)/);
    rejectsDoc({ Network: '240.0.0.0/8' }, /reserved/);
  });

  it('masks host bits in Network the way Go net.ParseCIDR does', () => {
    const c = cfg({ Network: '10.5.1.2/16' });
    assert.deepEqual(c.network, { ip: ip('10.5.0.0'), prefixLen: 16 });
  });

  it('keeps the JSON text it was parsed from', () => {
    const text = '{ "Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"} }\n';
    assert.equal(parseNetworkConfig(text).source, text);
  });
});

describe('parseNetworkConfig: IPv4 validation with flannel messages', () => {
  it('requires Network while IPv4 is enabled', () => {
    rejectsDoc({}, 'please define a correct Network parameter in the flannel config');
    rejectsDoc({ SubnetLen: 24 }, 'please define a correct Network parameter in the flannel config');
    rejectsDoc({ Network: null }, 'please define a correct Network parameter in the flannel config');
  });

  it('treats 0.0.0.0/0 as no Network, as flannel\'s Empty() does', () => {
    rejectsDoc({ Network: '0.0.0.0/0' }, 'please define a correct Network parameter in the flannel config');
  });

  it('rejects malformed CIDRs, naming the field and the value', () => {
    for (const bad of ['10.5.0.0/33', '10.5.0.0', 'banana', '10.5.0/16', '10.5.0.0/', 'fc00::/48', '10.5.0.256/16']) {
      rejectsDoc({ Network: bad }, `invalid IPv4 CIDR format: Network ${JSON.stringify(bad)}`);
    }
  });

  it('rejects SubnetLen above 30', () => {
    rejectsDoc({ Network: '10.0.0.0/8', SubnetLen: 31 }, 'SubnetLen must be less than /31');
    rejectsDoc({ Network: '10.0.0.0/8', SubnetLen: 32 }, 'SubnetLen must be less than /31');
    assert.equal(cfg({ Network: '10.5.0.0/28', SubnetLen: 30 }).subnetLen, 30);
  });

  it('checks SubnetLen > 30 before the four-subnet rule', () => {
    rejectsDoc({ Network: '10.5.0.0/30', SubnetLen: 31 }, 'SubnetLen must be less than /31');
  });

  it('requires room for at least four subnets (SubnetLen >= prefix + 2)', () => {
    rejectsDoc({ Network: '10.5.0.0/16', SubnetLen: 17 }, 'network must be able to accommodate at least four subnets');
    rejectsDoc({ Network: '10.5.0.0/16', SubnetLen: 16 }, 'network must be able to accommodate at least four subnets');
    rejectsDoc({ Network: '10.5.0.0/16', SubnetLen: 8 }, 'network must be able to accommodate at least four subnets');
    assert.equal(cfg({ Network: '10.5.0.0/16', SubnetLen: 18 }).subnetLen, 18);
  });

  it('treats SubnetLen 0 as absent, as flannel does', () => {
    assert.equal(cfg({ Network: '10.5.0.0/16', SubnetLen: 0 }).subnetLen, 24);
  });

  it('uses given SubnetMin and SubnetMax', () => {
    const c = cfg({ Network: '10.0.0.0/8', SubnetLen: 20, SubnetMin: '10.10.0.0', SubnetMax: '10.99.0.0' });
    assert.equal(c.subnetLen, 20);
    assert.equal(formatIPv4(c.subnetMin), '10.10.0.0');
    assert.equal(formatIPv4(c.subnetMax), '10.99.0.0');
  });

  it('derives SubnetMin and SubnetMax from a given SubnetLen', () => {
    const c = cfg({ Network: '10.5.0.0/16', SubnetLen: 20 });
    assert.equal(formatIPv4(c.subnetMin), '10.5.16.0');
    assert.equal(formatIPv4(c.subnetMax), '10.5.240.0');
  });

  it('treats SubnetMin/SubnetMax "0.0.0.0" as absent, as flannel does', () => {
    const c = cfg({ Network: '10.5.0.0/16', SubnetMin: '0.0.0.0', SubnetMax: '0.0.0.0' });
    assert.equal(formatIPv4(c.subnetMin), '10.5.1.0');
    assert.equal(formatIPv4(c.subnetMax), '10.5.255.0');
  });

  it('rejects SubnetMin and SubnetMax outside the Network', () => {
    rejectsDoc({ Network: '10.5.0.0/16', SubnetMin: '10.6.0.0' }, 'SubnetMin is not in the range of the Network');
    rejectsDoc({ Network: '10.5.0.0/16', SubnetMax: '10.4.255.0' }, 'SubnetMax is not in the range of the Network');
  });

  it('rejects SubnetMin and SubnetMax off a SubnetLen boundary, naming the address', () => {
    rejectsDoc({ Network: '10.5.0.0/16', SubnetMin: '10.5.1.5' }, 'SubnetMin is not on a SubnetLen boundary: 10.5.1.5');
    rejectsDoc({ Network: '10.5.0.0/16', SubnetMax: '10.5.200.128' }, 'SubnetMax is not on a SubnetLen boundary: 10.5.200.128');
    rejectsDoc({ Network: '10.5.0.0/16', SubnetLen: 20, SubnetMin: '10.5.1.0' }, 'SubnetMin is not on a SubnetLen boundary: 10.5.1.0');
  });

  it('checks in flannel\'s order: Min range, Max range, Min boundary, Max boundary', () => {
    rejectsDoc({ Network: '10.5.0.0/16', SubnetMin: '10.6.0.0', SubnetMax: '10.7.0.0' }, 'SubnetMin is not in the range of the Network');
    rejectsDoc({ Network: '10.5.0.0/16', SubnetMin: '10.5.1.5', SubnetMax: '10.7.0.0' }, 'SubnetMax is not in the range of the Network');
    rejectsDoc({ Network: '10.5.0.0/16', SubnetMin: '10.5.1.5', SubnetMax: '10.5.2.5' }, 'SubnetMin is not on a SubnetLen boundary: 10.5.1.5');
  });

  it('rejects malformed SubnetMin/SubnetMax addresses, naming the field', () => {
    rejectsDoc({ Network: '10.5.0.0/16', SubnetMin: '10.5.1' }, 'invalid IPv4 address format: SubnetMin "10.5.1"');
    rejectsDoc({ Network: '10.5.0.0/16', SubnetMax: '10.5.1.0/24' }, 'invalid IPv4 address format: SubnetMax "10.5.1.0/24"');
  });

  it('skips all IPv4 checks when EnableIPv4 is false', () => {
    const c = cfg({ EnableIPv4: false, SubnetLen: 40 });
    assert.equal(c.enableIPv4, false);
    assert.equal(c.network, null);
    assert.equal(c.subnetLen, 0);
    assert.equal(c.subnetMin, 0);
    assert.equal(c.subnetMax, 0);
  });

  it('still rejects a malformed Network when IPv4 is off (decoding comes first, as in Go)', () => {
    rejectsDoc({ EnableIPv4: false, Network: 'nope' }, 'invalid IPv4 CIDR format: Network "nope"');
  });
});

describe('parseNetworkConfig: decoding', () => {
  it('ignores unknown fields', () => {
    const c = cfg({ Network: '10.5.0.0/16', Foo: 1, Networks: ['x'], Comment: 'hello' });
    assert.equal(c.subnetLen, 24);
  });

  it('matches field names case-insensitively, as Go\'s encoding/json does', () => {
    const c = cfg({ network: '10.5.0.0/16', subnetlen: 20, backend: { type: 'VXLAN' } });
    assert.equal(c.subnetLen, 20);
    assert.equal(c.backend.type, 'vxlan');
  });

  it("lets the last of two spellings of one field win, as Go's decoder does", () => {
    const c = parseNetworkConfig('{"Network":"10.5.0.0/16","network":"10.6.0.0/16"}');
    assert.deepEqual(c.network, { ip: ip('10.6.0.0'), prefixLen: 16 });
  });

  it('treats null fields as absent', () => {
    const c = cfg({ Network: '10.5.0.0/16', SubnetLen: null, SubnetMin: null, Backend: null, EnableIPv6: null });
    assert.equal(c.subnetLen, 24);
    assert.deepEqual(c.backend, { type: 'vxlan', raw: {} });
    assert.equal(c.enableIPv6, false);
  });

  it('rejects wrong types with a message naming the field and the value', () => {
    rejectsDoc({ Network: '10.5.0.0/16', SubnetLen: '24' }, 'network config: SubnetLen must be a non-negative integer, got string "24"');
    rejectsDoc({ Network: '10.5.0.0/16', SubnetLen: -1 }, 'network config: SubnetLen must be a non-negative integer, got number -1');
    rejectsDoc({ Network: '10.5.0.0/16', SubnetLen: 24.5 }, 'network config: SubnetLen must be a non-negative integer, got number 24.5');
    rejectsDoc({ Network: '10.5.0.0/16', EnableIPv4: 'true' }, 'network config: EnableIPv4 must be true or false, got string "true"');
    rejectsDoc({ Network: '10.5.0.0/16', EnableIPv6: 1 }, 'network config: EnableIPv6 must be true or false, got number 1');
    rejectsDoc({ Network: 10 }, /^network config: Network must be a string \(an IPv4 CIDR such as "10\.5\.0\.0\/16"\), got number 10$/);
    rejectsDoc({ Network: '10.5.0.0/16', SubnetMin: 5 }, /^network config: SubnetMin must be a string .*got number 5$/);
    rejectsDoc({ Network: ['10.5.0.0/16'] }, /Network must be a string .*got an array$/);
    rejectsDoc({ Network: '10.5.0.0/16', IPv6SubnetLen: {} }, /IPv6SubnetLen must be a non-negative integer, got an object$/);
  });

  it('rejects a document that is not a JSON object', () => {
    rejects(() => parseNetworkConfig('[]'), 'network config must be a JSON object, got an array');
    rejects(() => parseNetworkConfig('"10.5.0.0/16"'), 'network config must be a JSON object, got string "10.5.0.0/16"');
    rejects(() => parseNetworkConfig('null'), 'network config must be a JSON object, got null');
  });

  it('says where malformed JSON goes wrong (line, column, what was expected)', () => {
    rejects(
      () => parseNetworkConfig('{\n  "Network": "10.5.0.0/16",\n  "SubnetLen" 24\n}'),
      'network config is malformed JSON at line 3, column 15 near "24": expected \':\' after the property name',
    );
    rejects(() => parseNetworkConfig('{"Network": "10.5.0.0/16",}'), /malformed JSON at line 1, column 27 near "}": trailing comma before '}'$/);
    rejects(() => parseNetworkConfig('{"Network": "10.5.0.0/16"'), /malformed JSON at line 1, column 26: unexpected end of input/);
    rejects(() => parseNetworkConfig("{'Network': '10.5.0.0/16'}"), /malformed JSON at line 1, column 2 .*expected a property name in double quotes$/);
    rejects(() => parseNetworkConfig('{"Network": 10.5.0.0/16}'), /malformed JSON at line 1, column 17 near ".0.0\/16}": expected ',' or '}' after a property value$/);
    rejects(() => parseNetworkConfig('{"Network": "10.5.0.0/16"} x'), /malformed JSON at line 1, column 28 .*unexpected text after the end/);
    rejects(() => parseNetworkConfig('{"Network": "10.5.\n0.0/16"}'), /malformed JSON at line 1, column 19: control character/);
    rejects(() => parseNetworkConfig('{"Network": tru}'), /malformed JSON at line 1, column 13 .*expected a JSON value/);
  });

  it('keeps the JSON parser\'s error as the cause', () => {
    try {
      parseNetworkConfig('{');
      assert.fail('expected an error');
    } catch (err) {
      assert.ok(err instanceof WeftError);
      assert.ok((err as Error & { cause?: unknown }).cause instanceof SyntaxError);
    }
  });

  it('rejects an empty document', () => {
    rejects(() => parseNetworkConfig(''), /^network config is empty/);
    rejects(() => parseNetworkConfig('  \n'), /^network config is empty/);
  });
});

describe('parseNetworkConfig: Backend', () => {
  it('defaults to vxlan when Backend is absent (flannel\'s code says udp, its docs vxlan)', () => {
    assert.deepEqual(cfg({ Network: '10.5.0.0/16' }).backend, { type: 'vxlan', raw: {} });
  });

  it('lower-cases Type and keeps the object as written for the backend', () => {
    const raw = { Type: 'VxLAN', VNI: 4096, DirectRouting: true };
    assert.deepEqual(cfg({ Network: '10.5.0.0/16', Backend: raw }).backend, { type: 'vxlan', raw });
    assert.equal(cfg({ Network: '10.5.0.0/16', Backend: { Type: 'UDP', Port: 8285 } }).backend.type, 'udp');
  });

  it('defaults Type to vxlan when Backend has no Type', () => {
    assert.equal(cfg({ Network: '10.5.0.0/16', Backend: { VNI: 2 } }).backend.type, 'vxlan');
  });

  it('rejects a Backend that is not an object, or a Type that is not a string', () => {
    rejectsDoc({ Network: '10.5.0.0/16', Backend: 'vxlan' },
      'error decoding Backend property of config: Backend must be a JSON object, got string "vxlan"');
    rejectsDoc({ Network: '10.5.0.0/16', Backend: { Type: 1 } }, /^network config: Backend: Type must be a string .*got number 1$/);
  });
});

describe('parseNetworkConfig: IPv6', () => {
  const base = { Network: '10.5.0.0/16', EnableIPv6: true };

  it('fills in defaults: /64 subnets from the second to the last', () => {
    const c = cfg({ ...base, IPv6Network: 'fc00::/48' });
    assert.equal(c.enableIPv6, true);
    assert.deepEqual(c.ipv6Network, { ip: 'fc00::', prefixLen: 48 });
    assert.equal(c.ipv6SubnetLen, 64);
    assert.equal(c.ipv6SubnetMin, 'fc00:0:0:1::');
    assert.equal(c.ipv6SubnetMax, 'fc00:0:0:ffff::');
  });

  it('gives /64 to /62 and larger, prefix + 2 to smaller networks, and rejects beyond /124', () => {
    assert.equal(cfg({ ...base, IPv6Network: 'fc00::/62' }).ipv6SubnetLen, 64);
    assert.equal(cfg({ ...base, IPv6Network: 'fc00::/63' }).ipv6SubnetLen, 65);
    assert.equal(cfg({ ...base, IPv6Network: 'fc00::/124' }).ipv6SubnetLen, 126);
    rejectsDoc({ ...base, IPv6Network: 'fc00::/125' }, 'IPv6Network is too small. Minimum useful network prefix is /124');
  });

  it('applies the SubnetLen rules with /127 as the limit', () => {
    rejectsDoc({ ...base, IPv6Network: 'fc00::/48', IPv6SubnetLen: 127 }, 'SubnetLen must be less than /127');
    rejectsDoc({ ...base, IPv6Network: 'fc00::/48', IPv6SubnetLen: 49 }, 'network must be able to accommodate at least four subnets');
    assert.equal(cfg({ ...base, IPv6Network: 'fc00::/48', IPv6SubnetLen: 126 }).ipv6SubnetLen, 126);
  });

  it('requires IPv6Network when IPv6 is enabled', () => {
    rejectsDoc(base, 'please define a correct IPv6Network parameter in the flannel config');
    rejectsDoc({ ...base, IPv6Network: '::/0' }, 'please define a correct IPv6Network parameter in the flannel config');
  });

  it('validates IPv6SubnetMin and IPv6SubnetMax like their IPv4 counterparts', () => {
    const n = { ...base, IPv6Network: 'fc00::/48' };
    rejectsDoc({ ...n, IPv6SubnetMin: 'fc01::' }, 'IPv6SubnetMin is not in the range of the IPv6Network');
    rejectsDoc({ ...n, IPv6SubnetMax: 'fd00::' }, 'IPv6SubnetMax is not in the range of the IPv6Network');
    rejectsDoc({ ...n, IPv6SubnetMin: 'fc00:0:0:1::5' }, 'IPv6SubnetMin is not on a SubnetLen boundary: fc00:0:0:1::5');
    rejectsDoc({ ...n, IPv6SubnetMax: 'fc00:0:0:2:8000::' }, 'IPv6SubnetMax is not on a SubnetLen boundary: fc00:0:0:2:8000::');
    const c = cfg({ ...n, IPv6SubnetMin: 'fc00:0:0:10::', IPv6SubnetMax: 'fc00:0:0:20::' });
    assert.equal(c.ipv6SubnetMin, 'fc00:0:0:10::');
    assert.equal(c.ipv6SubnetMax, 'fc00:0:0:20::');
  });

  it('rejects malformed IPv6 CIDRs and addresses, naming the field', () => {
    rejectsDoc({ ...base, IPv6Network: '10.5.0.0/16' }, 'invalid IPv6 CIDR format: IPv6Network "10.5.0.0/16"');
    rejectsDoc({ ...base, IPv6Network: 'fc00::/129' }, 'invalid IPv6 CIDR format: IPv6Network "fc00::/129"');
    rejectsDoc({ ...base, IPv6Network: 'fc00::/48', IPv6SubnetMin: 'zz::' }, 'invalid IPv6 address format: IPv6SubnetMin "zz::"');
  });

  it('supports IPv6 only (EnableIPv4 false)', () => {
    const c = cfg({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fc00::/48' });
    assert.equal(c.network, null);
    assert.equal(c.ipv6SubnetLen, 64);
  });

  it('leaves IPv6 fields empty when IPv6 is off, even if IPv6Network is set', () => {
    const c = cfg({ Network: '10.5.0.0/16', IPv6Network: 'fc00::/48' });
    assert.equal(c.ipv6Network, null);
    assert.equal(c.ipv6SubnetMin, null);
  });
});

describe('decodeVxlanConfig', () => {
  const vx = (raw: Record<string, unknown>): BackendConfig => ({ type: 'vxlan', raw });

  it('applies flannel\'s defaults', () => {
    assert.deepEqual(decodeVxlanConfig(vx({})), {
      vni: 1, port: 0, gbp: false, learning: false, directRouting: false, mtu: null,
    });
    assert.deepEqual(decodeVxlanConfig(cfg({ Network: '10.5.0.0/16' }).backend).vni, 1);
  });

  it('decodes every option, with case-insensitive names', () => {
    assert.deepEqual(
      decodeVxlanConfig(vx({ Type: 'vxlan', vni: 4096, Port: 4789, GBP: true, learning: true, DirectRouting: true, MTU: 1400 })),
      { vni: 4096, port: 4789, gbp: true, learning: true, directRouting: true, mtu: 1400 },
    );
  });

  it('accepts the VNI and Port limits', () => {
    assert.equal(decodeVxlanConfig(vx({ VNI: 0 })).vni, 0);
    assert.equal(decodeVxlanConfig(vx({ VNI: 16777215 })).vni, 16777215);
    assert.equal(decodeVxlanConfig(vx({ Port: 65535 })).port, 65535);
  });

  it('treats MTU 0 and null as "underlay MTU - 50"', () => {
    assert.equal(decodeVxlanConfig(vx({ MTU: 0 })).mtu, null);
    assert.equal(decodeVxlanConfig(vx({ MTU: null })).mtu, null);
  });

  it('rejects out-of-range or mistyped options, naming the option, the value and the range', () => {
    const where = 'network config: Backend (vxlan)';
    rejects(() => decodeVxlanConfig(vx({ VNI: 16777216 })), `${where}: VNI must be an integer from 0 to 16777215, got number 16777216`);
    rejects(() => decodeVxlanConfig(vx({ VNI: -1 })), `${where}: VNI must be an integer from 0 to 16777215, got number -1`);
    rejects(() => decodeVxlanConfig(vx({ VNI: '1' })), `${where}: VNI must be an integer from 0 to 16777215, got string "1"`);
    rejects(() => decodeVxlanConfig(vx({ VNI: 1.5 })), `${where}: VNI must be an integer from 0 to 16777215, got number 1.5`);
    rejects(() => decodeVxlanConfig(vx({ Port: 65536 })), /Port must be an integer from 0 to 65535 \(0 = kernel default 8472\), got number 65536$/);
    rejects(() => decodeVxlanConfig(vx({ Port: -1 })), /Port must be an integer from 0 to 65535/);
    rejects(() => decodeVxlanConfig(vx({ MTU: 50 })), /MTU must be 0 \(underlay MTU - 50\) or an integer from 68 to 65535, got number 50$/);
    rejects(() => decodeVxlanConfig(vx({ MTU: 70000 })), /MTU must be 0 .*got number 70000$/);
    rejects(() => decodeVxlanConfig(vx({ GBP: 'yes' })), `${where}: GBP must be true or false, got string "yes"`);
    rejects(() => decodeVxlanConfig(vx({ Learning: 1 })), `${where}: Learning must be true or false, got number 1`);
    rejects(() => decodeVxlanConfig(vx({ DirectRouting: 'true' })), `${where}: DirectRouting must be true or false, got string "true"`);
  });

  it('refuses to decode another backend\'s options', () => {
    assert.throws(() => decodeVxlanConfig({ type: 'udp', raw: {} }), (err: unknown) => err instanceof WeftError && err.code === 'INTERNAL');
  });
});

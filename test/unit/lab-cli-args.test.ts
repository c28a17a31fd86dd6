import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { joinDashValues } from '../../src/cli/lab';
import { parseRuntime } from '../../src/lab/runtimes';

test('--weftd-arg takes a value starting with a dash in the space form (joined before strict parsing)', () => {
  assert.deepEqual(joinDashValues(['--hosts', '3', '--weftd-arg', '--ip-masq', '--weftd-arg=--iface=eth0'], ['--weftd-arg']),
    ['--hosts', '3', '--weftd-arg=--ip-masq', '--weftd-arg=--iface=eth0']);
});

test('arguments after -- are left alone, and a trailing --weftd-arg without value stays for parseArgs to reject', () => {
  assert.deepEqual(joinDashValues(['--', '--weftd-arg', '-x'], ['--weftd-arg']), ['--', '--weftd-arg', '-x']);
  assert.deepEqual(joinDashValues(['--weftd-arg'], ['--weftd-arg']), ['--weftd-arg']);
});

test('--runtime accepts namespaces, docker, podman and names them when given anything else', () => {
  assert.equal(parseRuntime('docker'), 'docker');
  assert.throws(() => parseRuntime('crio'), /--runtime crio: one of namespaces, docker, podman/);
});

/**
 * The lab's seam to real container runtimes (runtime.ts): which one a lab uses, the host as a
 * runtime sees it, and tearing all of them down before the namespaces go.
 */
import { join } from 'node:path';
import { describeError } from '../errors';
import { DockerRuntime } from './runtime-docker';
import { PodmanRuntime } from './runtime-podman';
import type { ContainerRuntime, RuntimeContext, RuntimeHost, RuntimeKind } from './runtime';
import type { HostRecord, LabState } from './state';

export { RUNTIMES, parseRuntime, type RuntimeKind } from './runtime';

/** null for the namespace stand-in (no runtime); throws naming the packages when tools are missing. */
export function createRuntime(kind: RuntimeKind | undefined): ContainerRuntime | null {
  switch (kind ?? 'namespaces') {
    case 'docker': return new DockerRuntime();
    case 'podman': return new PodmanRuntime();
    default: return null;
  }
}

export function runtimeHost(state: LabState, h: HostRecord): RuntimeHost {
  const dir = join(state.stateDir, h.name);
  return { name: h.name, index: h.index, ns: h.ns, containerNs: `${h.ns}-c1`, dir, subnetFile: join(dir, 'subnet.env') };
}

export function runtimeContext(state: LabState, ipPath: string, progress: (l: string) => void): RuntimeContext {
  return { labName: state.name, prefix: state.prefix, stateDir: state.stateDir, ipPath, progress };
}

/** Every host's runtime: containers, processes, mounts, cgroups. Returns what could not be removed. */
export async function teardownRuntimes(state: LabState, ipPath: string, progress: (l: string) => void = () => undefined): Promise<string[]> {
  if (!state.runtime || state.runtime === 'namespaces') return [];
  let rt: ContainerRuntime | null;
  try {
    rt = createRuntime(state.runtime as RuntimeKind);
  } catch (e) {
    return [`${state.runtime}: ${describeError(e)}`];
  }
  if (!rt) return [];
  const ctx = runtimeContext(state, ipPath, progress);
  const failures = await Promise.all(state.hosts.map((h) => rt.teardown(ctx, runtimeHost(state, h)).catch((e: unknown) => [describeError(e)])));
  return failures.flat();
}

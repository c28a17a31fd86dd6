/**
 * The one place that loads the native addon (addon/, built by `npm run build:addon`).
 * Typed declarations of every native function live here with their contracts.
 */
import * as path from 'node:path';

export interface NativeAddon {
  /**
   * Send one datagram `message` to the AF_UNIX socket `socketPath` (systemd's NOTIFY_SOCKET;
   * a leading '@' means the abstract namespace). Synchronous; throws Error with errno text.
   */
  sdNotify(socketPath: string, message: string): void;
}

let cached: NativeAddon | undefined;

export function loadNative(): NativeAddon {
  if (cached) return cached;
  // dist/src/native.js → <repo>/addon/build/Release/weft_native.node
  const file = path.resolve(__dirname, '..', '..', 'addon', 'build', 'Release', 'weft_native.node');
  try {
    cached = require(file) as NativeAddon;
  } catch (err) {
    throw new Error(`cannot load weft's native addon at ${file}: run "npm run build" (needs g++, make, python3 and npm_config_nodedir=/usr)`, { cause: err });
  }
  return cached;
}

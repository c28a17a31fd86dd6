#!/usr/bin/env node
/**
 * Patch and rebuild netlink@0.3.0's native binding so that a netlink socket error (ENOBUFS when
 * the receive buffer overflows) becomes an 'error' event instead of aborting the process.
 * See docs/netlink.md, "The receive-buffer overflow abort".
 *
 * The bug (src/binding.cc, PollHandler): on POLLERR libuv calls the poll callback with a
 * status, and the binding builds its error with `ErrnoException(env, -status, NULL, ...)`; the
 * NULL `syscall` makes `Napi::String::New(env, NULL)` throw a C++ Napi::Error inside a libuv
 * callback, where nothing catches it: std::terminate, SIGABRT. The fix names the syscall and
 * reports the socket's real pending error (SO_ERROR, i.e. ENOBUFS) instead of libuv's EBADF.
 *
 * Offline and idempotent: edits node_modules/netlink/src/binding.cc, runs node-gyp (npm's own
 * copy) against the Node headers in $npm_config_nodedir (default /usr when /usr/include/node
 * exists), and writes node_modules/netlink/.weft-patched, which NetlinkClient checks at start-up.
 * node-gyp-build then loads build/Release/ in preference to the package's prebuilds.
 *
 * Usage: node scripts/patch-netlink.js        (meant as the root package's "postinstall")
 * Exit status: 0 patched (or already patched, or another netlink version: nothing to do), 1 failed.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawnSync } = require('node:child_process');

const MARKER = '.weft-patched';
const BEFORE = '            auto error = ErrnoException(obj->Env(), -status, NULL, "error when polling socket");';
const AFTER = [
  '            // weft patch (scripts/patch-netlink.js): a NULL syscall name made ErrnoException throw',
  '            // a C++ exception here (process abort); report the socket\'s pending error instead.',
  '            int errnum = -status;',
  '            int soerr = 0;',
  '            socklen_t soerrlen = sizeof(soerr);',
  '            if (getsockopt(obj->fd, SOL_SOCKET, SO_ERROR, &soerr, &soerrlen) == 0 && soerr != 0)',
  '                errnum = soerr;',
  '            auto error = ErrnoException(obj->Env(), errnum, "poll", "error when polling socket");',
].join('\n');

function fail(msg) {
  process.stderr.write(`patch-netlink: ${msg}\n`);
  process.exit(1);
}

function findNodeGyp() {
  const candidates = [];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not a dependency: use npm's bundled copy
  }
  if (process.env.npm_execpath) {
    candidates.push(path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  candidates.push(path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push('/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js');
  candidates.push('/usr/share/nodejs/node-gyp/bin/node-gyp.js');
  return candidates.find((c) => fs.existsSync(c)) ?? null;
}

function main() {
  let dir;
  try {
    dir = path.dirname(require.resolve('netlink/package.json', { paths: [path.join(__dirname, '..')] }));
  } catch {
    fail('the netlink package is not installed (run npm ci first)');
  }
  const version = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
  if (version !== '0.3.0') {
    process.stdout.write(`patch-netlink: netlink ${version} is not 0.3.0; nothing to do (re-check docs/netlink.md)\n`);
    return;
  }
  const file = path.join(dir, 'src', 'binding.cc');
  let src = fs.readFileSync(file, 'utf8');
  if (!src.includes(AFTER)) {
    if (!src.includes(BEFORE)) fail(`${file} does not contain the line to patch; was it changed?`);
    src = src.replace(BEFORE, AFTER);
    fs.writeFileSync(file, src);
  }
  const hash = crypto.createHash('sha256').update(src).digest('hex');
  const marker = path.join(dir, MARKER);
  const built = path.join(dir, 'build', 'Release', 'netlink_binding.node');
  if (fs.existsSync(marker) && fs.readFileSync(marker, 'utf8').trim() === hash && fs.existsSync(built)) {
    process.stdout.write('patch-netlink: already patched and built\n');
    return;
  }

  const gyp = findNodeGyp();
  if (!gyp) fail('node-gyp not found (it ships with npm); cannot rebuild the binding');
  const nodedir = process.env.npm_config_nodedir || (fs.existsSync('/usr/include/node/node_api.h') ? '/usr' : '');
  const args = [gyp, 'rebuild', ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
  const r = spawnSync(process.execPath, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) {
    fail(`node-gyp rebuild failed (needs g++, make, python3 and the Node headers; set npm_config_nodedir):\n${r.stdout}\n${r.stderr}`);
  }
  if (!fs.existsSync(built)) fail(`node-gyp succeeded but ${built} is missing`);
  fs.writeFileSync(marker, `${hash}\n`);
  process.stdout.write(`patch-netlink: patched and rebuilt ${built}\n`);
}

main();

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isGone } from '../../src/netlink/client';
import { errnoOf, isErrno, NetlinkError, toNetlinkError } from '../../src/netlink/errors';
import { parseEvent } from '../../src/netlink/monitor';
import { WeftError } from '../../src/errors';

describe('netlink errors', () => {
  it('recovers the errno name from the package\'s plain "Request rejected" errors', () => {
    const e = toNetlinkError('replace route 10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink', new Error('Request rejected: EEXIST'));
    assert.ok(e instanceof WeftError);
    assert.equal(e.code, 'NETLINK');
    assert.equal(e.errno, 'EEXIST');
    assert.equal(e.message, 'replace route 10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink: EEXIST');
    assert.equal(e.retryable, false);
    assert.equal((e.cause as Error).message, 'Request rejected: EEXIST');
  });

  it('tells "already gone" from other failures', () => {
    assert.ok(isGone(new Error('Request rejected: ENOENT')));
    assert.ok(isGone(new NetlinkError('delete link flannel.1', 'ENODEV', null)));
    assert.ok(!isGone(new Error('Request rejected: EPERM')));
    assert.ok(isErrno(new Error('Request rejected: ENOENT'), 'ENOENT'));
  });

  it('marks timeouts, dead sockets and ENOBUFS as retryable', () => {
    assert.equal(toNetlinkError('x', new Error('Timeout has been reached')).retryable, true);
    assert.equal(new NetlinkError('x', 'ESOCKCLOSED', null).retryable, true);
    const enobufs = Object.assign(new Error('error when polling socket: no buffer space available'), { code: 'ENOBUFS' });
    assert.equal(errnoOf(enobufs), 'ENOBUFS');
    assert.equal(toNetlinkError('x', enobufs).retryable, true);
  });
});

describe('parseEvent', () => {
  it('ignores what it cannot parse', () => {
    assert.equal(parseEvent(16, Buffer.alloc(3)), null);
  });
});

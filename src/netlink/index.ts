/** The netlink adapter: the only code that imports the `netlink` package lives in this folder. */
export { NetlinkClient, isGone } from './client';
export type { NetlinkClientOptions, LinkRef, Netlink } from './client';
export { NetlinkError, isErrno, errnoOf } from './errors';
export { resolveUnderlay } from './underlay';
export type { UnderlayOptions, UnderlayNetlink } from './underlay';
export * from './types';
export { nativeBindingPatched } from './socket';

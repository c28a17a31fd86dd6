import type { IPv4Net, IPv6Net } from '../lease/types';

/** Backend section of the network config. `Type` is lower-cased; other keys are backend-specific. */
export interface BackendConfig {
  readonly type: string; // 'vxlan' | 'udp' | ...
  /** The Backend object as written, for the backend to decode its own options. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** Decoded vxlan backend options (flannel's names and defaults). */
export interface VxlanBackendConfig {
  readonly vni: number;          // VNI, default 1
  readonly port: number;         // Port, 0 = kernel default 8472
  readonly gbp: boolean;         // GBP
  readonly learning: boolean;    // Learning, default false
  readonly directRouting: boolean; // DirectRouting
  readonly mtu: number | null;   // MTU, null = underlay MTU - 50
}

/** A validated `<prefix>/config` document, with flannel's defaults filled in. */
export interface NetworkConfig {
  readonly enableIPv4: boolean;
  readonly enableIPv6: boolean;
  readonly network: IPv4Net | null;     // null only when IPv4 is off
  readonly subnetLen: number;
  readonly subnetMin: number;           // network address of the first allocatable subnet (uint32)
  readonly subnetMax: number;           // network address of the last allocatable subnet (uint32)
  readonly ipv6Network: IPv6Net | null;
  readonly ipv6SubnetLen: number;
  /** First/last allocatable IPv6 subnet (canonical text); null/absent when IPv6 is off. */
  readonly ipv6SubnetMin?: string | null;
  readonly ipv6SubnetMax?: string | null;
  readonly backend: BackendConfig;
  /** The JSON text it was parsed from, as stored in etcd. */
  readonly source: string;
}

/**
 * The `--etcd-*` flags shared by weftd and the weft CLI (a structural subset of DaemonOptions).
 * `etcdPrefix` is cleaned like Go's path.Join does, without a trailing slash, so that
 * `${etcdPrefix}/config` is the key flanneld reads for the same flag value.
 */
export interface EtcdFlags {
  readonly etcdEndpoints: readonly string[];
  readonly etcdPrefix: string;
  readonly etcdKeyfile: string | null;
  readonly etcdCertfile: string | null;
  readonly etcdCafile: string | null;
  readonly etcdUsername: string | null;
  readonly etcdPassword: string | null;
}

/**
 * weftd's options: flanneld's flags (compat §8) plus weft's own. Durations in seconds. The
 * `--etcd-*` ones (--etcd-endpoints comma-separated, --etcd-prefix default /coreos.com/network)
 * are EtcdFlags, declared once above.
 */
export interface DaemonOptions extends EtcdFlags {
  readonly iface: readonly string[];           // --iface, name or IP, repeatable
  readonly ifaceRegex: readonly string[];      // --iface-regex, repeatable
  readonly ifaceCanReach: string | null;
  readonly publicIp: string | null;
  readonly publicIpv6: string | null;
  readonly subnetFile: string;                 // default /run/flannel/subnet.env
  readonly subnetLeaseRenewMarginMinutes: number; // 1..1439, default 60
  readonly subnetLeaseTtlSeconds: number;      // --subnet-lease-ttl, default 24h (weft)
  readonly ipMasq: boolean;
  readonly iptablesResyncSeconds: number;      // default 5
  readonly iptablesForwardRules: boolean;      // default true
  readonly healthzIp: string;                  // default 0.0.0.0
  readonly healthzPort: number;                // 0 = off
  readonly healthzExposeDetails: boolean;      // weft: /metrics, /status to non-loopback clients (default false)
  readonly nativeJoin: boolean;                // weft: the native join path (addon/src/fastjoin.cc), default true
  readonly probeIntervalSeconds: number;       // weft: peer probe cycle while the health port is on, default 30; 0: on demand only
  readonly vxlanFallback: 'auto' | 'force' | 'off'; // weft: user-space VXLAN fallback
  /** weft: wireguard backend on wireguard-go when the kernel has no WireGuard (auto), always, never. Absent: auto. */
  readonly wireguardFallback?: 'auto' | 'force' | 'off';
  /** wireguard backend: private key file (flannel: /run/flannel/wgkey, $WIREGUARD_KEY_FILE). */
  readonly wireguardKeyFile?: string;
  /** weft: wireguard-go's UAPI socket directory (default /var/run/wireguard). */
  readonly wireguardRunDir?: string;
  readonly resyncIntervalSeconds: number;      // weft: periodic full reconcile, default 300 (DEFAULT_RESYNC_SECONDS)
}

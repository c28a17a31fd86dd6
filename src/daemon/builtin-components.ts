/**
 * The explicit list of components weftd runs beside its core loop, chosen from the options.
 * One line per component: what is built in stays visible here.
 */
import type { DaemonOptions } from '../config/types';
import { HealthComponent } from '../health/component';
import { IptablesManager } from '../iptables/manager';
import type { Logger } from '../log';
import { IdleGc } from './idle-gc';
import type { DaemonComponent } from './components';

export function createComponents(opts: DaemonOptions, log: Logger): DaemonComponent[] {
  const components: DaemonComponent[] = [];
  if (opts.healthzPort > 0) components.push(new HealthComponent({ ip: opts.healthzIp, port: opts.healthzPort, exposeDetails: opts.healthzExposeDetails, log }));
  if (opts.ipMasq || opts.iptablesForwardRules) components.push(new IptablesManager({ ipMasq: opts.ipMasq, forwardRules: opts.iptablesForwardRules, resyncSeconds: opts.iptablesResyncSeconds, log }));
  // The same for the IPv6Network with ip6tables; dormant unless the lease has an IPv6 subnet.
  if (opts.ipMasq || opts.iptablesForwardRules) components.push(new IptablesManager({ ipMasq: opts.ipMasq, forwardRules: opts.iptablesForwardRules, resyncSeconds: opts.iptablesResyncSeconds, log, family: 6 }));
  components.push(new IdleGc());
  return components;
}

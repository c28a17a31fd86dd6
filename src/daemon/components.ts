/**
 * The explicit list of components weftd runs beside its core loop, chosen from the options.
 * One line per component: what is built in stays visible here.
 */
import type { DaemonOptions } from '../config/types';
import type { Logger } from '../log';
import type { DaemonComponent } from './weftd';

export function createComponents(_opts: DaemonOptions, _log: Logger): DaemonComponent[] {
  const components: DaemonComponent[] = [];
  return components;
}

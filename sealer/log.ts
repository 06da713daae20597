import { componentLog } from '../shared/log.js';

/** The sealing service's log: the functions' JSON lines, with `component: 'sealer'`. */
export const sealerLog = componentLog('sealer');

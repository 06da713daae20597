import { option, parse } from '../shared/options.js';

/**
 * `npm start`'s own options (scripts/start.ts), apart from it so that they can be read without
 * starting anything (test/readme.test.ts checks that README.md lists them).
 */
export const startOptions = {
  sealerReplicas: option({
    env: 'KMS_SEALER_REPLICAS',
    default: 1,
    parse: parse.integer(1, 9),
    description:
      'npm start: how many sealing-service replicas to run; they unseal each other. One that exits after it started is started again; one that fails at its first start stops npm start.',
  }),
};

/** Wrong arguments: exit status 2, with the usage. */
export class UsageError extends Error {}

/** The command ran and said no (evidence refused, key does not open the share, file exists): exit status 1. */
export class Refused extends Error {}

/**
 * The command did part of its work and said on stderr what was done and what was not (rotate's
 * shares that could not be written): exit status 1, its message said as it is, last.
 */
export class Incomplete extends Error {}

/** The `tee-kms` exit statuses (README, "Command line"). */
export const EXIT = { ok: 0, refused: 1, usage: 2, unreachable: 3 } as const;

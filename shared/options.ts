import { readFileSync } from 'node:fs';
import { KmsError } from './errors.js';

/**
 * Declares configuration options once each: environment variable, default, parser, description.
 * Secret options may also come from a mounted file (`<ENV>_FILE`), as Kubernetes secrets are;
 * setting both `<ENV>` and `<ENV>_FILE` is refused.
 * Error messages name the variable, never a secret's value.
 */
export interface OptionSpec<T> {
  readonly env: string;
  readonly description: string;
  readonly parse: (raw: string, env: string) => T;
  /** Used when the variable is unset or empty. */
  readonly default: T;
  /** Also read from the file named by `<env>_FILE` (never with `<env>` too); never echoed in errors. */
  readonly secret?: boolean;
}

export type OptionSpecs = Record<string, OptionSpec<unknown>>;
export type OptionValues<S extends OptionSpecs> = { readonly [K in keyof S]: S[K] extends OptionSpec<infer T> ? T : never };

export function option<T>(spec: OptionSpec<T>): OptionSpec<T> {
  return spec;
}

export function loadOptions<S extends OptionSpecs>(specs: S, env: NodeJS.ProcessEnv = process.env): OptionValues<S> {
  const values: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(specs)) {
    const raw = readRaw(spec, env);
    if (raw === undefined) {
      values[key] = spec.default;
      continue;
    }
    try {
      values[key] = spec.parse(raw, spec.env);
    } catch (error) {
      if (error instanceof KmsError) throw error;
      throw new KmsError('CONFIG', `${spec.env} is invalid`);
    }
  }
  return values as OptionValues<S>;
}

/**
 * The option's text: the variable's value or, for a secret, the content of the file `<env>_FILE`
 * names. Both set is refused rather than one silently winning: whoever set the other one (a
 * mounted Secret, a leftover export) would believe it in use.
 */
function readRaw(spec: OptionSpec<unknown>, env: NodeJS.ProcessEnv): string | undefined {
  const direct = nonEmpty(env[spec.env]);
  if (!spec.secret) return direct;
  const fileEnv = `${spec.env}_FILE`;
  const file = nonEmpty(env[fileEnv]);
  if (direct !== undefined && file !== undefined) {
    throw new KmsError('CONFIG', `${spec.env} and ${fileEnv} are both set: set only one of them (the value, or the file holding it) and unset the other`);
  }
  if (file === undefined) return direct;
  try {
    // Mounted secrets commonly end with a newline; it is never part of the secret.
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch {
    throw new KmsError('CONFIG', `${fileEnv} names a file that cannot be read: ${file}`);
  }
}

/** An empty variable counts as unset, as for every option. */
function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

// Parsers shared by option declarations.

export const parse = {
  string: (raw: string) => raw,
  integer:
    (min: number, max: number) =>
    (raw: string, env: string): number => {
      if (!/^\d+$/.test(raw)) throw new KmsError('CONFIG', `${env} must be a whole number, got "${raw}"`);
      const value = Number(raw);
      if (value < min || value > max) throw new KmsError('CONFIG', `${env} must be between ${min} and ${max}, got ${value}`);
      return value;
    },
  boolean: (raw: string, env: string): boolean => {
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw new KmsError('CONFIG', `${env} must be true or false, got "${raw}"`);
  },
  oneOf:
    <T extends string>(...allowed: readonly T[]) =>
    (raw: string, env: string): T => {
      if ((allowed as readonly string[]).includes(raw)) return raw as T;
      throw new KmsError('CONFIG', `${env} must be one of ${allowed.join(', ')}, got "${raw}"`);
    },
  url: (raw: string, env: string): string => {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new KmsError('CONFIG', `${env} must be a URL, got "${raw}"`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new KmsError('CONFIG', `${env} must be an http(s) URL`);
    return raw.replace(/\/+$/, '');
  },
  /** Comma-separated URLs (at most `max`, none twice), each as `url` reads it. */
  urlList:
    (max: number) =>
    (raw: string, env: string): readonly string[] => {
      const urls = raw.split(',').map((item) => item.trim());
      if (urls.some((url) => url === '')) throw new KmsError('CONFIG', `${env} must be URLs separated by commas, with none empty`);
      if (urls.length > max) throw new KmsError('CONFIG', `${env} names more than ${max} URLs`);
      const parsed = urls.map((url) => parse.url(url, env));
      if (new Set(parsed).size !== parsed.length) throw new KmsError('CONFIG', `${env} names a URL twice`);
      return parsed;
    },
  /** A workload identity (init-data digest): 96 hex digits, lowercased. */
  identity: (raw: string, env: string): string => {
    const value = raw.trim().toLowerCase();
    if (!/^[0-9a-f]{96}$/.test(value)) throw new KmsError('CONFIG', `${env} must be 96 hex digits (a 48-byte init-data digest)`);
    return value;
  },
  /** A base64 256-bit key; the message never echoes the value. */
  key256: (raw: string, env: string): Buffer => {
    const trimmed = raw.trim();
    const key = Buffer.from(trimmed, 'base64');
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) || key.length !== 32) {
      throw new KmsError('CONFIG', `${env} must be a base64-encoded 256-bit (32-byte) key`);
    }
    return key;
  },
};

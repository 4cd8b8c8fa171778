// Turning untrusted runtime-config text into a typed RuntimeConfig, with errors that name the
// field path and the offending value so an operator can fix the ConfigMap without guessing.
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { RuntimeConfig } from './schema.ts';

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(source: string, problems: readonly string[]) {
    super(`invalid runtime config ${source}: ${problems.join('; ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** Parse and validate YAML (or JSON) text; throws ConfigError naming each bad field and value. */
export function parseRuntimeConfig(text: string, source = '(inline)'): RuntimeConfig {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    throw new ConfigError(source, [`not valid YAML: ${(error as Error).message.split('\n')[0]}`]);
  }
  return validateRuntimeConfig(raw, source);
}

export function validateRuntimeConfig(raw: unknown, source = '(inline)'): RuntimeConfig {
  const result = RuntimeConfig.safeParse(raw, { reportInput: true });
  if (result.success) return result.data;
  throw new ConfigError(source, result.error.issues.map((issue) => describeIssue(issue, raw)));
}

/** "listeners[0].port: expected ... (got 70000)". */
export function describeIssue(issue: z.core.$ZodIssue, raw: unknown): string {
  const path = formatPath(issue.path);
  const value = 'input' in issue && issue.input !== undefined ? issue.input : valueAt(raw, issue.path);
  const shown = value === undefined ? 'missing' : `got ${JSON.stringify(value)}`;
  return `${path || '(root)'}: ${issue.message} (${shown})`;
}

export function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((text, key) => (typeof key === 'number' ? `${text}[${key}]` : text ? `${text}.${String(key)}` : String(key)), '');
}

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let current: unknown = raw;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

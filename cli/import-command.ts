// `vmta import powermta FILE`: a PowerMTA configuration (with its includes) -> SmtpListener,
// RelayPolicy, VirtualMtaPool and Secret YAML on stdout or in a file, and on stderr a report of
// every directive: mapped, approximated (what differs) or refused (why).
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { objectName } from '../operator/api/fields.ts';
import { PmtaSyntaxError, readPowerMtaConfig } from '../operator/import/powermta-config.ts';
import { importPowerMta } from '../operator/import/powermta-import.ts';
import { formatReport } from '../operator/import/powermta-report.ts';

const USAGE = `usage: vmta import powermta FILE [--pool NAME] [-o FILE]

Reads a PowerMTA configuration (smtp-listener, <source>, <smtp-user>, <virtual-mta>,
<virtual-mta-pool>, <domain> blocks, relay-domain, relay-address, include ...) and writes the
equivalent vmta.dev resources and the Secrets they name as YAML. The report on stderr lists every
directive as mapped, approximated (and how it differs) or refused (and why). An open relay is never
imported: a broad always-allow-relaying source is refused.

options:
  --pool NAME      name of the VirtualMtaPool and prefix of the other objects (default outbound)
  -o, --output F   write the YAML to F instead of stdout
  -h, --help       show this help

exit codes: 0 imported; 2 bad usage or a configuration that cannot be read`;

export async function runImportCommand(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { pool: { type: 'string' }, output: { type: 'string', short: 'o' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (error) {
    return fail(`${(error as Error).message}\n\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const [format, file, ...extra] = positionals;
  if (format !== 'powermta' || file === undefined || extra.length > 0) return fail(`${format !== undefined && format !== 'powermta' ? `unknown format "${format}" (only powermta)` : 'needs: powermta FILE'}\n\n${USAGE}`);
  const poolName = values.pool ?? 'outbound';
  if (!objectName.safeParse(poolName).success) return fail(`--pool: "${poolName}" is not a lower-case name of letters, digits and "-"`);
  let result;
  try {
    result = importPowerMta(readPowerMtaConfig(file), { poolName, readKeyFile });
  } catch (error) {
    return fail(error instanceof PmtaSyntaxError ? error.message : `${file}: ${(error as Error).message}`);
  }
  const yaml = result.resources.map((resource) => stringify(resource, { lineWidth: 0 })).join('---\n');
  const header = `# Imported from ${path.basename(file)} by vmta import powermta; review the report before applying.\n`;
  if (values.output) await writeFile(values.output, header + yaml);
  else process.stdout.write(header + yaml);
  console.error(formatReport(result.report, path.dirname(path.resolve(file))));
}

/** A domain-key's PEM, when this machine can read the file; otherwise the report says to fill its Secret. */
function readKeyFile(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function fail(message: string): void {
  console.error(`vmta import: ${message}`);
  process.exitCode = 2;
}

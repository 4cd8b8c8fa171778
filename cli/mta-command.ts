// `vmta mta --config DIR`: runs the relay in the foreground until SIGTERM, SIGINT or SIGHUP, then shuts
// it down in order and exits 0. A bad initial config prints the field and value and exits 2.
import { parseArgs } from 'node:util';
import { ConfigError } from '../mta/config/parse.ts';
import { parseDuration } from '../mta/config/duration.ts';
import { describePortHolder } from '../mta/port-holder.ts';
import { Relay } from '../mta/relay.ts';
import { STOP_SIGNALS } from './exit-codes.ts';

const USAGE = `usage: vmta mta --config DIR [--shutdown-timeout 25s] [--config-poll-interval 5s]

Runs the relay with the runtime config DIR/relay.yaml (a mounted ConfigMap in Kubernetes).
Edits to the directory, and to the certificate, user and token files it names, are applied
without a restart; a version that does not validate is refused and the running one kept.
Relative paths in relay.yaml are resolved against DIR.

options:
  --config DIR                  directory holding relay.yaml (required)
  --shutdown-timeout DURATION   on SIGTERM/SIGINT/SIGHUP, how long open sessions may take to finish (default 25s)
  --config-poll-interval DURATION
                                fallback check of the config files when file watching misses a change (default 5s)
  -h, --help                    show this help`;

class UsageError extends Error {}

function durationOption(name: string, value: string | undefined, fallback: string): number {
  try {
    return parseDuration(value ?? fallback);
  } catch (error) {
    throw new UsageError(`--${name}: ${(error as Error).message}`);
  }
}

function parseOptions(argv: string[]): { configDir: string; shutdownTimeoutMs: number; configPollIntervalMs: number } | undefined {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' },
        'shutdown-timeout': { type: 'string' },
        'config-poll-interval': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return undefined;
  if (!values.config) throw new UsageError('--config DIR is required');
  return {
    configDir: values.config,
    shutdownTimeoutMs: durationOption('shutdown-timeout', values['shutdown-timeout'], '25s'),
    configPollIntervalMs: durationOption('config-poll-interval', values['config-poll-interval'], '5s'),
  };
}

export async function runMtaCommand(argv: string[]): Promise<void> {
  let options;
  try {
    options = parseOptions(argv);
  } catch (error) {
    console.error(`vmta mta: ${(error as Error).message}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (!options) {
    console.log(USAGE);
    return;
  }

  // Signal handlers come first: /readyz answers 200 before Relay.start() has returned, so a
  // SIGTERM may arrive while the relay is still starting; it is held and acted on once it is up.
  let relay: Relay | undefined;
  let pendingSignal: NodeJS.Signals | undefined;
  let signals = 0;
  const shutDown = (running: Relay, signal: NodeJS.Signals): void => {
    running.shutdown(signal).then(
      () => process.exit(0),
      (error: unknown) => {
        running.logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    signals += 1;
    if (signals > 1) {
      console.error(`vmta mta: second signal (${signal}): exiting without waiting for open sessions`);
      process.exit(1);
    }
    if (relay) shutDown(relay, signal);
    else pendingSignal = signal;
  };
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);

  try {
    relay = await Relay.start(options);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`vmta mta: ${(error as Error).message}`);
      process.exitCode = 2;
    } else if (portInUse(error)) {
      const { address, port } = portInUse(error)!;
      const holder = await describePortHolder(port);
      console.error(`vmta mta: cannot listen on ${address}:${port}: the port is in use${holder ? ` by ${holder}` : ''}; stop that process or give this relay another port`);
      process.exitCode = 1;
    } else {
      console.error(`vmta mta: cannot start the relay: ${(error as Error).stack ?? String(error)}`);
      process.exitCode = 1;
    }
    for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
    return;
  }
  if (pendingSignal) shutDown(relay, pendingSignal);
}

/** The address and port of an EADDRINUSE somewhere in the error's cause chain. */
function portInUse(error: unknown): { address: string; port: number } | undefined {
  for (let current = error as (NodeJS.ErrnoException & { address?: string; port?: number }) | undefined; current; current = current.cause as typeof current) {
    if (current.code === 'EADDRINUSE' && typeof current.port === 'number') return { address: current.address ?? '*', port: current.port };
  }
  return undefined;
}

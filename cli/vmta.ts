// The `vmta` command: one binary, one subcommand per role (relay, operator, local mode, queue
// control). A CliError from a subcommand is printed as one line and exits with its kind's code.
import { CliError, EXIT, EXIT_CODES_HELP } from './exit-codes.ts';

type Subcommand = (argv: string[]) => Promise<void>;

const subcommands: Record<string, { summary: string; load: () => Promise<Subcommand> }> = {
  mta: { summary: 'run the relay: vmta mta --config DIR', load: async () => (await import('./mta-command.ts')).runMtaCommand },
  local: { summary: 'run the resources of a folder as local relays: vmta local examples/', load: async () => (await import('./local-command.ts')).runLocalCommand },
  operator: { summary: 'run the Kubernetes operator: vmta operator --image IMAGE [--namespace NS] [--leader-elect]', load: async () => (await import('./operator-command.ts')).runOperatorCommand },
  import: { summary: 'turn a PowerMTA configuration into resources: vmta import powermta FILE', load: async () => (await import('./import-command.ts')).runImportCommand },
  queue: { summary: 'inspect and control delivery queues: vmta queue list|show|pause|resume|retry|bounce|delete', load: async () => (await import('./queue-command.ts')).runQueueCommand },
  suppression: { summary: 'list, add and remove suppressed recipient addresses: vmta suppression list|add|remove', load: async () => (await import('./suppression-command.ts')).runSuppressionCommand },
};

function usage(): string {
  const lines = Object.entries(subcommands).map(([name, { summary }]) => `  ${name.padEnd(10)} ${summary}`);
  return ['usage: vmta <command> [options]', '', 'commands:', ...lines, '', 'vmta <command> --help shows the options of a command.', '', EXIT_CODES_HELP].join('\n');
}

const [name, ...rest] = process.argv.slice(2);
if (name === '--help' || name === '-h' || name === 'help') {
  console.log(usage());
} else if (name === undefined) {
  console.error(usage());
  process.exitCode = EXIT.usage;
} else {
  const entry = subcommands[name];
  if (!entry) {
    console.error(`vmta: unknown command "${name}"\n\n${usage()}`);
    process.exitCode = EXIT.usage;
  } else {
    try {
      const run = await entry.load();
      await run(rest);
    } catch (error) {
      if (!(error instanceof CliError)) throw error;
      console.error(`vmta ${name}: ${error.message}`);
      process.exitCode = EXIT[error.kind];
    }
  }
}

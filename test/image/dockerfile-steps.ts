// Reads a Dockerfile into stages of instructions and replays a stage's WORKDIR, ENV, COPY and
// RUN steps on the local filesystem: a container path /x maps to <root>/x. No Docker engine
// runs here, so this is how the tests prove the image's build steps produce a working tree.
// Only the Dockerfile features this repository uses are supported; anything else throws.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';

export interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

export interface Stage {
  name: string | undefined;
  base: string;
  instructions: Instruction[];
}

export interface Dockerfile {
  /** ARG defaults declared before the first FROM, usable in FROM lines. */
  globalArgs: Map<string, string>;
  stages: Stage[];
}

/** Joins backslash-continued lines, drops comments and blank lines. */
export function parseInstructions(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let pending = '';
  let startLine = 0;
  text.split('\n').forEach((raw, index) => {
    const trimmed = raw.trim();
    if (pending === '' && (trimmed === '' || trimmed.startsWith('#'))) return;
    if (pending !== '' && trimmed.startsWith('#')) return;
    if (pending === '') startLine = index + 1;
    if (trimmed.endsWith('\\')) {
      pending += `${trimmed.slice(0, -1)} `;
      return;
    }
    const full = (pending + trimmed).trim();
    pending = '';
    const match = /^(\S+)\s*(.*)$/s.exec(full);
    if (!match) return;
    instructions.push({ keyword: match[1]!.toUpperCase(), args: match[2] ?? '', line: startLine });
  });
  return instructions;
}

function substitute(value: string, vars: Map<string, string>): string {
  return value.replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, braced: string | undefined, bare: string | undefined) => {
    const name = braced ?? bare ?? '';
    return vars.get(name) ?? whole;
  });
}

export function parseDockerfile(text: string): Dockerfile {
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const instruction of parseInstructions(text)) {
    if (instruction.keyword === 'FROM') {
      const match = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args);
      if (!match) throw new Error(`Dockerfile line ${instruction.line}: cannot read FROM ${instruction.args}`);
      stages.push({ base: substitute(match[1]!, globalArgs), name: match[2], instructions: [] });
    } else if (stages.length === 0) {
      if (instruction.keyword !== 'ARG') throw new Error(`Dockerfile line ${instruction.line}: ${instruction.keyword} before FROM`);
      const [name, value = ''] = instruction.args.split('=', 2);
      globalArgs.set(name!.trim(), value.trim());
    } else {
      stages.at(-1)!.instructions.push(instruction);
    }
  }
  return { globalArgs, stages };
}

/** JSON (exec) form when the arguments are a JSON array, otherwise split on whitespace. */
export function execFormArgs(args: string): string[] {
  if (args.trimStart().startsWith('[')) return JSON.parse(args) as string[];
  return args.split(/\s+/).filter((word) => word !== '');
}

/** LABEL key="value" pairs (quoted or bare values). */
export function parseLabels(args: string): Map<string, string> {
  const labels = new Map<string, string>();
  for (const match of args.matchAll(/([\w.\-/]+)=(?:"((?:[^"\\]|\\.)*)"|(\S+))/g)) {
    labels.set(match[1]!, match[2] ?? match[3] ?? '');
  }
  return labels;
}

export interface ReplayOptions {
  /** The build context: a directory with the repository's files. */
  context: string;
  /** Directory standing for the stage's container root filesystem. */
  root: string;
  /** Roots of earlier stages, by stage name, for COPY --from. */
  stageRoots: Map<string, string>;
  /** Environment RUN steps start from (PATH must lead to the Node that stands for the base image's). */
  env: NodeJS.ProcessEnv;
  /** Called before each RUN with the command, for the test's output. */
  onRun?: (command: string) => void;
}

function inRoot(root: string, containerPath: string): string {
  return join(root, containerPath);
}

function copyStep(args: string, workdir: string, options: ReplayOptions, line: number): void {
  const words = execFormArgs(args);
  let fromRoot: string | undefined;
  const paths: string[] = [];
  for (const word of words) {
    if (word.startsWith('--from=')) {
      const stage = word.slice('--from='.length);
      fromRoot = options.stageRoots.get(stage);
      if (!fromRoot) throw new Error(`Dockerfile line ${line}: COPY --from=${stage} names no earlier stage`);
    } else if (word.startsWith('--')) {
      throw new Error(`Dockerfile line ${line}: COPY option ${word} is not replayed by this test`);
    } else {
      paths.push(word);
    }
  }
  const destination = paths.pop();
  if (!destination || paths.length === 0) throw new Error(`Dockerfile line ${line}: COPY needs a source and a destination`);
  const destinationPath = destination.startsWith('/') ? destination : join(workdir, destination);
  const toDirectory = destination.endsWith('/') || destination === '.' || destination === './' || paths.length > 1;
  for (const source of paths) {
    const sourcePath = fromRoot ? inRoot(fromRoot, source) : join(options.context, source);
    const target = inRoot(options.root, destinationPath);
    if (statSync(sourcePath).isDirectory()) {
      // Docker copies a directory's contents, not the directory itself.
      mkdirSync(target, { recursive: true });
      cpSync(sourcePath, target, { recursive: true });
    } else {
      const file = toDirectory ? join(target, basename(source)) : target;
      mkdirSync(join(file, '..'), { recursive: true });
      cpSync(sourcePath, file);
    }
  }
}

/** Replays a stage's filesystem steps. Returns the final WORKDIR and ENV of the stage. */
export function replayStage(stage: Stage, options: ReplayOptions): { workdir: string; env: Map<string, string> } {
  let workdir = '/';
  const env = new Map<string, string>();
  const args = new Map<string, string>();
  for (const { keyword, args: text, line } of stage.instructions) {
    switch (keyword) {
      case 'WORKDIR':
        workdir = text.startsWith('/') ? text : join(workdir, text);
        mkdirSync(inRoot(options.root, workdir), { recursive: true });
        break;
      case 'ARG': {
        const [name, value = ''] = text.split('=', 2);
        args.set(name!.trim(), value.trim());
        break;
      }
      case 'ENV': {
        const [name, value = ''] = text.split('=', 2);
        env.set(name!.trim(), substitute(value.trim(), args));
        break;
      }
      case 'COPY':
        copyStep(text, workdir, options, line);
        break;
      case 'RUN': {
        if (text.trimStart().startsWith('[')) throw new Error(`Dockerfile line ${line}: exec-form RUN is not replayed by this test`);
        // The replay runs on the test machine, so only the project's own tools may run there.
        if (!/^(npm|node) /.test(text)) throw new Error(`Dockerfile line ${line}: RUN ${text} is not replayed by this test (only npm and node steps are)`);
        options.onRun?.(text);
        execFileSync('sh', ['-c', text], {
          cwd: inRoot(options.root, workdir),
          env: { ...options.env, ...Object.fromEntries(env) },
          stdio: ['ignore', 'pipe', 'pipe'],
          encoding: 'utf8',
        });
        break;
      }
      case 'LABEL':
      case 'USER':
      case 'EXPOSE':
      case 'ENTRYPOINT':
      case 'CMD':
        break;
      default:
        throw new Error(`Dockerfile line ${line}: ${keyword} is not replayed by this test; teach test/image/dockerfile-steps.ts`);
    }
  }
  return { workdir, env };
}

/** The value of the last instruction of a kind in a stage, e.g. USER or ENTRYPOINT. */
export function lastInstruction(stage: Stage, keyword: string): Instruction | undefined {
  return stage.instructions.filter((instruction) => instruction.keyword === keyword).at(-1);
}

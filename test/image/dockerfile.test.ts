// Proves the Dockerfile without a Docker engine: its build stage's COPY and RUN steps are
// replayed on a clean copy of the repository (the files git would hand to `docker build`), with
// a real `npm ci --omit=dev`, then the runtime stage's COPY --from steps; the produced /app tree
// must hold no devDependency and `vmta` must start in it under Node 24, as the base image's node.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { execFormArgs, lastInstruction, parseDockerfile, parseLabels, replayStage, type Stage } from './dockerfile-steps.ts';

const REPO_ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const dockerfile = parseDockerfile(readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8'));
const packageJson = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
const runtimeStage: Stage = dockerfile.stages.at(-1)!;

/** The files `docker build .` would see: tracked and untracked-but-not-ignored, minus .dockerignore. */
function cleanCopyOfRepository(destination: string): void {
  const listed = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: REPO_ROOT, encoding: 'utf8' });
  for (const path of listed.split('\0')) {
    if (path === '' || path === 'node_modules' || path.startsWith('node_modules/')) continue;
    const source = join(REPO_ROOT, path);
    if (!existsSync(source) || !statSync(source).isFile()) continue;
    mkdirSync(dirname(join(destination, path)), { recursive: true });
    cpSync(source, join(destination, path));
  }
}

describe('Dockerfile', () => {
  test('every stage builds FROM a pinned Node image whose version is the node devDependency', () => {
    const pinned = packageJson.devDependencies['node'];
    assert.ok(pinned, 'package.json pins Node in devDependencies.node');
    assert.ok(dockerfile.stages.length >= 2, 'multi-stage: a build stage and a runtime stage');
    for (const stage of dockerfile.stages) {
      assert.match(stage.base, /^node:\d+\.\d+\.\d+-[a-z]+-slim$/, `FROM ${stage.base} is a node:<x.y.z>-<debian>-slim tag`);
      assert.equal(stage.base.split(':')[1]!.split('-')[0], pinned, `FROM ${stage.base} runs the Node the tests run (${pinned})`);
    }
  });

  test('the runtime stage runs as a fixed non-root UID with the vmta entrypoint and OCI labels', () => {
    assert.equal(lastInstruction(runtimeStage, 'USER')?.args, '65532:65532');
    assert.deepEqual(execFormArgs(lastInstruction(runtimeStage, 'ENTRYPOINT')!.args), ['node', '/app/bin/vmta.js']);
    const labels = new Map(runtimeStage.instructions.filter((i) => i.keyword === 'LABEL').flatMap((i) => [...parseLabels(i.args)]));
    for (const key of ['title', 'description', 'licenses', 'source', 'version', 'revision']) {
      assert.ok(labels.get(`org.opencontainers.image.${key}`), `LABEL org.opencontainers.image.${key} is set`);
    }
    assert.equal(labels.get('org.opencontainers.image.licenses'), (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { license: string }).license);
  });

  test('.dockerignore keeps local state out of the build context but nothing the Dockerfile copies', () => {
    const ignored = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== '' && !line.startsWith('#'));
    for (const required of ['.git', 'node_modules', '.tools']) assert.ok(ignored.includes(required), `.dockerignore lists ${required}`);
    const copiedFromContext = dockerfile.stages
      .flatMap((stage) => stage.instructions)
      .filter((i) => i.keyword === 'COPY' && !i.args.includes('--from='))
      .flatMap((i) => execFormArgs(i.args).slice(0, -1));
    for (const source of copiedFromContext) {
      const top = source.replace(/\/$/, '').split('/')[0]!;
      assert.ok(!ignored.includes(top), `COPY ${source} is not excluded by .dockerignore`);
    }
  });
});

describe('image tree built by replaying the Dockerfile', { timeout: 600_000 }, () => {
  let workDir = '';
  let appDir = '';
  const runSteps: string[] = [];

  before(() => {
    workDir = mkdtempSync(join(tmpdir(), 'vmta-image-'));
    const context = join(workDir, 'context');
    cleanCopyOfRepository(context);
    const stageRoots = new Map<string, string>();
    // The Node running this test stands for the base image's node (checked against the tag above).
    const env = {
      ...process.env,
      PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}`,
      npm_config_prefer_offline: 'true',
      npm_config_update_notifier: 'false',
    };
    dockerfile.stages.forEach((stage, index) => {
      const root = join(workDir, `stage-${index}`);
      mkdirSync(root, { recursive: true });
      replayStage(stage, { context, root, stageRoots, env, onRun: (command) => runSteps.push(command) });
      if (stage.name) stageRoots.set(stage.name, root);
    });
    appDir = join(workDir, `stage-${dockerfile.stages.length - 1}`, 'app');
  });

  after(() => {
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  /** Runs the image's ENTRYPOINT with arguments, the container path /app mapped to the produced tree. */
  function vmta(args: string[]): { status: number | null; stdout: string; stderr: string } {
    const [program, script] = execFormArgs(lastInstruction(runtimeStage, 'ENTRYPOINT')!.args);
    assert.equal(program, 'node');
    const result = spawnSync(process.execPath, [join(appDir, '..', script!), ...args], {
      cwd: appDir,
      encoding: 'utf8',
      env: { PATH: process.env['PATH'] ?? '', NODE_ENV: 'production' },
      timeout: 60_000,
    });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  test('the build stage ran npm ci --omit=dev for real', (t) => {
    t.diagnostic(`RUN steps replayed: ${runSteps.join(' | ')}`);
    assert.ok(runSteps.some((command) => /\bnpm ci\b.*--omit=dev/.test(command)), 'a RUN step is npm ci --omit=dev');
    for (const name of Object.keys(packageJson.dependencies)) {
      assert.ok(existsSync(join(appDir, 'node_modules', name, 'package.json')), `dependency ${name} is installed`);
    }
  });

  test('the produced tree holds no devDependency', (t) => {
    // A devDependency that a production package also depends on (the lockfile does not mark it
    // dev) is rightly installed; every other one must be absent.
    const rootLock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean }>;
    };
    for (const name of Object.keys(packageJson.devDependencies)) {
      if (rootLock.packages[`node_modules/${name}`]?.dev) {
        assert.ok(!existsSync(join(appDir, 'node_modules', name)), `devDependency ${name} is absent from the image`);
      } else {
        t.diagnostic(`devDependency ${name} is also required by a production dependency, so the image has it`);
      }
    }
    assert.ok(!existsSync(join(appDir, 'node_modules', 'typescript')), 'typescript is absent from the image');
    const lock = JSON.parse(readFileSync(join(appDir, 'node_modules', '.package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean }>;
    };
    const devOnly = Object.entries(lock.packages).filter(([, entry]) => entry.dev).map(([path]) => path);
    assert.deepEqual(devOnly, [], 'no dev-only package is installed');
  });

  test('the produced tree holds no tests, tools or git metadata', () => {
    for (const absent of ['test', '.git', '.tools', 'charts', 'node_modules/.bin/tsc']) {
      assert.ok(!existsSync(join(appDir, absent)), `${absent} is not in the image`);
    }
  });

  test('vmta --help starts under Node 24 and lists its commands', () => {
    assert.equal(process.versions.node.split('.')[0], '24', 'the test runs the tree with Node 24, as the base image');
    const result = vmta(['--help']);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /usage: vmta <command>/);
  });

  /** Every subcommand must start in the produced tree: a missing module or dependency would ship a broken command. */
  function subcommandStarts(name: string): void {
    const result = vmta([name, '--help']);
    const output = `${result.stdout}${result.stderr}`;
    assert.equal(result.status, 0, `vmta ${name} --help exits 0\n${output}`);
    assert.match(output, /usage|--/i, `vmta ${name} --help prints its options`);
  }

  test('vmta mta --help starts in the produced tree', () => subcommandStarts('mta'));
  test('vmta operator --help starts in the produced tree', () => subcommandStarts('operator'));
});

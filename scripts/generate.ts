// `npm run generate`: write the generated files (CRDs and the chart's copy, golden renders, RBAC role) into the repository.
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CHART_CRDS_DIR, generatedFiles, REPOSITORY_ROOT } from './generated-files.ts';

const files = await generatedFiles();
// Generated folders hold only generated files: drop what is no longer produced.
for (const folder of ['crds', CHART_CRDS_DIR, path.join('test', 'fixtures', 'golden')]) {
  const absolute = path.join(REPOSITORY_ROOT, folder);
  await mkdir(absolute, { recursive: true });
  for (const name of await readdir(absolute)) {
    if (!files.has(path.join(folder, name))) await rm(path.join(absolute, name));
  }
}
for (const [relative, text] of files) {
  await writeFile(path.join(REPOSITORY_ROOT, relative), text);
  console.log(`wrote ${relative}`);
}

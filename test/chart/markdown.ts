// Reading the docs pages the way their tests need: fenced code blocks, the shell commands of
// ```sh blocks, and the rows of a markdown table that follows a heading.
export interface CodeBlock {
  language: string;
  body: string;
}

export function codeBlocks(markdown: string): CodeBlock[] {
  // A block inside a list item is indented like its fence; the indentation is not part of it.
  return [...markdown.matchAll(/^([ \t]*)```(\w+)\n([\s\S]*?)^[ \t]*```$/gm)].map((match) => ({
    language: match[2]!,
    body: match[3]!.replace(new RegExp(`^${match[1]!}`, 'gm'), ''),
  }));
}

/** Shell commands of the ```sh blocks, continuation lines joined, split into words. */
export function shellCommands(markdown: string): string[][] {
  return codeBlocks(markdown)
    .filter((block) => block.language === 'sh')
    .flatMap((block) => block.body.replace(/\\\n\s*/g, ' ').split('\n'))
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => line.split(/\s+/));
}

/** Files shown as ```yaml blocks whose first line is `# file: NAME`. */
export function namedYamlFiles(markdown: string): Map<string, string> {
  const files = new Map<string, string>();
  for (const block of codeBlocks(markdown).filter((b) => b.language === 'yaml')) {
    const name = /^# file: (\S+)\n/.exec(block.body)?.[1];
    if (name) files.set(name, block.body);
  }
  return files;
}

/** Cells of the body rows of the first table after the heading line `heading`, backticks removed. */
export function tableAfter(markdown: string, heading: string): string[][] {
  const start = markdown.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`no heading "${heading}"`);
  const lines = markdown.slice(start).split('\n');
  const first = lines.findIndex((line) => line.startsWith('|'));
  const rows: string[][] = [];
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(line.slice(1, -1).split('|').map((cell) => cell.trim().replaceAll('`', '')));
  }
  return rows;
}

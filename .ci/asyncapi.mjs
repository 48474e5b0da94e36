// Validates docs/asyncapi.yaml with the AsyncAPI parser (the library the AsyncAPI CLI and
// Studio use): prints every diagnostic and exits non-zero if any is an error.
import { readFileSync } from 'node:fs';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, 'utf8'), { source: path });
const severity = ['error', 'warning', 'information', 'hint'];
for (const d of diagnostics) {
  console.log(`${severity[d.severity] ?? d.severity} ${d.code} at ${d.path.join('.')}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
if (!document || errors.length > 0) {
  console.error(`${path}: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(
  `${path}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ` +
    `${document.operations().length} operations, ${document.components().messages().length} messages`,
);
